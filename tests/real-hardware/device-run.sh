#!/usr/bin/env bash
# What docs/real-hardware.md reports was printed by this script, run on a real
# GPU node (the team's H200 machine) from the repository root, after
# `make build` here. It needs Python 3 and ansible-core there (carried as
# wheels in .whl/ when the node has no package index); it writes into $OUT.
# With .containerd/containerd.gz (a gzipped containerd binary, e.g. Debian's:
# `gzip -c /usr/bin/containerd > .containerd/containerd.gz`) it puts that on
# PATH, so that the node can answer `containerd --version` and validate.
set -uo pipefail
OUT=${OUT:-/tmp/real-hardware}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
ansible() { python3 -c 'import sys; from ansible.cli.adhoc import main; sys.argv[0] = "ansible"; sys.exit(main())' "$@"; }
ansible_playbook() { python3 -c 'import sys; from ansible.cli.playbook import main; sys.argv[0] = "ansible-playbook"; sys.exit(main())' "$@"; }
section() { printf '\n### %s\n\n```\n' "$1"; }
end() { printf '```\n'; }
{
section "The node"
uname -srm; grep PRETTY_NAME /etc/os-release
command -v lspci || echo "lspci: not installed"
end
section "nvidia-smi"
nvidia-smi --query-gpu=name,pci.bus_id,driver_version,memory.total,mig.mode.current,compute_cap --format=csv,noheader
nvidia-smi -L
end
section "nvidia_gpu_facts, run directly (args file {})"
echo '{}' > /tmp/facts-args.json
dist/x86_64/nvidia_gpu_facts /tmp/facts-args.json | python3 -m json.tool
end
section "ansible -i localhost, -c local -m nvidia_gpu_facts all"
ansible -i localhost, -c local -m nvidia_gpu_facts all
end
section "ansible ... -m nvidia_driver_install -a version=580.159.04 (the loaded driver)"
ansible -i localhost, -c local -m nvidia_driver_install -a version=580.159.04 all
end
section "ansible ... -m nvidia_driver_install -a 'version=590.44.01 installer=/root/NVIDIA-Linux-x86_64-590.44.01.run' --check"
ansible -i localhost, -c local -m nvidia_driver_install -a 'version=590.44.01 installer=/root/NVIDIA-Linux-x86_64-590.44.01.run' --check all
end
section "One nvidia_gpu_facts run on this node: wall time and peak memory over 300 runs"
python3 - <<'PY'
import resource, statistics, subprocess, time
times = []
for _ in range(300):
    t = time.perf_counter()
    subprocess.run(["dist/x86_64/nvidia_gpu_facts", "/tmp/facts-args.json"], stdout=subprocess.DEVNULL, check=True)
    times.append((time.perf_counter() - t) * 1000)
print(f"median {statistics.median(times):.2f} ms, p90 {sorted(times)[269]:.2f} ms (including Python's fork/exec)")
PY
# Peak RSS from GNU time (Python's own pages would count if it measured).
/usr/bin/time -f "peak RSS %M KiB" dist/x86_64/nvidia_gpu_facts /tmp/facts-args.json >/dev/null
end
if [ -f .containerd/containerd.gz ]; then
section "containerd on this node: Debian 12's containerd binary, carried over (the node has none)"
mkdir -p /tmp/ctd && gunzip -c .containerd/containerd.gz > /tmp/ctd/containerd && chmod 755 /tmp/ctd/containerd
export PATH=/tmp/ctd:$PATH
containerd --version
end
fi
section "ansible-playbook -i localhost, -c local site.yml --check --diff (no package installs)"
ansible_playbook -i localhost, -c local site.yml --check --diff -e install_os_packages=false -e containerd_install=false
end
section "ansible-playbook ... site.yml --tags container, for real, config under /tmp (no NVIDIA container toolkit here)"
ansible_playbook -i localhost, -c local site.yml --tags container -e containerd_install=false \
    -e containerd_config_path=/tmp/gpu-node-run/config.toml -e containerd_drop_in_path=/tmp/gpu-node-run/conf.d/99-nvidia.toml
echo "exit status $?; files under /tmp/gpu-node-run afterwards:"; find /tmp/gpu-node-run 2>&1
end
section "ansible-playbook ... site.yml --tags gpu (writes the local facts file), then playbooks/verify.yml"
ansible_playbook -i localhost, -c local site.yml --tags gpu -e install_os_packages=false
ansible_playbook -i localhost, -c local playbooks/verify.yml
end
} 2>&1 | tee "$OUT/real-hardware.txt"
