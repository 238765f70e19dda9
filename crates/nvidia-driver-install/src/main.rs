//! `nvidia_driver_install`: installs the NVIDIA driver from NVIDIA's `.run`
//! installer. See library/nvidia_driver_install.yml for the documentation
//! Ansible shows.

fn main() {
    ansible_module::run(&nvidia_driver_install::SPEC, nvidia_driver_install::run)
}
