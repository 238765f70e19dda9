//! Detection on the real H200 capture and on the synthetic profiles of
//! tests/fixtures (see make_profiles.py there).

mod common;

use common::{copy_tree, fixture};
use node_probe::gpu::{detect, Detection};
use node_probe::kernel::ModuleType;
use node_probe::nvidia_ids::Architecture;
use node_probe::Root;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn detect_fixture(name: &str) -> Detection {
    detect(&Root::new(fixture(name)))
}

/// A writable copy of a fixture, for tests that break it.
fn copy_of(name: &str, test: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("node-probe-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dst);
    copy_tree(&fixture(name), &dst);
    dst
}

#[test]
fn h200_capture_is_one_h200_on_the_open_driver() {
    let d = detect_fixture("h200-vm");
    assert_eq!(d.gpus.len(), 1);
    let gpu = &d.gpus[0];
    assert_eq!(gpu.pci.address, "0000:00:06.0");
    assert_eq!(gpu.pci.device, Some(0x2335));
    assert_eq!(gpu.pci.class, Some(0x030200));
    assert_eq!(gpu.name.as_deref(), Some("NVIDIA H200"));
    assert_eq!(gpu.architecture, Some(Architecture::Hopper));
    assert_eq!(gpu.pci.driver.as_deref(), Some("nvidia"));
    assert_eq!(gpu.pci.numa_node, None, "numa_node -1 means no affinity");
    assert!(d.nvswitches.is_empty());
    assert!(d.driver.loaded);
    assert_eq!(d.driver.version.as_deref(), Some("580.159.04"));
    assert_eq!(d.driver.module_type, Some(ModuleType::Open));
    assert!(!d.nouveau_loaded);
    assert_eq!(d.warnings, Vec::<String>::new());
}

#[test]
fn hgx_board_counts_gpus_not_nvswitches() {
    let d = detect_fixture("hgx-h100");
    assert_eq!(d.gpus.len(), 8);
    assert_eq!(d.nvswitches.len(), 4);
    assert!(d
        .gpus
        .iter()
        .all(|g| g.name.as_deref() == Some("NVIDIA H100 80GB HBM3")));
    assert_eq!(
        d.gpus.iter().filter(|g| g.pci.numa_node == Some(1)).count(),
        4
    );
    assert!(d
        .nvswitches
        .iter()
        .all(|s| s.driver.as_deref() == Some("nvidia-nvswitch")));
    assert_eq!(d.driver.version.as_deref(), Some("570.124.06"));
    assert_eq!(d.warnings, Vec::<String>::new());
}

#[test]
fn consumer_card_is_one_gpu_not_its_audio_usb_and_serial_functions() {
    let d = detect_fixture("consumer");
    assert_eq!(d.gpus.len(), 1);
    assert_eq!(d.other_functions.len(), 3);
    let gpu = &d.gpus[0];
    assert_eq!(gpu.pci.driver.as_deref(), Some("nouveau"));
    assert_eq!(gpu.architecture, Some(Architecture::Turing));
    // Not in the built-in table, no driver: the node's pci.ids names it.
    assert_eq!(
        gpu.name.as_deref(),
        Some("TU102 [GeForce RTX 2080 Ti Rev. A]")
    );
    assert!(d.nouveau_loaded);
    assert!(!d.driver.loaded);
    assert_eq!(d.driver.version, None);
}

#[test]
fn gpu_bound_to_vfio_is_counted_and_named_from_the_builtin_table() {
    let d = detect_fixture("vfio");
    assert_eq!(d.gpus.len(), 1);
    assert_eq!(d.gpus[0].pci.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(d.gpus[0].name.as_deref(), Some("NVIDIA A100 80GB PCIe"));
    assert!(!d.driver.loaded);
}

#[test]
fn amd_gpu_and_cpu_node_have_no_nvidia_gpu() {
    for profile in ["amd", "cpu"] {
        let d = detect_fixture(profile);
        assert!(d.gpus.is_empty(), "{profile}");
        assert!(d.nvswitches.is_empty(), "{profile}");
        assert_eq!(d.warnings, Vec::<String>::new(), "{profile}");
    }
}

#[test]
fn unknown_gpu_without_driver_or_pci_ids_has_a_null_name() {
    let root = copy_of("consumer", "noname");
    fs::remove_file(root.join("usr/share/misc/pci.ids")).unwrap();
    let d = detect(&Root::new(&root));
    assert_eq!(d.gpus.len(), 1);
    assert_eq!(d.gpus[0].name, None);
}

#[test]
fn unreadable_attributes_degrade_to_null_with_a_warning() {
    let root = copy_of("hgx-h100", "unreadable");
    let devices = root.join("sys/bus/pci/devices");
    // A directory where a file should be fails to read, even for root.
    fs::remove_file(devices.join("0000:18:00.0/numa_node")).unwrap();
    fs::create_dir(devices.join("0000:18:00.0/numa_node")).unwrap();
    // A GPU without a class is still counted when its device ID is known.
    fs::remove_file(devices.join("0000:2a:00.0/class")).unwrap();
    // A function whose vendor cannot be read is skipped.
    fs::remove_file(devices.join("0000:3a:00.0/vendor")).unwrap();
    fs::remove_file(devices.join("0000:5d:00.0/driver")).unwrap();

    let d = detect(&Root::new(&root));
    assert_eq!(d.gpus.len(), 7);
    let by_address = |a: &str| d.gpus.iter().find(|g| g.pci.address == a).unwrap();
    assert_eq!(by_address("0000:18:00.0").pci.numa_node, None);
    assert_eq!(by_address("0000:2a:00.0").pci.class, None);
    assert_eq!(
        by_address("0000:5d:00.0").pci.driver,
        None,
        "no link: unbound, not an error"
    );
    assert_eq!(d.warnings.len(), 3, "{:#?}", d.warnings);
    assert!(d.warnings[0].contains("numa_node of PCI function 0000:18:00.0"));
    assert!(d.warnings[1].contains("class of PCI function 0000:2a:00.0"));
    assert!(d.warnings[2].contains("vendor of PCI function 0000:3a:00.0"));
}

#[test]
fn missing_pci_bus_is_a_warning_not_a_failure() {
    let root = copy_of("cpu", "nobus");
    fs::remove_dir_all(root.join("sys/bus")).unwrap();
    let d = detect(&Root::new(&root));
    assert!(d.gpus.is_empty());
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].contains("no PCI bus is visible"),
        "{}",
        d.warnings[0]
    );
}

