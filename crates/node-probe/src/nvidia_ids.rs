//! What NVIDIA PCI device IDs mean: marketing names of common data-center and
//! workstation GPUs, and the architecture of any GPU ID.
//!
//! Names follow what `nvidia-smi` prints. Sources: NVIDIA's open-gpu-kernel-modules
//! README ("Compatible GPUs" table, release 580) and the pci.ids database. The
//! table is short on purpose: it names the boards people put in clusters, and
//! everything else falls through to the node's own pci.ids, or to null.

/// GPU architectures, oldest first; `Ord` follows release order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Architecture {
    Maxwell,
    Pascal,
    Volta,
    Turing,
    Ampere,
    Ada,
    Hopper,
    Blackwell,
}

impl Architecture {
    pub const fn name(self) -> &'static str {
        match self {
            Architecture::Maxwell => "maxwell",
            Architecture::Pascal => "pascal",
            Architecture::Volta => "volta",
            Architecture::Turing => "turing",
            Architecture::Ampere => "ampere",
            Architecture::Ada => "ada",
            Architecture::Hopper => "hopper",
            Architecture::Blackwell => "blackwell",
        }
    }
}

/// The architecture of an NVIDIA GPU device ID, from the ID ranges each chip
/// family was given. `None` for IDs older than Maxwell or not yet known.
pub fn architecture(device: u16) -> Option<Architecture> {
    use Architecture::*;
    Some(match device >> 8 {
        0x13 if device >= 0x1340 => Maxwell,
        0x14 | 0x16 | 0x17 => Maxwell,
        0x15 | 0x1b | 0x1c => Pascal,
        // GP108 (GT 1030, MX150) sits below GV100 in the same range.
        0x1d if device < 0x1d80 => Pascal,
        0x1d => Volta,
        0x1e | 0x1f | 0x21 => Turing,
        0x20 | 0x22 | 0x24 | 0x25 => Ampere,
        0x23 => Hopper,
        0x26..=0x28 => Ada,
        0x29 | 0x2b..=0x2f | 0x31 => Blackwell,
        _ => return None,
    })
}

