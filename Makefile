# GPU node setup: Rust Ansible modules + roles. `make demo`, `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

MODULES   := nvidia_gpu_facts containerd_runtime_config nvidia_driver_install nvidia_cdi_spec
# Rust target triple -> the architecture name `uname -m` gives on the node.
ARCHES    := x86_64 aarch64
TARGET_x86_64  := x86_64-unknown-linux-musl
TARGET_aarch64 := aarch64-unknown-linux-musl
VENV      := .venv
PYTHON    := $(VENV)/bin/python
# Every ansible-core release the controller is tested with, one venv each
# (`make venvs`): .venvs/ansible-core-<X.Y>/. The file is the one list of them.
ANSIBLE_CORE_RELEASES := $(shell grep -E '^[0-9]' tests/ansible-core-releases.txt)
# The Python those venvs run on: one that every release above supports.
VENVS_PYTHON ?= python3

.PHONY: all build test test-rust test-ansible lint clean demo bench deps deps-python deps-system venvs deps-containerd cri-client
all: build

## build: static musl binaries of every module, per architecture, into dist/<arch>/
build:
	@for arch in $(ARCHES); do \
	  target=$$( [ $$arch = x86_64 ] && echo $(TARGET_x86_64) || echo $(TARGET_aarch64) ); \
	  if ! rustup target list --installed 2>/dev/null | grep -qx $$target; then \
	    echo "build: installing the Rust target $$target"; \
	    rustup target add $$target >/dev/null 2>&1 || { echo "build: WARNING: cannot install $$target; $$arch modules are NOT built"; continue; }; \
	  fi; \
	  cargo build --quiet --release --locked --target $$target --bins; \
	  mkdir -p dist/$$arch; \
	  for m in $(MODULES); do \
	    [ -f target/$$target/release/$$m ] || continue; \
	    install -m 0755 target/$$target/release/$$m dist/$$arch/$$m; \
	  done; \
	done
	@echo "module binaries (bytes, static, stripped):"
	@for f in dist/*/*; do \
	  printf '  %-48s %8d  %s\n' "$$f" "$$(stat -c %s $$f)" "$$(file -b $$f | sed -E "s/, BuildID[^,]*//")"; \
	done

## cri-client: the tests' CRI v1 client (tests/cri-client, its own workspace): talks to
## containerd as the kubelet does; built for the tests only, never copied into dist/
CRI_CLIENT := tests/cri-client/target/x86_64-unknown-linux-musl/release/cri-client
cri-client: deps-system
	cargo build --quiet --release --locked --manifest-path tests/cri-client/Cargo.toml --target x86_64-unknown-linux-musl

## test: everything CI runs: installs what the tests need, then Rust and Ansible tests
test: deps venvs build cri-client test-rust test-ansible

test-rust:
	cargo test --workspace --locked --quiet
	cargo test --locked --quiet --release --target x86_64-unknown-linux-musl --manifest-path tests/cri-client/Cargo.toml

test-ansible:
	$(PYTHON) -m pytest -q tests

## demo: 3 sandbox nodes (cpu, h200, hgx-h100), site.yml over SSH, one line per node; stopped even on failure
demo: deps build
	$(PYTHON) tests/demo.py

## bench: site.yml against the guide's way (bench/baseline) on 1 to 128 sandbox nodes (controller CPU, wall, the remote-nodes model), module run times, bytes sent;
## writes bench/results.md and bench/results.svg (a quicker run, e.g. BENCH_NODES="16" BENCH_REPEATS=2: bench/out/)
BENCH_NODES   ?= 1 4 16 32 64 128
BENCH_REPEATS ?= 3
BENCH_SIDES   ?= ours,baseline
# 64 and 128 nodes: one repeat (a run at 128 nodes takes minutes on a shared
# 2-core machine); a busy machine is waited for 3 s at most, and its share of
# the CPUs is reported with every run instead of running it again.
BENCH_ARGS    ?= --large-repeats 1 --quiet-wait 3 --noise-retries 0
bench: deps build
	$(PYTHON) bench/run.py --nodes "$(BENCH_NODES)" --repeats $(BENCH_REPEATS) --sides $(BENCH_SIDES) $(BENCH_ARGS)

