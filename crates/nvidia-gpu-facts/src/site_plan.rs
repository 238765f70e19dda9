//! site.yml's plan: which of its optional plays a node needs.
//!
//! site.yml runs its install play and its CDI play only on the nodes that
//! need them (every task costs the controller a round of work for every node
//! it runs on, run or skipped: bench/results.md). The rule that picks those
//! nodes lives here, next to the GPU mode it depends on, so that it is
//! tested in Rust and the playbook only puts each node into the groups this
//! returns.

use serde::Deserialize;

/// The variables of site.yml's two roles that decide its optional plays,
/// as the node has them (the user's value, else the role default).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SitePlanVars {
    pub install_os_packages: bool,
    pub containerd_install: bool,
    pub install_gpu_driver: bool,
    pub containerd_cdi_spec: bool,
}

/// The groups of site.yml's optional plays this node belongs in:
/// `site_install` (OS packages, containerd, the NVIDIA driver and toolkit)
/// and `site_cdi` (the CDI spec: a GPU node whose driver runs, or is being
/// installed in this run). The plays' tasks still check their own
/// conditions; this only spares the other nodes their skipped tasks.
pub fn site_groups(vars: SitePlanVars, gpu_node: bool, driver_loaded: bool) -> Vec<&'static str> {
    let driver_install = gpu_node && vars.install_gpu_driver;
    let mut groups = Vec::new();
    if vars.install_os_packages || vars.containerd_install || driver_install {
        groups.push("site_install");
    }
    if gpu_node && vars.containerd_cdi_spec && (driver_install || driver_loaded) {
        groups.push("site_cdi");
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: SitePlanVars = SitePlanVars {
        install_os_packages: false,
        containerd_install: false,
        install_gpu_driver: false,
        containerd_cdi_spec: false,
    };

    #[test]
    fn each_variable_and_the_gpu_mode_put_a_node_in_its_groups() {
        let cdi = SitePlanVars {
            containerd_cdi_spec: true,
            ..NONE
        };
        let driver = SitePlanVars {
            install_gpu_driver: true,
            ..cdi
        };
        // (vars, GPU node, driver loaded, groups)
        let table: &[(SitePlanVars, bool, bool, &[&str])] = &[
            (NONE, true, true, &[]),
            (
                SitePlanVars {
                    install_os_packages: true,
                    ..NONE
                },
                false,
                false,
                &["site_install"],
            ),
            (
                SitePlanVars {
                    containerd_install: true,
                    ..NONE
                },
                false,
                false,
                &["site_install"],
            ),
            // The driver is installed on GPU nodes only.
            (
                SitePlanVars {
                    install_gpu_driver: true,
                    ..NONE
                },
                false,
                false,
                &[],
            ),
            (
                SitePlanVars {
                    install_gpu_driver: true,
                    ..NONE
                },
                true,
                false,
                &["site_install"],
            ),
            // The CDI spec lists a running driver's files: none, no spec ...
            (cdi, true, false, &[]),
            (cdi, true, true, &["site_cdi"]),
            // ... unless this run installs the driver first.
            (driver, true, false, &["site_install", "site_cdi"]),
            // A CPU node gets no spec, whatever its driver.
            (cdi, false, true, &[]),
            (driver, false, true, &[]),
        ];
        for (vars, gpu, loaded, want) in table {
            assert_eq!(
                site_groups(*vars, *gpu, *loaded),
                *want,
                "{vars:?} gpu={gpu} loaded={loaded}"
            );
        }
    }
}
