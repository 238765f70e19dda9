#!/usr/bin/env bash
# The guide's step 4 on a real GPU node, through containerd's CRI API, with
# CDI and without the NVIDIA container toolkit (issue 15). What
# docs/real-hardware.md reports under "CDI" was printed by this script on the
# team's H200 node (the device tool), run from the repository root extracted
# from .devcarry/repo.tar.gz (tests/real-hardware/cdi-carry.sh made it):
#
#   tar -xzf .devcarry/repo.tar.gz -C /tmp && CARRY=$PWD/.devcarry bash /tmp/repo/tests/real-hardware/cdi-run.sh
#
# 1. site.yml (local connection) configures containerd 2.1.9 (carried, not
#    installed) and writes the CDI spec with nvidia_cdi_spec; a second run
#    changes nothing.
# 2. containerd starts with the written config; over CRI (tests/cri-client),
#    containers with CDI devices nvidia.com/gpu=0, =GPU-<uuid>, =all run
#    nvidia-smi with plain runc; one without a CDI device sees no GPU.
# 3. A container sent to runtime handler nvidia (and one to the default
#    runtime) goes through the configured BinaryName, a STAND-IN: the toolkit
#    cannot be installed there (no network), so /usr/bin/nvidia-container-runtime
#    is a script that records its call and runs runc.
set -uo pipefail
CARRY=${CARRY:-$PWD/.devcarry}
OUT=${OUT:-/tmp/real-hardware}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
cd "$REPO"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/whl/*.whl
export PYTHONPATH=/tmp/site
BIN=/opt/cdi-run/bin
mkdir -p "$BIN" && tar -xzf "$CARRY/containerd.tar.gz" -C "$BIN"
export PATH=$BIN:$PATH
STANDIN_LOG=/var/log/nvidia-runtime-stand-in.log
SOCK=/run/containerd/containerd.sock
ansible_playbook() { python3 -c 'import sys; from ansible.cli.playbook import main; sys.argv[0] = "ansible-playbook"; sys.exit(main())' "$@"; }
section() { printf '\n### %s\n\n```\n' "$1"; }
end() { printf '```\n'; }
cri() { "$REPO/bin/cri-client" --socket "$SOCK" run --image docker.io/library/cdi-test:1 --timeout 60 "$@"; echo " (exit status $?)"; }
calls() { wc -l < "$STANDIN_LOG" 2>/dev/null || echo 0; }
{
section "The node"
uname -srm; grep PRETTY_NAME /etc/os-release
echo "init: $(ps -o comm= -p 1); systemd running: $([ -d /run/systemd/system ] && echo yes || echo no)"
echo "cgroup: $(stat -fc %T /sys/fs/cgroup); /var/lib on $(stat -fc %T /var/lib)"
ls -l /dev/nvidia* 2>&1
echo "driver files:"; ls /usr/local/nvidia/lib64 | grep -c 'so' ; ls -l /usr/local/nvidia/bin/nvidia-smi 2>&1
echo "NVIDIA container toolkit:"; for t in nvidia-ctk nvidia-container-runtime nvidia-container-runtime-hook nvidia-cdi-hook; do command -v $t || echo "  $t: not installed"; done
containerd --version; runc --version | head -1
echo "capabilities: $(grep CapEff /proc/self/status)"
if (echo -998 > /proc/self/oom_score_adj) 2>/dev/null; then OOM_OK=1; echo "a negative oom_score_adj is allowed";
else OOM_OK=0; echo "a negative oom_score_adj is refused (Permission denied): no CAP_SYS_RESOURCE here"; fi
end

cat > /usr/bin/nvidia-container-runtime <<'EOF'
#!/bin/sh
# STAND-IN for nvidia-container-runtime, written by tests/real-hardware/cdi-run.sh:
# the NVIDIA container toolkit is not installed on this node. It records each
# call, then runs runc, as the real runtime does after its own work.
case "$1" in --version|-v) echo "nvidia-container-runtime STAND-IN (cdi-run.sh); runs runc"; exit 0 ;; esac
echo "$(date -u +%T) nvidia-container-runtime stand-in: $*" >> /var/log/nvidia-runtime-stand-in.log
runc "$@"; rc=$?
# On a failure, keep runc's log (the shim removes it with the bundle).
prev=; for a in "$@"; do [ "$prev" = --log ] && [ $rc -ne 0 ] && grep -v '"level":"debug"' "$a" >> /var/log/nvidia-runtime-stand-in.log; prev=$a; done
exit $rc
EOF
chmod 755 /usr/bin/nvidia-container-runtime
: > "$STANDIN_LOG"
EXTRA=(-e install_os_packages=false -e containerd_install=false -e nvidia_container_toolkit_install=false
       -e "ansible_python_interpreter=$(command -v python3)")
[ -d /run/systemd/system ] || EXTRA+=(-e containerd_systemd_cgroup=false)
# A kernel without overlayfs gets the native snapshotter (said in the output).
grep -qw overlay /proc/filesystems || EXTRA+=(-e '{"containerd_template_vars": {"snapshotter": "native"}}')
if [ -d /run/systemd/system ]; then
    printf '[Service]\nEnvironment=PATH=%s:/usr/sbin:/usr/bin:/sbin:/bin\nExecStart=%s/containerd\nDelegate=yes\nKillMode=process\n' "$BIN" "$BIN" \
        > /etc/systemd/system/containerd.service && systemctl daemon-reload
fi

section "ansible-playbook -i localhost, -c local playbooks/site.yml ${EXTRA[*]}"
ansible_playbook -i localhost, -c local playbooks/site.yml "${EXTRA[@]}" 2>&1 | grep -E '^(TASK|ok|changed|skipping|fatal|failed|RUNNING|PLAY)|msg' 
echo "exit status ${PIPESTATUS[0]}"
end
section "Second run: the recap"
ansible_playbook -i localhost, -c local playbooks/site.yml "${EXTRA[@]}" 2>&1 | grep -A2 'PLAY RECAP'
end
section "The CDI spec written: /etc/cdi/nvidia.yaml"
cat /etc/cdi/nvidia.yaml; cp /etc/cdi/nvidia.yaml "$OUT/nvidia.yaml"
end
section "containerd's config (the runtimes)"
cp /etc/containerd/config.toml "$OUT/config.toml"
grep -nE 'version|default_runtime_name|runtimes\.|BinaryName|SystemdCgroup|sandbox|cdi|snapshotter' /etc/containerd/config.toml
echo "--- containerd config dump (what 2.1.9 reads, CDI settings):"
containerd --config /etc/containerd/config.toml config dump 2>&1 | grep -E 'enable_cdi|cdi_spec_dirs'
end

section "containerd 2.1.9 started with that config"
CONFIG=/etc/containerd/config.toml
if [ "$OOM_OK" = 0 ]; then
    # containerd gives pod sandboxes oom_score_adj -998, which this node's
    # kernel refuses (no CAP_SYS_RESOURCE: runc dies with "failed to update
    # /proc/self/oom_score_adj"). containerd's own answer for such hosts is
    # restrict_oom_score_adj; it goes into a copy, the written file stays.
    mkdir -p /run/cdi-run && CONFIG=/run/cdi-run/config.toml
    sed 's|^\[plugins."io.containerd.cri.v1.runtime"\]$|&\n  restrict_oom_score_adj = true|' /etc/containerd/config.toml > "$CONFIG"
    echo "started with a copy that adds restrict_oom_score_adj = true; diff:"; diff /etc/containerd/config.toml "$CONFIG"
fi
if ! [ -S "$SOCK" ]; then
    setsid containerd --config "$CONFIG" > "$OUT/containerd.log" 2>&1 < /dev/null &
    echo "started, pid $!"
fi
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.2; done
ctr --address "$SOCK" version | grep -A1 Server
ctr --address "$SOCK" -n k8s.io images import "$CARRY/image.tar"
sandbox=$(sed -n 's/^ *sandbox = "\(.*\)"/\1/p' /etc/containerd/config.toml | head -1)
ctr --address "$SOCK" -n k8s.io images tag docker.io/library/cdi-test:1 "${sandbox:-registry.k8s.io/pause:3.10}"
"$REPO/bin/cri-client" --socket "$SOCK" version
end

uuid=$(sed -n 's/.*name: "\(GPU-[^"]*\)".*/\1/p' /etc/cdi/nvidia.yaml | head -1)
for device in nvidia.com/gpu=0 "nvidia.com/gpu=$uuid" nvidia.com/gpu=all; do
    section "CRI: runtime handler runc (plain runc), CDI device $device: nvidia-smi -L"
    before=$(calls)
    cri --runtime-handler runc --cdi-device "$device" -- nvidia-smi -L
    echo "stand-in calls during this container: $(( $(calls) - before ))"
    end
