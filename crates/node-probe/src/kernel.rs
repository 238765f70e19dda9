//! The running kernel: its release, loaded modules, and the NVIDIA driver.

use crate::{Root, Warnings};
use std::io;

/// Whether a kernel module is loaded: `/sys/module/<name>` exists while it is.
pub fn module_loaded(root: &Root, name: &str) -> bool {
    root.path(&format!("/sys/module/{name}")).is_dir()
}

/// `uname -r` of the running kernel, as procfs gives it.
pub fn release(root: &Root) -> Option<String> {
    root.read_trimmed("/proc/sys/kernel/osrelease")
        .ok()
        .filter(|r| !r.is_empty())
}

/// Which NVIDIA kernel module flavour is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleType {
    /// The open GPU kernel modules (MIT/GPL), required from Blackwell on.
    Open,
    /// The closed-source kernel module.
    Proprietary,
}

impl ModuleType {
    pub const fn name(self) -> &'static str {
        match self {
            ModuleType::Open => "open",
            ModuleType::Proprietary => "proprietary",
        }
    }
}

/// The NVIDIA kernel driver as the node reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NvidiaDriver {
    pub loaded: bool,
    pub version: Option<String>,
    pub module_type: Option<ModuleType>,
}

/// Reads the driver state: loaded from `/sys/module/nvidia`, the version from
/// `/sys/module/nvidia/version` (else `/proc/driver/nvidia/version`), the
/// flavour from the banner in `/proc/driver/nvidia/version`.
pub fn nvidia_driver(root: &Root, warnings: &mut Warnings) -> NvidiaDriver {
    let loaded = module_loaded(root, "nvidia");
    if !loaded {
        return NvidiaDriver::default();
    }
    let banner = match root.read_trimmed("/proc/driver/nvidia/version") {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            warnings.push(format!("cannot read /proc/driver/nvidia/version: {e}"));
            None
        }
    };
    let version = root
        .read_trimmed("/sys/module/nvidia/version")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| banner.as_deref().and_then(banner_version));
    if version.is_none() {
        warnings.push("the nvidia module is loaded but its version could not be read".to_string());
    }
    NvidiaDriver {
        loaded,
        version,
        module_type: banner.as_deref().and_then(banner_module_type),
    }
}

/// The version in a banner such as
/// `NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build ...`.
pub fn banner_version(banner: &str) -> Option<String> {
    let first_line = banner.lines().next()?;
    first_line
        .split_whitespace()
        .find(|word| looks_like_version(word))
        .map(str::to_string)
}

/// The flavour named in the banner's first line: `Open Kernel Module` or `Kernel Module`.
pub fn banner_module_type(banner: &str) -> Option<ModuleType> {
    let first_line = banner.lines().next()?;
    if first_line.contains("Open Kernel Module") {
        Some(ModuleType::Open)
    } else if first_line.contains("Kernel Module") {
        Some(ModuleType::Proprietary)
    } else {
        None
    }
}

/// `580.159.04`, `550.54`: dot-separated numbers, at least two of them.
pub fn looks_like_version(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_of_the_open_module() {
        let b = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (nixbld@)  \nGCC version: gcc 15";
        assert_eq!(banner_version(b).as_deref(), Some("580.159.04"));
        assert_eq!(banner_module_type(b), Some(ModuleType::Open));
    }

    #[test]
    fn banner_of_the_proprietary_module() {
        let b = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024";
        assert_eq!(banner_version(b).as_deref(), Some("535.183.01"));
        assert_eq!(banner_module_type(b), Some(ModuleType::Proprietary));
    }

    #[test]
    fn versions_are_dotted_numbers() {
        assert!(looks_like_version("580.159.04"));
        assert!(looks_like_version("550.54"));
        assert!(!looks_like_version("x86_64"));
        assert!(!looks_like_version("15.3."));
        assert!(!looks_like_version("580"));
    }
}
