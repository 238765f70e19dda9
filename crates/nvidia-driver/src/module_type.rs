//! Open or proprietary kernel modules, decided from the node's GPUs and the
//! driver branch.
//!
//! What NVIDIA supports (README "Open Linux Kernel Modules", and the
//! open-gpu-kernel-modules README):
//! - the open modules exist from branch 515 and support Turing and newer;
//! - Maxwell, Pascal and Volta work only with the proprietary module;
//! - Blackwell and Grace Hopper work only with the open modules, and NVIDIA
//!   recommends them for Hopper;
//! - from branch 560 the installer installs the open modules by default, and
//!   they are the supported choice for Turing, Ampere and Ada as well.

use crate::version::DriverVersion;
use crate::Error;
use node_probe::kernel::ModuleType;
use node_probe::nvidia_ids::{self, Architecture};

/// The `kernel_module_type` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    Auto,
    Open,
    Proprietary,
}

impl Requested {
    pub fn parse(text: &str) -> Result<Requested, Error> {
        match text {
            "auto" => Ok(Requested::Auto),
            "open" => Ok(Requested::Open),
            "proprietary" => Ok(Requested::Proprietary),
            other => Err(Error::ModuleTypeName(other.to_string())),
        }
    }
}

/// One GPU as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuModel {
    pub address: String,
    pub device: Option<u16>,
}

impl GpuModel {
    pub fn new(address: &str, device: Option<u16>) -> GpuModel {
        GpuModel {
            address: address.to_string(),
            device,
        }
    }
}

/// The flavour to install and why, in words for the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub module_type: ModuleType,
    pub reason: String,
}

/// Device IDs of the GH200 superchip's GPU (it is Hopper, on a Grace CPU).
const GRACE_HOPPER_DEVICES: &[u16] = &[0x2342, 0x2348];

/// What a GPU allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Maxwell, Pascal, Volta: proprietary only.
    Legacy,
    /// Turing, Ampere, Ada: either; open is the default from 560.
    Either,
    /// Hopper on x86: either; open recommended.
    Hopper,
    /// Blackwell and Grace Hopper: open only.
    OpenOnly,
    /// A device ID the table does not know.
    Unknown,
}

struct Classified {
    architecture: Option<Architecture>,
    class: Class,
    label: String,
}