done
section "CRI: runtime handler runc, the CDI annotation (cdi.k8s.io/...) instead of the field: nvidia-smi"
cri --runtime-handler runc --cdi-annotation nvidia.com/gpu=0 -- sh -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; ls /dev/nvidia*'
end
section "CRI: runtime handler runc, no CDI device (the control): no GPU in the container"
cri --runtime-handler runc -- sh -c 'ls /dev/nvidia* 2>&1; nvidia-smi -L'
end
section "CRI: runtime handler nvidia: through the configured BinaryName (the stand-in)"
before=$(calls)
cri --runtime-handler nvidia -- sh -c 'echo ran under the nvidia handler'
echo "stand-in calls during this pod: $(( $(calls) - before ))"
end
section "CRI: no runtime handler (containerd's default, nvidia on a GPU node), CDI device nvidia.com/gpu=0"
before=$(calls)
cri --cdi-device nvidia.com/gpu=0 -- nvidia-smi -L
echo "stand-in calls during this pod: $(( $(calls) - before ))"
end
section "The stand-in's record"
cat "$STANDIN_LOG"
end
section "One nvidia_cdi_spec run on this node (writes nothing: the spec is current): 200 runs"
echo '{"path": "/etc/cdi/nvidia.yaml"}' > /tmp/cdi-args.json
python3 - <<'PY'
import statistics, subprocess, time
times = []
for _ in range(200):
    t = time.perf_counter()
    out = subprocess.run(["dist/x86_64/nvidia_cdi_spec", "/tmp/cdi-args.json"], capture_output=True, check=True)
    times.append((time.perf_counter() - t) * 1000)
print(f"median {statistics.median(times):.2f} ms, p90 {sorted(times)[179]:.2f} ms (fork/exec included); last: {out.stdout[:160]!r}")
PY
/usr/bin/time -f "peak RSS %M KiB" dist/x86_64/nvidia_cdi_spec /tmp/cdi-args.json > /dev/null
end
} 2>&1 | tee "$OUT/cdi-run.txt"
tail -20 "$OUT/containerd.log" > "$OUT/containerd-tail.log" 2>/dev/null || true
