//! `nvidia_gpu_facts`: detects the node's NVIDIA GPUs and returns them as facts.
//! See library/nvidia_gpu_facts.yml for the documentation Ansible shows.

fn main() {
    ansible_module::run(&nvidia_gpu_facts::SPEC, nvidia_gpu_facts::run)
}
