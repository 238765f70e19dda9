//! PCI functions from `/sys/bus/pci/devices`.

use crate::{read_trimmed, Root, Warnings};
use std::io;
use std::path::Path;

pub const VENDOR_NVIDIA: u16 = 0x10de;

/// One PCI function as sysfs shows it. Fields that could not be read are `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// Domain, bus, device and function: `0000:00:06.0`.
    pub address: String,
    pub vendor: u16,
    pub device: Option<u16>,
    /// The 24-bit class code: base class, subclass, programming interface.
    pub class: Option<u32>,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
    /// The bound driver's name (`nvidia`, `nouveau`, `vfio-pci`), `None` when unbound.
    pub driver: Option<String>,
    /// `None` when the kernel reports no NUMA affinity (-1) or the file is unreadable.
    pub numa_node: Option<i64>,
}

impl PciFunction {
    /// Base class and subclass, the upper 16 bits of the class code.
    pub fn class_subclass(&self) -> Option<u16> {
        self.class.map(|c| (c >> 8) as u16)
    }
}

/// Reads every function of `vendor` under `/sys/bus/pci/devices`, sorted by
/// address. Functions of other vendors are skipped after one small read.
pub fn functions_of_vendor(root: &Root, vendor: u16, warnings: &mut Warnings) -> Vec<PciFunction> {
    let devices = root.path("/sys/bus/pci/devices");
    let entries = match std::fs::read_dir(&devices) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            warnings.push(format!(
                "{} does not exist: no PCI bus is visible (a container without /sys?)",
                devices.display()
            ));
            return Vec::new();
        }
        Err(e) => {
            warnings.push(format!("cannot list {}: {e}", devices.display()));
            return Vec::new();
        }
    };
    let mut addresses: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    addresses.sort();

    let mut found = Vec::new();
    for address in addresses {
        let dir = devices.join(&address);
        let vendor_id = match read_id(&dir.join("vendor")) {
            Ok(v) => v,
            Err(e) => {
                warnings.push(format!(
                    "cannot read the vendor of PCI function {address} ({e}): skipped"
                ));
                continue;
            }
        };
        if vendor_id != vendor {
            continue;
        }
        found.push(read_function(&dir, address, vendor_id, warnings));
    }
    found
}

fn read_function(dir: &Path, address: String, vendor: u16, warnings: &mut Warnings) -> PciFunction {
    let mut attr = |name: &str, max_digits: usize| match read_hex(&dir.join(name), max_digits) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!("cannot read {name} of PCI function {address}: {e}"));
            None
        }
    };
    // Each fits its width by construction of read_hex's digit limit.
    let device = attr("device", 4).map(|v| v as u16);
    let class = attr("class", 6);
    let subsystem_vendor = attr("subsystem_vendor", 4).map(|v| v as u16);
    let subsystem_device = attr("subsystem_device", 4).map(|v| v as u16);
    let driver = bound_driver(dir, &address, warnings);
    let numa_node = match read_trimmed(&dir.join("numa_node")) {
        Ok(text) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            Ok(_) => None,
            Err(_) => {
                warnings.push(format!(
                    "numa_node of PCI function {address} is not a number: {text:?}"
                ));
                None
            }
        },
        Err(e) => {
            warnings.push(format!(
                "cannot read numa_node of PCI function {address}: {e}"
            ));
            None
        }
    };
    PciFunction {
        address,
        vendor,
        device,
        class,
        subsystem_vendor,
        subsystem_device,
        driver,
        numa_node,
    }
}

/// The driver is the last component of the `driver` symlink's target; no link
/// means no driver is bound, which is normal.
fn bound_driver(dir: &Path, address: &str, warnings: &mut Warnings) -> Option<String> {
    match std::fs::read_link(dir.join("driver")) {
        Ok(target) => target.file_name().map(|n| n.to_string_lossy().into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            warnings.push(format!(
                "cannot read the driver link of PCI function {address}: {e}"
            ));
            None
        }
    }
}

/// A 16-bit ID attribute (`vendor`, `device`).
fn read_id(path: &Path) -> io::Result<u16> {
    read_hex(path, 4).map(|v| v as u16)
}

/// Reads a sysfs hex attribute such as `0x10de` or `0x030200`.
fn read_hex(path: &Path, max_digits: usize) -> io::Result<u32> {
    let text = read_trimmed(path)?;
    parse_hex(&text, max_digits).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a hex number of at most {max_digits} digits: {text:?}"),
        )
    })
}

/// The whole value or nothing: `0x110de` is not the 16-bit `0x10de`, and a
/// sign (`+10de`), spaces or a second `0x` are not part of a sysfs number.
pub fn parse_hex(text: &str, max_digits: usize) -> Option<u32> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let valid = !digits.is_empty()
        && digits.len() <= max_digits
        && max_digits <= 8
        && digits.bytes().all(|b| b.is_ascii_hexdigit());
    valid
        .then(|| u32::from_str_radix(digits, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::parse_hex;

    #[test]
    fn hex_values_are_parsed_whole_or_refused() {
        assert_eq!(parse_hex("0x10de", 4), Some(0x10de));
        assert_eq!(parse_hex("10de", 4), Some(0x10de));
        assert_eq!(parse_hex("0x030200", 6), Some(0x030200));
        // Once truncated to 16 bits, these were NVIDIA, an H100 and a GPU.
        assert_eq!(parse_hex("0x110de", 4), None);
        assert_eq!(parse_hex("0x12330", 4), None);
        assert_eq!(parse_hex("0x1030200", 6), None);
        for bad in [
            "+10de",
            "-10de",
            "0x",
            "",
            "0x0x10de",
            "0x10 de",
            "0x10de\n0",
            "١٠",
        ] {
            assert_eq!(parse_hex(bad, 4), None, "{bad:?}");
        }
    }
}
