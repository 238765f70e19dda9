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
ANSIBLE_CORE_VERSION := 2.19.14

.PHONY: all build cri-client test test-rust test-ansible lint clean demo bench deps deps-python deps-system
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
test: deps build cri-client test-rust test-ansible

test-rust:
	cargo test --workspace --locked --quiet
	cargo test --locked --quiet --release --target x86_64-unknown-linux-musl --manifest-path tests/cri-client/Cargo.toml

test-ansible:
	$(PYTHON) -m pytest -q tests

## demo: 3 sandbox nodes (cpu, h200, hgx-h100), site.yml over SSH, one line per node; stopped even on failure
demo: deps build
	$(PYTHON) tests/demo.py

## bench: site.yml against the guide's way (bench/baseline) on 1 to 32 sandbox nodes, module run times, bytes sent;
## writes bench/results.md and bench/results.svg (a quicker run, e.g. BENCH_NODES="1 4" BENCH_REPEATS=3: bench/out/)
BENCH_NODES   ?= 1 4 16 32
BENCH_REPEATS ?= 5
BENCH_SIDES   ?= ours,baseline
bench: deps build
	$(PYTHON) bench/run.py --nodes "$(BENCH_NODES)" --repeats $(BENCH_REPEATS) --sides $(BENCH_SIDES)

## lint: Rust formatting and clippy (warnings denied), yamllint and ansible-lint (production profile)
lint: deps-python deps-system
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo fmt --manifest-path tests/cri-client/Cargo.toml -- --check
	cargo clippy --manifest-path tests/cri-client/Cargo.toml --all-targets --locked -- -D warnings
	$(VENV)/bin/yamllint --strict .
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH ansible-lint --nocolor

deps: deps-system deps-python

# Debian packages the tests drive for real: sshd for the sandbox nodes (ssh,
# ssh-keygen to reach them),
# containerd to validate configs, qemu to run the aarch64 modules, file;
# protoc (protobuf-compiler) for the CRI bindings of tests/cri-client, runc to
# run its containers.
deps-system:
	@missing=""; \
	for pair in sshd:openssh-server ssh-keygen:openssh-client containerd:containerd qemu-aarch64-static:qemu-user-static file:file protoc:protobuf-compiler runc:runc; do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${pair%%:*} ] || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# ansible-core (pinned) and pytest in a project-local virtualenv.
deps-python: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

clean:
	cargo clean
	rm -rf dist
