//! NVIDIA GPU detection: which PCI functions are GPUs, which are NVSwitches,
//! and the state of the driver stack around them.
//!
//! A GPU is an NVIDIA function of class VGA (0x0300) or 3D controller (0x0302).
//! `lspci | grep -i nvidia` counts every NVIDIA function instead: the audio,
//! USB and serial functions of a consumer card, and the four NVSwitches of an
//! HGX board, all look like GPUs to it.

use crate::kernel::{self, NvidiaDriver};
use crate::nvidia_ids::{self, Architecture};
use crate::pci::{self, PciFunction, VENDOR_NVIDIA};
use crate::{Root, Warnings};
use std::os::unix::fs::PermissionsExt;

const CLASS_VGA: u16 = 0x0300;
const CLASS_3D: u16 = 0x0302;
const CLASS_BRIDGE_OTHER: u16 = 0x0680;

/// Where `nvidia-container-runtime` is installed by the distribution packages,
/// by hand, and by the GPU Operator's toolkit container, in that order.
pub const CONTAINER_RUNTIME_CANDIDATES: &[&str] = &[
    "/usr/bin/nvidia-container-runtime",
    "/usr/local/bin/nvidia-container-runtime",
    "/usr/local/nvidia/toolkit/nvidia-container-runtime",
    "/bin/nvidia-container-runtime",
];

/// Files where distributions keep the PCI ID database (Debian, RHEL, others).
const PCI_IDS_CANDIDATES: &[&str] = &[
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

/// One GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    pub pci: PciFunction,
    /// From the driver, else the built-in table, else the node's pci.ids.
    pub name: Option<String>,
    pub architecture: Option<Architecture>,
}

/// Everything detection found on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detection {
    pub gpus: Vec<Gpu>,
    /// NVSwitch bridges of HGX boards: NVIDIA functions, not GPUs.
    pub nvswitches: Vec<PciFunction>,
    /// Other NVIDIA functions (HDMI audio, USB-C, serial of consumer cards).
    pub other_functions: Vec<PciFunction>,
    pub driver: NvidiaDriver,
    pub nouveau_loaded: bool,
    /// Node path of `nvidia-container-runtime`, when installed.
    pub container_runtime_path: Option<String>,
    pub warnings: Warnings,
}

/// Detects the NVIDIA devices and driver stack of the node under `root`.
pub fn detect(root: &Root) -> Detection {
    let mut warnings = Warnings::new();
    let driver = kernel::nvidia_driver(root, &mut warnings);
    let mut detection = Detection {
        nouveau_loaded: kernel::module_loaded(root, "nouveau"),
        container_runtime_path: find_container_runtime(root),
        ..Detection::default()
    };
    let mut pci_ids = PciIds::new(root);
    for function in pci::functions_of_vendor(root, VENDOR_NVIDIA, &mut warnings) {
        match classify(&function, &mut warnings) {
            Kind::Gpu => {
                let name = gpu_name(root, &function, driver.loaded, &mut pci_ids);
                let architecture = function.device.and_then(nvidia_ids::architecture);
                detection.gpus.push(Gpu {
                    pci: function,
                    name,
                    architecture,
                });
            }
            Kind::NvSwitch => detection.nvswitches.push(function),
            Kind::Other => detection.other_functions.push(function),
        }
    }
    detection.driver = driver;
    detection.warnings = warnings;
    detection
}

enum Kind {
    Gpu,
    NvSwitch,
    Other,
}

fn classify(function: &PciFunction, warnings: &mut Warnings) -> Kind {
    match function.class_subclass() {
        Some(CLASS_VGA | CLASS_3D) => Kind::Gpu,
        Some(CLASS_BRIDGE_OTHER) => Kind::NvSwitch,
        Some(_) => Kind::Other,
        // Without a class only a device ID we know as a GPU's is counted.
        None => match function
            .device
            .and_then(|d| nvidia_ids::builtin_name(d, function.subsystem_device))
        {
            Some(_) => Kind::Gpu,
            None => {
                warnings.push(format!(
                    "NVIDIA PCI function {} has no readable class: not counted as a GPU",
                    function.address
                ));
                Kind::Other
            }
        },
    }
}

