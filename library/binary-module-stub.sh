#!/bin/sh
# Stand-in for this project's Rust modules in Ansible's module path.
#
# Each module (nvidia_gpu_facts, containerd_runtime_config, nvidia_cdi_spec,
# nvidia_driver_install) is a static binary per architecture in dist/<arch>/
# (`make build`), run by the action plugin of the same name in plugins/action/.
# The files of those names here are links to this script: they give
# `ansible-doc` a module to attach the <module>.yml documentation to, and when
# the action plugins are not configured Ansible runs this instead, which says
# so rather than failing obscurely.
module=$(basename "$0")
module=${module#AnsiballZ_}
printf '{"failed": true, "msg": "%s must run through its action plugin: set action_plugins = <this project>/plugins/action in ansible.cfg, then run make build (see README)"}\n' "$module"
exit 1
