//! Driver versions: the one asked for, and the one the node has now.

use crate::system::System;
use crate::Error;
use node_probe::kernel::{self, ModuleType};
use node_probe::Root;

/// The first branch with the open kernel modules.
pub const FIRST_OPEN_BRANCH: u32 = 515;
/// The first branch whose installer has `--kernel-module-type` and installs
/// the open modules by default.
pub const FIRST_MODULE_TYPE_OPTION_BRANCH: u32 = 560;

/// A full driver version such as `580.95.05`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverVersion {
    text: String,
    branch: u32,
}

impl DriverVersion {
    pub fn parse(text: &str) -> Result<DriverVersion, Error> {
        let text = text.trim();
        let branch = text.split('.').next().and_then(|b| b.parse::<u32>().ok());
        match branch {
            Some(branch) if kernel::looks_like_version(text) => Ok(DriverVersion {
                text: text.to_string(),
                branch,
            }),
            _ => Err(Error::Version(text.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The major number: `580` for `580.95.05`.
    pub fn branch(&self) -> u32 {
        self.branch
    }

    pub fn has_open_modules(&self) -> bool {
        self.branch >= FIRST_OPEN_BRANCH
    }

    pub fn has_module_type_option(&self) -> bool {
        self.branch >= FIRST_MODULE_TYPE_OPTION_BRANCH
    }
}

impl std::fmt::Display for DriverVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where the installed version was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSource {
    SysModule,
    ProcDriver,
    NvidiaSmi,
}

impl VersionSource {
    pub const fn name(self) -> &'static str {
        match self {
            VersionSource::SysModule => "/sys/module/nvidia/version",
            VersionSource::ProcDriver => "/proc/driver/nvidia/version",
            VersionSource::NvidiaSmi => "nvidia-smi",
        }
    }
}

/// The driver the node has now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    pub source: VersionSource,
    /// From the banner in `/proc/driver/nvidia/version`, when it is there.
    pub module_type: Option<ModuleType>,
}

/// The driver of the loaded kernel module: `/sys/module/nvidia/version`,
/// else the banner of `/proc/driver/nvidia/version`.
pub fn loaded(root: &Root) -> Option<Installed> {
    let banner = root.read_trimmed("/proc/driver/nvidia/version").ok();
    let module_type = banner.as_deref().and_then(kernel::banner_module_type);
    let from_sys = root
        .read_trimmed("/sys/module/nvidia/version")
        .ok()
        .filter(|v| kernel::looks_like_version(v));
    if let Some(version) = from_sys {
        return Some(Installed {
            version,
            source: VersionSource::SysModule,
            module_type,
        });
    }
    let version = banner.as_deref().and_then(kernel::banner_version)?;
    Some(Installed {
        version,
        source: VersionSource::ProcDriver,
        module_type,
    })
}

/// The installed driver: the loaded module's, else what `nvidia-smi` reports
/// when it is on PATH (it loads the module itself when it can).
pub fn installed(root: &Root, sys: &dyn System) -> Option<Installed> {
    loaded(root).or_else(|| nvidia_smi_version(sys))
}

/// The command line that asks `nvidia-smi` for the driver version.
pub fn nvidia_smi_query(program: &str) -> Vec<String> {
    vec![
        program.to_string(),
        "--query-gpu=driver_version".to_string(),
        "--format=csv,noheader".to_string(),
    ]
}

fn nvidia_smi_version(sys: &dyn System) -> Option<Installed> {
    let program = sys.find_program("nvidia-smi")?;
    let out = sys
        .run(&nvidia_smi_query(&program.to_string_lossy()))
        .ok()?;
    if !out.success() {
        return None;
    }
    let version = out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| kernel::looks_like_version(l))?
        .to_string();
    Some(Installed {
        version,
        source: VersionSource::NvidiaSmi,
        module_type: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_carry_their_branch() {
        let v = DriverVersion::parse(" 580.95.05 ").unwrap();
        assert_eq!((v.as_str(), v.branch()), ("580.95.05", 580));
        assert!(v.has_open_modules() && v.has_module_type_option());
        let old = DriverVersion::parse("535.183.01").unwrap();
        assert!(old.has_open_modules() && !old.has_module_type_option());
        assert!(!DriverVersion::parse("470.256.02")
            .unwrap()
            .has_open_modules());
    }

    #[test]
    fn a_branch_alone_or_a_file_name_is_not_a_version() {
        for bad in [
            "580",
            "latest",
            "NVIDIA-Linux-x86_64-580.95.05.run",
            "580.95.x",
            "",
        ] {
            let err = DriverVersion::parse(bad).unwrap_err().to_string();
            assert!(err.contains("such as 580.95.05"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_h200_capture_has_the_open_580_driver_loaded() {
        let root = Root::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/h200-vm"
        ));
        let installed = loaded(&root).unwrap();
        assert_eq!(installed.version, "580.159.04");
        assert_eq!(installed.source, VersionSource::SysModule);
        assert_eq!(installed.module_type, Some(ModuleType::Open));
    }
}