fn gpu_name(
    root: &Root,
    function: &PciFunction,
    driver_loaded: bool,
    pci_ids: &mut PciIds,
) -> Option<String> {
    if driver_loaded {
        if let Some(model) = driver_model(root, &function.address) {
            return Some(model);
        }
    }
    let device = function.device?;
    if let Some(name) = nvidia_ids::builtin_name(device, function.subsystem_device) {
        return Some(name.to_string());
    }
    pci_ids.device_name(VENDOR_NVIDIA, device)
}

/// The `Model:` line the driver writes for each GPU it drives.
fn driver_model(root: &Root, address: &str) -> Option<String> {
    let info = crate::read_text(
        &root.path(&format!("/proc/driver/nvidia/gpus/{address}/information")),
        crate::ATTRIBUTE_LIMIT,
    )
    .ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("Model:"))
        .map(|model| model.trim().to_string())
        .filter(|model| !model.is_empty())
}

fn find_container_runtime(root: &Root) -> Option<String> {
    CONTAINER_RUNTIME_CANDIDATES
        .iter()
        .find(|candidate| is_executable_file(root, candidate))
        .map(|candidate| candidate.to_string())
}

/// An executable regular file (after following symlinks).
pub fn is_executable_file(root: &Root, node_path: &str) -> bool {
    std::fs::metadata(root.path(node_path))
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// pci.ids is about 1.4 MB today.
const PCI_IDS_LIMIT: u64 = 16 << 20;

/// The node's pci.ids, read once and only if a name is needed from it.
struct PciIds<'a> {
    root: &'a Root,
    text: Option<Option<String>>,
}

impl<'a> PciIds<'a> {
    fn new(root: &'a Root) -> PciIds<'a> {
        PciIds { root, text: None }
    }

    fn device_name(&mut self, vendor: u16, device: u16) -> Option<String> {
        let root = self.root;
        let text = self.text.get_or_insert_with(|| {
            PCI_IDS_CANDIDATES
                .iter()
                .find_map(|p| crate::read_text(&root.path(p), PCI_IDS_LIMIT).ok())
        });
        pci_ids_device_name(text.as_deref()?, vendor, device)
    }
}

/// Looks a device up in pci.ids text: a vendor line `10de  NVIDIA Corporation`
/// is followed by its devices, one tab deep: `\t2335  GH100 [H200 SXM 141GB]`.
pub fn pci_ids_device_name(text: &str, vendor: u16, device: u16) -> Option<String> {
    let vendor_prefix = format!("{vendor:04x} ");
    let device_prefix = format!("\t{device:04x} ");
    let mut in_vendor = false;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if !line.starts_with('\t') {
            if in_vendor {
                return None;
            }
            in_vendor = line.starts_with(&vendor_prefix);
        } else if in_vendor && line.starts_with(&device_prefix) {
            return Some(line[device_prefix.len()..].trim().to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCI_IDS: &str = "# comment\n1002  AMD\n\t2335  Not this one\n10de  NVIDIA Corporation\n\t1e07  TU102 [GeForce RTX 2080 Ti Rev. A]\n\t\t1043 8666  ROG\n\t2335  GH100 [H200 SXM 141GB]\n10df  Emulex\n\t2336  Emulex thing\n";

    #[test]
    fn pci_ids_lookup_stays_within_the_vendor() {
        assert_eq!(
            pci_ids_device_name(PCI_IDS, 0x10de, 0x1e07).as_deref(),
            Some("TU102 [GeForce RTX 2080 Ti Rev. A]")
        );
        assert_eq!(
            pci_ids_device_name(PCI_IDS, 0x10de, 0x2335).as_deref(),
            Some("GH100 [H200 SXM 141GB]")
        );
        assert_eq!(pci_ids_device_name(PCI_IDS, 0x10de, 0x2336), None);
    }
}
