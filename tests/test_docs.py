"""Each module's documentation (library/<module>.yml, read by `ansible-doc`)
describes exactly the options the Rust code accepts: same names, types,
defaults, choices and required flags. The code's side comes from the built
binary itself (`<binary> --argument-spec` prints its argument spec)."""
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_DOC = REPO / ".venv/bin/ansible-doc"
MODULES = ["nvidia_gpu_facts", "containerd_runtime_config", "nvidia_driver_install", "nvidia_cdi_spec"]


def code_spec(module):
    binary = REPO / "dist/x86_64" / module
    assert binary.exists(), f"{binary} is missing: run `make build`"
    out = subprocess.run([str(binary), "--argument-spec"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def documented(module):
    out = subprocess.run(
        [str(ANSIBLE_DOC), "--json", "-t", "module", module],
        capture_output=True, text=True, cwd=REPO, check=True,
    )
    return json.loads(out.stdout)[module]


@pytest.mark.parametrize("module", MODULES)
def test_documented_options_match_the_argument_spec(module):
    spec = code_spec(module)["options"]
    doc = documented(module)["doc"]["options"]
    assert sorted(doc) == sorted(spec), "options documented vs accepted"
    for name, want in spec.items():
        got = doc[name]
        assert got.get("type", "str") == want["type"], f"{module}.{name}: type"
        assert bool(got.get("required", False)) == want["required"], f"{module}.{name}: required"
        assert got.get("default") == want.get("default"), f"{module}.{name}: default"
        assert sorted(map(str, got.get("choices", []))) == sorted(want.get("choices", [])), f"{module}.{name}: choices"
        assert bool(got.get("no_log", False)) == bool(want.get("no_log", False)), f"{module}.{name}: no_log"
        assert got.get("description"), f"{module}.{name}: no description"


@pytest.mark.parametrize("module", MODULES)
def test_documentation_has_examples_and_return_values(module):
    doc = documented(module)
    assert doc["examples"].strip(), "EXAMPLES"
    assert doc["return"], "RETURN"
    assert "msg" in doc["return"] or "changed" in doc["return"] or "ansible_facts" in doc["return"]
    assert doc["doc"]["attributes"]["check_mode"]["support"] in ("full", "partial")


def test_facts_module_documents_every_fact_it_returns(tmp_path):
    binary = REPO / "dist/x86_64/nvidia_gpu_facts"
    args = tmp_path / "args.json"
    # decide_gpu_mode adds the decision's facts: every fact the module can return.
    args.write_text(json.dumps({"root": str(REPO / "tests/fixtures/h200-vm"), "decide_gpu_mode": True}))
    facts = json.loads(subprocess.run([str(binary), str(args)], capture_output=True, text=True).stdout)["ansible_facts"]
    documented_facts = documented("nvidia_gpu_facts")["return"]["ansible_facts"]["contains"]
    assert sorted(documented_facts) == sorted(facts)
    gpu_fields = documented_facts["nvidia_gpus"]["contains"]
    assert sorted(gpu_fields) == sorted(facts["nvidia_gpus"][0])