#[test]
fn container_runtime_is_found_only_when_executable() {
    let root = copy_of("cpu", "runtime");
    let bin = root.join("usr/local/nvidia/toolkit/nvidia-container-runtime");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::write(&bin, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(detect(&Root::new(&root)).container_runtime_path, None);
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        detect(&Root::new(&root)).container_runtime_path.as_deref(),
        Some("/usr/local/nvidia/toolkit/nvidia-container-runtime")
    );
}

/// A PCI function with the given attributes, added to a copy of a profile.
fn add_function(root: &Path, address: &str, attrs: &[(&str, &str)]) {
    let dir = root.join("sys/bus/pci/devices").join(address);
    fs::create_dir_all(&dir).unwrap();
    for (name, value) in attrs {
        fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
}

#[test]
fn hex_attributes_are_parsed_whole_not_truncated_to_16_bits() {
    let root = copy_of("cpu", "wide-hex");
    // Truncated to 16 bits each of these was an NVIDIA GPU (an H100 for the second).
    add_function(
        &root,
        "0000:a1:00.0",
        &[
            ("vendor", "0x110de"),
            ("device", "0x2330"),
            ("class", "0x030200"),
        ],
    );
    add_function(
        &root,
        "0000:a2:00.0",
        &[
            ("vendor", "0x10de"),
            ("device", "0x12330"),
            ("class", "0x068000"),
        ],
    );
    add_function(
        &root,
        "0000:a3:00.0",
        &[
            ("vendor", "0x10de"),
            ("device", "0x1234"),
            ("class", "0x1030200"),
        ],
    );
    add_function(
        &root,
        "0000:a4:00.0",
        &[
            ("vendor", "+10de"),
            ("device", "0x2330"),
            ("class", "0x030200"),
        ],
    );
    let d = detect(&Root::new(&root));
    assert!(d.gpus.is_empty(), "{:#?}", d.gpus);
    let warned = |needle: &str| d.warnings.iter().any(|w| w.contains(needle));
    assert!(
        warned("vendor of PCI function 0000:a1:00.0"),
        "{:#?}",
        d.warnings
    );
    assert!(
        warned("device of PCI function 0000:a2:00.0"),
        "{:#?}",
        d.warnings
    );
    assert!(
        warned("class of PCI function 0000:a3:00.0"),
        "{:#?}",
        d.warnings
    );
    assert!(
        warned("vendor of PCI function 0000:a4:00.0"),
        "{:#?}",
        d.warnings
    );
}

/// `detect`, failing the test instead of hanging it.
fn detect_within(root: &Path, limit: std::time::Duration) -> Detection {
    let (tx, rx) = std::sync::mpsc::channel();
    let root = root.to_path_buf();
    std::thread::spawn(move || tx.send(detect(&Root::new(root))).unwrap());
    rx.recv_timeout(limit)
        .expect("detection did not finish: it blocked on a file")
}

#[test]
fn a_fifo_or_an_oversize_attribute_is_a_warning_not_a_hang() {
    let root = copy_of("h200-vm", "fifo");
    let gpu = root.join("sys/bus/pci/devices/0000:00:06.0");
    fs::remove_file(gpu.join("vendor")).unwrap();
    let status = Command::new("mkfifo")
        .arg(gpu.join("vendor"))
        .status()
        .unwrap();
    assert!(status.success());
    let other = root.join("sys/bus/pci/devices/0000:00:01.0");
    fs::write(other.join("vendor"), "0".repeat(1 << 20)).unwrap();
    let d = detect_within(&root, std::time::Duration::from_secs(20));
    assert!(d.gpus.is_empty());
    let joined = d.warnings.join("\n");
    assert!(
        joined.contains("vendor of PCI function 0000:00:06.0")
            && joined.contains("not a regular file"),
        "{joined}"
    );
    assert!(
        joined.contains("vendor of PCI function 0000:00:01.0") && joined.contains("larger than"),
        "{joined}"
    );
}

#[test]
fn ten_thousand_pci_functions_are_read_and_the_gpus_among_them_counted() {
    let root = copy_of("cpu", "many");
    for i in 0..10_000u32 {
        let address = format!(
            "{:04x}:{:02x}:{:02x}.{}",
            i >> 13,
            (i >> 5) & 0xff,
            (i >> 3) & 0x3,
            i & 0x7
        );
        let (vendor, class) = if i % 1000 == 0 {
            ("0x10de", "0x030200")
        } else {
            ("0x8086", "0x060400")
        };
        add_function(
            &root,
            &address,
            &[("vendor", vendor), ("device", "0x2330"), ("class", class)],
        );
    }
    let d = detect_within(&root, std::time::Duration::from_secs(120));
    assert_eq!(d.gpus.len(), 10);
}