## collection: the Ansible collection gpunode.k8s_gpu with the binaries of every module in MODULES
## for every arch in ARCHES inside: $(COLLECTION_OUT)/gpunode-k8s_gpu-<Cargo.toml's version>.tar.gz
COLLECTION_OUT ?= dist
.PHONY: collection
collection: build deps-python
	$(PYTHON) collection/build.py --modules "$(MODULES)" --arches "$(ARCHES)" --output-dir $(COLLECTION_OUT)

## bench-collection: the collection tarball's size and its install time on each tested ansible-core (README's numbers)
.PHONY: bench-collection
bench-collection: collection venvs
	$(PYTHON) bench/collection.py "$$(ls -t $(COLLECTION_OUT)/gpunode-k8s_gpu-*.tar.gz | head -1)"

## lint: Rust formatting and clippy (warnings denied), yamllint and ansible-lint (production profile)
lint: deps-python deps-system
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo fmt --manifest-path tests/cri-client/Cargo.toml -- --check
	cargo clippy --manifest-path tests/cri-client/Cargo.toml --all-targets --locked -- -D warnings
	$(VENV)/bin/yamllint --strict .
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH ansible-lint --nocolor

deps: deps-system deps-python deps-containerd

# Debian packages the tests drive for real: sshd for the sandbox nodes (ssh,
# ssh-keygen to reach them), qemu to run the aarch64 modules, file.
# containerd is not installed system-wide: the tests run real releases from
# deps-containerd. protoc (protobuf-compiler) builds the CRI bindings of
# tests/cri-client.
# Sandbox nodes run this machine's userland: what the roles install on a
# Debian node (install_os_package) and what Ansible's apt module needs must be
# here too, or a node would try to install them and each test's result would
# depend on what this machine happens to have.
NODE_PACKAGES := python3 python3-apt ca-certificates curl gnupg
deps-system:
	@missing=""; \
	for pair in sshd:openssh-server ssh-keygen:openssh-client qemu-aarch64-static:qemu-user-static file:file protoc:protobuf-compiler; do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${pair%%:*} ] || missing="$$missing $${pair##*:}"; \
	done; \
	for p in $(NODE_PACKAGES); do \
	  case "$$(dpkg-query -W -f='$${Status}' $$p 2>/dev/null)" in "install ok installed") ;; *) missing="$$missing $$p" ;; esac; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Real containerd releases (1.6.20 bookworm, 1.7.24 trixie, 2.1.9 unstable) and
# runc 1.1.5 from Debian's archive, downloaded with a private apt state into
# .cache/containerd/ (the system's apt is not touched): tests/containerd_releases.py.
deps-containerd:
	python3 tests/containerd_releases.py fetch

# ansible-core (pinned) and pytest in a project-local virtualenv.
deps-python: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

## venvs: one venv per tested ansible-core release, .venvs/ansible-core-<X.Y>/ (a
## version marker file inside: a changed pin makes that venv again)
venvs: $(foreach v,$(ANSIBLE_CORE_RELEASES),.venvs/ansible-core-$(basename $(v))/.ansible-core-$(v))
.venvs/ansible-core-%:
	@v=$(notdir $@); v=$${v#.ansible-core-}; d=$(dir $@); \
	echo "venvs: ansible-core $$v in $$d"; \
	rm -rf "$$d"; \
	$(VENVS_PYTHON) -m venv "$$d"; \
	"$$d/bin/python" -m pip install --quiet --disable-pip-version-check "ansible-core==$$v"; \
	case "$$("$$d/bin/ansible" --version)" in *"[core $$v]"*) ;; *) echo "venvs: $$d does not run ansible-core $$v"; exit 1 ;; esac; \
	touch $@

clean:
	cargo clean
	rm -rf dist