/// `(device, subsystem device or 0 for any, name)`. Entries whose name
/// depends on the board carry the subsystem ID.
const NAMES: &[(u16, u16, &str)] = &[
    // Blackwell
    (0x2901, 0, "NVIDIA B200"),
    (0x2909, 0, "NVIDIA B200"),
    (0x2941, 0, "NVIDIA GB200"),
    (0x3182, 0, "NVIDIA B300 SXM6 AC"),
    (0x31c2, 0, "NVIDIA GB300"),
    (0x31c3, 0, "NVIDIA GB300"),
    (
        0x2bb1,
        0,
        "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
    ),
    (0x2bb5, 0, "NVIDIA RTX PRO 6000 Blackwell Server Edition"),
    (0x2e12, 0, "NVIDIA GB10"),
    // Hopper
    (0x2330, 0, "NVIDIA H100 80GB HBM3"),
    (0x2331, 0, "NVIDIA H100 PCIe"),
    (0x2321, 0, "NVIDIA H100 NVL"),
    (0x2339, 0, "NVIDIA H100"),
    (0x2322, 0, "NVIDIA H800 PCIe"),
    (0x2324, 0, "NVIDIA H800"),
    (0x233a, 0, "NVIDIA H800 NVL"),
    (0x2329, 0, "NVIDIA H20"),
    (0x232c, 0, "NVIDIA H20-3e"),
    (0x2335, 0, "NVIDIA H200"),
    (0x233b, 0, "NVIDIA H200 NVL"),
    (0x2342, 0x16eb, "NVIDIA GH200 120GB"),
    (0x2342, 0x1805, "NVIDIA GH200 120GB"),
    (0x2342, 0x1809, "NVIDIA GH200 480GB"),
    (0x2348, 0, "NVIDIA GH200 144G HBM3e"),
    // Ada
    (0x26b5, 0, "NVIDIA L40"),
    (0x26b9, 0, "NVIDIA L40S"),
    (0x26ba, 0, "NVIDIA L20"),
    (0x27b8, 0, "NVIDIA L4"),
    (0x27b6, 0, "NVIDIA L2"),
    (0x26b1, 0, "NVIDIA RTX 6000 Ada Generation"),
    (0x26b2, 0, "NVIDIA RTX 5000 Ada Generation"),
    (0x27b1, 0, "NVIDIA RTX 4500 Ada Generation"),
    (0x27b2, 0, "NVIDIA RTX 4000 Ada Generation"),
    // Ampere
    (0x20b0, 0, "NVIDIA A100-SXM4-40GB"),
    (0x20b2, 0, "NVIDIA A100-SXM4-80GB"),
    (0x20b3, 0, "NVIDIA A100-SXM-64GB"),
    (0x20b5, 0, "NVIDIA A100 80GB PCIe"),
    (0x20f1, 0, "NVIDIA A100-PCIE-40GB"),
    (0x20b7, 0, "NVIDIA A30"),
    (0x20f3, 0, "NVIDIA A800-SXM4-80GB"),
    (0x20f5, 0, "NVIDIA A800 80GB PCIe"),
    (0x2235, 0, "NVIDIA A40"),
    (0x2236, 0, "NVIDIA A10"),
    (0x2237, 0, "NVIDIA A10G"),
    (0x25b6, 0x14a9, "NVIDIA A16"),
    (0x25b6, 0x157e, "NVIDIA A2"),
    (0x2230, 0, "NVIDIA RTX A6000"),
    (0x2231, 0, "NVIDIA RTX A5000"),
    (0x24b0, 0, "NVIDIA RTX A4000"),
    // Turing
    (0x1eb8, 0, "Tesla T4"),
    // Volta
    (0x1db1, 0, "Tesla V100-SXM2-16GB"),
    (0x1db4, 0, "Tesla V100-PCIE-16GB"),
    (0x1db5, 0, "Tesla V100-SXM2-32GB"),
    (0x1db6, 0, "Tesla V100-PCIE-32GB"),
    (0x1db8, 0, "Tesla V100-SXM3-32GB"),
    (0x1df6, 0, "Tesla V100S-PCIE-32GB"),
    // Pascal
    (0x15f7, 0, "Tesla P100-PCIE-12GB"),
    (0x15f8, 0, "Tesla P100-PCIE-16GB"),
    (0x15f9, 0, "Tesla P100-SXM2-16GB"),
    (0x1b38, 0, "Tesla P40"),
    (0x1bb3, 0, "Tesla P4"),
];

/// The built-in name of a GPU, when the table knows the board.
pub fn builtin_name(device: u16, subsystem_device: Option<u16>) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(id, sub, _)| *id == device && (*sub == 0 || Some(*sub) == subsystem_device))
        .map(|(_, _, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_of_known_boards() {
        assert_eq!(architecture(0x2335), Some(Architecture::Hopper)); // H200
        assert_eq!(architecture(0x2342), Some(Architecture::Hopper)); // GH200
        assert_eq!(architecture(0x2901), Some(Architecture::Blackwell)); // B200
        assert_eq!(architecture(0x20b2), Some(Architecture::Ampere)); // A100
        assert_eq!(architecture(0x26b9), Some(Architecture::Ada)); // L40S
        assert_eq!(architecture(0x1eb8), Some(Architecture::Turing)); // T4
        assert_eq!(architecture(0x1e07), Some(Architecture::Turing)); // RTX 2080 Ti
        assert_eq!(architecture(0x1db5), Some(Architecture::Volta)); // V100
        assert_eq!(architecture(0x1d01), Some(Architecture::Pascal)); // GT 1030
        assert_eq!(architecture(0x15f8), Some(Architecture::Pascal)); // P100
        assert_eq!(architecture(0x13f2), Some(Architecture::Maxwell)); // Tesla M60
        assert_eq!(architecture(0x1023), None); // Kepler K40m: too old
    }

    #[test]
    fn names_need_the_subsystem_only_where_boards_share_an_id() {
        assert_eq!(builtin_name(0x2335, Some(0x18bf)), Some("NVIDIA H200"));
        assert_eq!(builtin_name(0x25b6, Some(0x157e)), Some("NVIDIA A2"));
        assert_eq!(builtin_name(0x25b6, Some(0x1234)), None);
        assert_eq!(builtin_name(0x2342, None), None);
        assert_eq!(builtin_name(0x1e07, None), None);
    }
}
