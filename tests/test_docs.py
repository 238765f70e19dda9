"""Each module's documentation (library/<module>.yml, read by `ansible-doc`)
describes exactly the options the Rust code accepts: same names, types,
defaults, choices and required flags, and the same argument relationships
(required_if, mutually_exclusive, ...). The code's side comes from the built
binary itself (`<binary> --argument-spec` prints its argument spec).

ansible-doc has no key for relationships, so a sidecar shows each one as a
`notes` entry with a fixed sentence (`relationship_notes` writes it), and a
`required_if` also in the required option's description ("Required when
I(state=configure)."), where a reader of the option table looks."""
import json
import re
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


def _opts(names):
    names = [f"I({n})" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _condition(option, value):
    # JSON spelling (true, not True): the YAML a task would be written with.
    return f"I({option}={json.dumps(value) if not isinstance(value, str) else value})"


def relationship_notes(spec):
    """The `notes` sentence for each relationship of an --argument-spec JSON."""
    notes = []
    for group in spec.get("mutually_exclusive", []):
        notes.append(f"{_opts(group)} are mutually exclusive.")
    for group in spec.get("required_together", []):
        notes.append(f"{_opts(group)} are required together.")
    for group in spec.get("required_one_of", []):
        notes.append(f"One of {', '.join(f'I({n})' for n in group)} is required.")
    for rule in spec.get("required_if", []):
        option, value, requires = rule[:3]
        if len(rule) > 3 and rule[3]:
            notes.append(f"One of {', '.join(f'I({n})' for n in requires)} is required when {_condition(option, value)}.")
        else:
            verb = "is" if len(requires) == 1 else "are"
            notes.append(f"{_opts(requires)} {verb} required when {_condition(option, value)}.")
    for option, requires in spec.get("required_by", {}).items():
        notes.append(f"I({option}) requires {_opts(requires)}.")
    return notes


def option_requirements(spec):
    """{option: sentence} its description must hold: each option a required_if
    needs (all of them, not one-of) says when it is required."""
    wanted = {}
    for rule in spec.get("required_if", []):
        option, value, requires = rule[:3]
        if len(rule) > 3 and rule[3]:
            continue
        for name in requires:
            wanted.setdefault(name, []).append(f"Required when {_condition(option, value)}.")
    return wanted


# A note that reads like a relationship sentence but matches none in the code
# is stale: the code dropped or changed the rule.
RELATIONSHIP_NOTE = re.compile(
    r"are mutually exclusive\.$|are required together\.$|^One of I\(.*\) is required\.$"
    r"| required when I\(|^I\([a-z_]+\) requires I\("
)


def relationship_problems(spec, doc):
    """What the sidecar `doc` (ansible-doc's "doc" dict) lacks or has too much,
    as messages that say what to paste where."""
    notes = [" ".join(n.split()) for n in doc.get("notes", [])]
    wanted = relationship_notes(spec)
    problems = [
        f"notes: add the entry {w!r} (the code declares this relationship; ansible-doc has no key for it)"
        for w in wanted if w not in notes
    ]
    problems += [
        f"notes: {n!r} describes a relationship the code does not declare: update it to the code's "
        f"(--argument-spec) or remove it"
        for n in notes if RELATIONSHIP_NOTE.search(n) and n not in wanted
    ]
    for name, sentences in option_requirements(spec).items():
        description = doc["options"].get(name, {}).get("description", "")
        if isinstance(description, list):
            description = " ".join(description)
        description = " ".join(description.split())
        problems += [
            f"options.{name}.description: add {s!r}" for s in sentences if s not in description
        ]
    return problems


@pytest.mark.parametrize("module", MODULES)
def test_documented_relationships_match_the_argument_spec(module):
    spec = code_spec(module)
    # The binary states each kind, empty or not: a missing key would pass below unseen.
    assert {"mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by"} <= set(spec)
    problems = relationship_problems(spec, documented(module)["doc"])
    assert not problems, f"library/{module}.yml:\n  " + "\n  ".join(problems)


SAMPLE_SPEC = {
    "mutually_exclusive": [["template", "template_src"]],
    "required_together": [["key", "cert"]],
    "required_one_of": [["a", "b"]],
    "required_if": [["state", "configure", ["nvidia_runtime"]], ["state", "absent", ["owner", "group"], True],
                    ["force", True, ["x", "y"]]],
    "required_by": {"backup_dir": ["backup"]},
}


def test_relationship_sentences_are_the_documented_form():
    assert relationship_notes(SAMPLE_SPEC) == [
        "I(template) and I(template_src) are mutually exclusive.",
        "I(key) and I(cert) are required together.",
        "One of I(a), I(b) is required.",
        "I(nvidia_runtime) is required when I(state=configure).",
        "One of I(owner), I(group) is required when I(state=absent).",
        "I(x) and I(y) are required when I(force=true).",
        "I(backup_dir) requires I(backup).",
    ]


def test_a_relationship_missing_from_the_sidecar_is_named_with_the_text_to_add():
    doc = {"options": {"nvidia_runtime": {"description": ["Adds the runtime."]}},
           "notes": ["A static binary module (Rust)."]}
    spec = {"required_if": [["state", "configure", ["nvidia_runtime"]]]}
    assert relationship_problems(spec, doc) == [
        "notes: add the entry 'I(nvidia_runtime) is required when I(state=configure).' "
        "(the code declares this relationship; ansible-doc has no key for it)",
        "options.nvidia_runtime.description: add 'Required when I(state=configure).'",
    ]
    doc["notes"].append("I(nvidia_runtime) is required\n when I(state=configure).")
    doc["options"]["nvidia_runtime"]["description"].append("Required when I(state=configure).")
    assert relationship_problems(spec, doc) == []


def test_a_stale_relationship_note_is_refused():
    doc = {"options": {}, "notes": ["I(a) and I(b) are mutually exclusive."]}
    problems = relationship_problems({}, doc)
    assert len(problems) == 1 and "the code does not declare" in problems[0]