fn classify(gpu: &GpuModel, node_arch: &str) -> Classified {
    let architecture = gpu.device.and_then(nvidia_ids::architecture);
    let grace = gpu
        .device
        .is_some_and(|d| GRACE_HOPPER_DEVICES.contains(&d))
        || (architecture == Some(Architecture::Hopper) && node_arch == "aarch64");
    let class = match architecture {
        _ if grace => Class::OpenOnly,
        Some(Architecture::Maxwell | Architecture::Pascal | Architecture::Volta) => Class::Legacy,
        Some(Architecture::Turing | Architecture::Ampere | Architecture::Ada) => Class::Either,
        Some(Architecture::Hopper) => Class::Hopper,
        Some(Architecture::Blackwell) => Class::OpenOnly,
        None => Class::Unknown,
    };
    let kind = match architecture {
        _ if grace => "Grace Hopper".to_string(),
        Some(a) => capitalized(a.name()),
        None => "unknown".to_string(),
    };
    let id = gpu
        .device
        .map(|d| format!("10de:{d:04x}"))
        .unwrap_or_else(|| "device ID unreadable".to_string());
    Classified {
        architecture,
        class,
        label: format!("{kind} GPU {} ({id})", gpu.address),
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The GPUs of one class, named for a message; `None` when there are none.
fn named(gpus: &[Classified], class: Class) -> Option<String> {
    let labels: Vec<&str> = gpus
        .iter()
        .filter(|g| g.class == class)
        .map(|g| g.label.as_str())
        .collect();
    match labels.len() {
        0 => None,
        1..=3 => Some(labels.join(", ")),
        n => Some(format!("{} and {} more", labels[..2].join(", "), n - 2)),
    }
}

/// Decides the flavour for `gpus` (the node's NVIDIA GPUs) on driver
/// `version`; `node_arch` is `uname -m`. An error says why no flavour can work.
pub fn decide(
    requested: Requested,
    version: &DriverVersion,
    gpus: &[GpuModel],
    node_arch: &str,
) -> Result<Decision, Error> {
    let classified: Vec<Classified> = gpus.iter().map(|g| classify(g, node_arch)).collect();
    let legacy = named(&classified, Class::Legacy);
    let open_only = named(&classified, Class::OpenOnly);
    match requested {
        Requested::Open => open_as_requested(version, legacy),
        Requested::Proprietary => proprietary_as_requested(open_only),
        Requested::Auto => match (legacy, open_only) {
            (Some(legacy), Some(open_only)) => Err(Error::MixedGpus { legacy, open_only }),
            (Some(legacy), None) => Ok(Decision {
                module_type: ModuleType::Proprietary,
                reason: format!(
                    "proprietary: the open kernel modules do not support {legacy} \
                     (Maxwell, Pascal and Volta)"
                ),
            }),
            (None, Some(gpus)) if !version.has_open_modules() => Err(Error::OpenOnlyTooOld {
                gpus,
                version: version.to_string(),
            }),
            (None, Some(open_only)) => Ok(Decision {
                module_type: ModuleType::Open,
                reason: format!("open: {open_only} works only with the open kernel modules"),
            }),
            (None, None) => Ok(auto_without_constraints(
                version,
                &classified,
                version.branch(),
            )),
        },
    }
}

/// `kernel_module_type: open`: refused where the driver has no open modules
/// or a GPU (`legacy`) needs the proprietary one.
fn open_as_requested(version: &DriverVersion, legacy: Option<String>) -> Result<Decision, Error> {
    if !version.has_open_modules() {
        return Err(Error::NoOpenModules {
            version: version.to_string(),
        });
    }
    if let Some(gpus) = legacy {
        return Err(Error::OpenUnsupported { gpus });
    }
    Ok(Decision {
        module_type: ModuleType::Open,
        reason: "open: requested with kernel_module_type: open".to_string(),
    })
}

/// `kernel_module_type: proprietary`: refused where a GPU (`open_only`)
/// works only with the open modules.
fn proprietary_as_requested(open_only: Option<String>) -> Result<Decision, Error> {
    if let Some(gpus) = open_only {
        return Err(Error::ProprietaryUnsupported { gpus });
    }
    Ok(Decision {
        module_type: ModuleType::Proprietary,
        reason: "proprietary: requested with kernel_module_type: proprietary".to_string(),
    })
}

/// `auto` when every GPU could run either flavour (or none is visible).
fn auto_without_constraints(version: &DriverVersion, gpus: &[Classified], branch: u32) -> Decision {
    if !version.has_open_modules() {
        return Decision {
            module_type: ModuleType::Proprietary,
            reason: format!(
                "proprietary: driver branch {branch} has no open kernel modules (they exist \
                 from 515 on)"
            ),
        };
    }
    if let Some(hopper) = named(gpus, Class::Hopper) {
        return Decision {
            module_type: ModuleType::Open,
            reason: format!(
                "open: NVIDIA recommends the open kernel modules for Hopper and newer GPUs \
                 ({hopper})"
            ),
        };
    }
    let default_open = version.has_module_type_option();
    let (module_type, default) = if default_open {
        (ModuleType::Open, "open")
    } else {
        (ModuleType::Proprietary, "proprietary")
    };
    let reason = if gpus.is_empty() {
        format!(
            "{default}: no NVIDIA GPU is visible on the PCI bus, so this follows the default \
             of driver branch {branch}"
        )
    } else if let Some(unknown) = named(gpus, Class::Unknown) {
        format!(
            "{default}: the architecture of {unknown} is unknown to this module, so this \
             follows the default of driver branch {branch}; set kernel_module_type to choose"
        )
    } else {
        let either = named(gpus, Class::Either).unwrap_or_default();
        let architectures = describe_architectures(gpus);
        if default_open {
            format!(
                "open: driver branch {branch} installs the open kernel modules by default for \
                 {architectures} GPUs ({either})"
            )
        } else {
            format!(
                "proprietary: the proprietary module is the default of driver branch {branch} \
                 for {architectures} GPUs ({either}); the open modules are the default from \
                 branch 560 on"
            )
        }
    };
    Decision {
        module_type,
        reason,
    }
}

fn describe_architectures(gpus: &[Classified]) -> String {
    let mut names: Vec<Architecture> = gpus.iter().filter_map(|g| g.architecture).collect();
    names.sort();
    names.dedup();
    let names: Vec<String> = names.iter().map(|a| capitalized(a.name())).collect();
    names.join(" and ")
}

/// The installer flags that select `module_type` on `version`: the
/// `--kernel-module-type` option from 560 on, `-m=kernel-open` before
/// (where the proprietary module is the default and needs no flag).
pub fn installer_flags(module_type: ModuleType, version: &DriverVersion) -> Vec<String> {
    match module_type {
        _ if version.has_module_type_option() => {
            vec![format!("--kernel-module-type={}", module_type.name())]
        }
        ModuleType::Open => vec!["-m=kernel-open".to_string()],
        ModuleType::Proprietary => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> DriverVersion {
        DriverVersion::parse(text).unwrap()
    }

    /// The message of a refused decision.
    fn refused(requested: Requested, version: &str, devices: &[u16], node_arch: &str) -> String {
        decide(requested, &v(version), &gpus(devices), node_arch)
            .unwrap_err()
            .to_string()
    }

    fn gpus(devices: &[u16]) -> Vec<GpuModel> {
        devices
            .iter()
            .enumerate()
            .map(|(i, d)| GpuModel::new(&format!("0000:{:02x}:00.0", i + 1), Some(*d)))
            .collect()
    }

    fn auto(version: &str, devices: &[u16]) -> Decision {
        decide(Requested::Auto, &v(version), &gpus(devices), "x86_64").unwrap()
    }

    const H200: u16 = 0x2335;
    const H100: u16 = 0x2330;
    const GH200: u16 = 0x2342;
    const B200: u16 = 0x2901;
    const A100: u16 = 0x20b2;
    const T4: u16 = 0x1eb8;
    const RTX_2080_TI: u16 = 0x1e07;
    const V100: u16 = 0x1db5;
    const P100: u16 = 0x15f8;
    const M60: u16 = 0x13f2;

    #[test]
    fn hopper_gets_the_open_modules_on_any_branch_that_has_them() {
        let d = auto("580.159.04", &[H200]);
        assert_eq!(d.module_type, ModuleType::Open);
        assert!(
            d.reason.contains("Hopper GPU 0000:01:00.0 (10de:2335)"),
            "{}",
            d.reason
        );
        assert_eq!(auto("535.183.01", &[H100; 8]).module_type, ModuleType::Open);
        assert!(auto("535.183.01", &[H100; 8]).reason.contains("and 6 more"));
    }

    #[test]
    fn pascal_and_volta_get_the_proprietary_module() {
        for device in [P100, V100, M60] {
            let d = auto("580.95.05", &[device]);
            assert_eq!(d.module_type, ModuleType::Proprietary, "{device:04x}");
            assert!(d.reason.contains("do not support"), "{}", d.reason);
        }
    }

    #[test]
    fn turing_follows_the_branch_default() {
        let on_535 = auto("535.183.01", &[T4]);
        assert_eq!(on_535.module_type, ModuleType::Proprietary);
        assert_eq!(
            on_535.reason,
            "proprietary: the proprietary module is the default of driver branch 535 for \
             Turing GPUs (Turing GPU 0000:01:00.0 (10de:1eb8)); the open modules are the \
             default from branch 560 on"
        );
        let on_570 = auto("570.124.06", &[RTX_2080_TI]);
        assert_eq!(on_570.module_type, ModuleType::Open);
        assert!(on_570
            .reason
            .starts_with("open: driver branch 570 installs the open"));
        assert_eq!(
            auto("550.54.15", &[A100]).module_type,
            ModuleType::Proprietary
        );
        assert_eq!(auto("560.35.03", &[A100]).module_type, ModuleType::Open);
    }

    #[test]
    fn blackwell_and_grace_hopper_need_the_open_modules() {
        assert_eq!(auto("570.124.06", &[B200]).module_type, ModuleType::Open);
        assert_eq!(auto("550.54.15", &[GH200]).module_type, ModuleType::Open);
        let hopper_on_grace =
            decide(Requested::Auto, &v("535.183.01"), &gpus(&[H100]), "aarch64").unwrap();
        assert!(
            hopper_on_grace.reason.contains("Grace Hopper GPU"),
            "{}",
            hopper_on_grace.reason
        );
        let err = refused(Requested::Proprietary, "580.95.05", &[B200], "x86_64");
        assert!(
            err.starts_with("kernel_module_type is proprietary, but Blackwell GPU 0000:01:00.0"),
            "{err}"
        );
        let too_old = refused(Requested::Auto, "470.256.02", &[GH200], "aarch64");
        assert!(too_old.contains("does not have"), "{too_old}");
    }

    #[test]
    fn forcing_open_on_gpus_it_does_not_support_is_refused() {
        let err = refused(Requested::Open, "580.95.05", &[T4, P100], "x86_64");
        assert_eq!(
            err,
            "kernel_module_type is open, but the open kernel modules do not support Pascal GPU \
             0000:02:00.0 (10de:15f8) (Maxwell, Pascal and Volta need the proprietary module): \
             use kernel_module_type: proprietary or auto"
        );
        let old = refused(Requested::Open, "470.256.02", &[T4], "x86_64");
        assert!(old.contains("no open kernel modules"), "{old}");
    }

    #[test]
    fn mixed_legacy_and_open_only_gpus_have_no_answer() {
        let err = refused(Requested::Auto, "580.95.05", &[V100, B200], "x86_64");
        assert!(
            err.starts_with("no kernel module type drives every GPU"),
            "{err}"
        );
    }

    #[test]
    fn unknown_or_absent_gpus_follow_the_branch_default_and_say_so() {
        let none = auto("580.95.05", &[]);
        assert_eq!(none.module_type, ModuleType::Open);
        assert!(
            none.reason.contains("no NVIDIA GPU is visible"),
            "{}",
            none.reason
        );
        assert_eq!(auto("535.183.01", &[]).module_type, ModuleType::Proprietary);
        let unknown = auto("535.183.01", &[0x3300]);
        assert_eq!(unknown.module_type, ModuleType::Proprietary);
        assert!(
            unknown
                .reason
                .contains("unknown GPU 0000:01:00.0 (10de:3300)"),
            "{}",
            unknown.reason
        );
        // A known open-only GPU still decides when another is unknown.
        assert_eq!(
            auto("535.183.01", &[0x3300, GH200]).module_type,
            ModuleType::Open
        );
        assert_eq!(
            auto("470.256.02", &[T4]).module_type,
            ModuleType::Proprietary
        );
    }

    #[test]
    fn flags_follow_the_installer_of_each_branch() {
        use ModuleType::*;
        assert_eq!(
            installer_flags(Open, &v("580.95.05")),
            ["--kernel-module-type=open"]
        );
        assert_eq!(
            installer_flags(Proprietary, &v("560.35.03")),
            ["--kernel-module-type=proprietary"]
        );
        assert_eq!(installer_flags(Open, &v("550.54.15")), ["-m=kernel-open"]);
        assert!(installer_flags(Proprietary, &v("535.183.01")).is_empty());
    }

    #[test]
    fn the_option_parses_its_three_choices() {
        assert_eq!(Requested::parse("auto").ok(), Some(Requested::Auto));
        assert_eq!(Requested::parse("open").ok(), Some(Requested::Open));
        assert!(Requested::parse("kernel-open").is_err());
    }
}
