//! `containerd_runtime_config`: containerd's CRI runtimes (NVIDIA or runc).
//! See library/containerd_runtime_config.yml for the documentation Ansible shows.

fn main() {
    ansible_module::run(
        &containerd_runtime_config::SPEC,
        containerd_runtime_config::run,
    )
}
