//! `nvidia_cdi_spec`: writes the CDI spec of the node's NVIDIA GPUs.
//! See library/nvidia_cdi_spec.yml for the documentation Ansible shows.

fn main() {
    ansible_module::run(&nvidia_cdi_spec::SPEC, nvidia_cdi_spec::run)
}
