//! The built `nvidia_cdi_spec` binary, run as Ansible runs it, on node trees
//! made here: the real H200 capture (tests/fixtures/h200-vm) plus the device
//! files (real character devices, made with mknod; tests run as root) and
//! the driver files of the real H200 node's layout.

use serde_json::{json, Value};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nvidia_cdi_spec");
const V: &str = "580.159.04";

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cdi-spec-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(dir: &Path, args: Value) -> (i32, Value) {
    let file = dir.join("args.json");
    std::fs::write(&file, args.to_string()).unwrap();
    let out = Command::new(BIN).arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "one JSON line: {stdout:?}"
    );
    (
        out.status.code().unwrap(),
        serde_json::from_str(&stdout).unwrap(),
    )
}

fn put(root: &Path, node_path: &str, text: &str) {
    let p = root.join(node_path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn link(root: &Path, node_path: &str, target: &str) {
    let p = root.join(node_path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

fn chardev(root: &Path, node_path: &str, major: u32, minor: u32) {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    let p = root.join(node_path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    mknodat(
        CWD,
        &p,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

/// The H200 capture with the real node's layout: libraries and tools under
/// /usr/local/nvidia, a library of an older driver that must not be listed,
/// firmware, and the device files.
fn h200_node(test: &str) -> PathBuf {
    let dir = scratch(test);
    let root = dir.join("root");
    let status = Command::new("cp")
        .args([
            "-a",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/h200-vm"),
        ])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    for lib in ["libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler"] {
        put(&root, &format!("/usr/local/nvidia/lib64/{lib}.so.{V}"), lib);
        link(
            &root,
            &format!("/usr/local/nvidia/lib64/{lib}.so.1"),
            &format!("{lib}.so.{V}"),
        );
    }
    link(&root, "/usr/local/nvidia/lib64/libcuda.so", "libcuda.so.1");
    put(
        &root,
        "/usr/local/nvidia/lib64/libcuda.so.570.124.06",
        "old driver",
    );
    put(
        &root,
        &format!("/usr/local/nvidia/lib64/vdpau/libvdpau_nvidia.so.{V}"),
        "vdpau",
    );
    put(&root, "/usr/local/nvidia/bin/nvidia-smi", "#!/bin/sh\n");
    std::fs::set_permissions(
        root.join("usr/local/nvidia/bin/nvidia-smi"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    put(
        &root,
        &format!("/lib/firmware/nvidia/{V}/gsp_ga10x.bin"),
        "gsp",
    );
    put(
        &root,
        &format!("/lib/firmware/nvidia/{V}/gsp_tu10x.bin"),
        "gsp",
    );
    chardev(&root, "/dev/nvidia0", 195, 0);
    chardev(&root, "/dev/nvidiactl", 195, 255);
    chardev(&root, "/dev/nvidia-uvm", 511, 0);
    chardev(&root, "/dev/nvidia-uvm-tools", 511, 1);
    chardev(&root, "/dev/nvidia-caps/nvidia-cap1", 234, 1);
    put(&root, "/dev/nvidia-modeset", "a plain file is no device");
    dir
}

fn args(dir: &Path) -> Value {
    json!({"root": dir.join("root"), "path": dir.join("out/nvidia.yaml")})
}

fn mount(path: &str) -> Value {
    json!({"hostPath": path, "containerPath": path, "options": ["ro", "nosuid", "nodev", "rbind", "rprivate"]})
}

#[test]
fn the_h200_node_gets_its_devices_libraries_tools_and_firmware() {
    let dir = h200_node("h200");
    let (code, r) = run(&dir, args(&dir));
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["changed"], json!(true));
    let uuid = "GPU-00000000-0000-0000-0000-000000000000";
    assert_eq!(
        r["devices"],
        json!([
            "nvidia.com/gpu=0",
            format!("nvidia.com/gpu={uuid}"),
            "nvidia.com/gpu=all"
        ])
    );
    let spec = &r["spec"];
    assert_eq!(spec["cdiVersion"], json!("0.5.0"));
    assert_eq!(spec["kind"], json!("nvidia.com/gpu"));
    assert_eq!(
        spec["devices"][0],
        json!({"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0"}]}})
    );
    assert_eq!(
        spec["containerEdits"]["deviceNodes"],
        json!([{"path": "/dev/nvidiactl"}, {"path": "/dev/nvidia-uvm"},
               {"path": "/dev/nvidia-uvm-tools"}, {"path": "/dev/nvidia-caps/nvidia-cap1"}])
    );
    let l = "/usr/local/nvidia/lib64";
    assert_eq!(
        spec["containerEdits"]["mounts"],
        json!([
            mount(&format!("{l}/libcuda.so")),
            mount(&format!("{l}/libcuda.so.1")),
            mount(&format!("{l}/libcuda.so.{V}")),
            mount(&format!("{l}/libnvidia-ml.so.1")),
            mount(&format!("{l}/libnvidia-ml.so.{V}")),
            mount(&format!("{l}/libnvidia-ptxjitcompiler.so.1")),
            mount(&format!("{l}/libnvidia-ptxjitcompiler.so.{V}")),
            mount(&format!("{l}/vdpau/libvdpau_nvidia.so.{V}")),
            mount("/usr/local/nvidia/bin/nvidia-smi"),
            mount(&format!("/lib/firmware/nvidia/{V}/gsp_ga10x.bin")),
            mount(&format!("/lib/firmware/nvidia/{V}/gsp_tu10x.bin")),
        ])
    );
    let written = std::fs::read_to_string(dir.join("out/nvidia.yaml")).unwrap();
    assert!(written.starts_with(
        "# Written by the nvidia_cdi_spec Ansible module for NVIDIA driver 580.159.04, 1 GPU(s).\n"
    ));
    // Second run: nothing moves.
    let (_, again) = run(&dir, args(&dir));
    assert_eq!(again["changed"], json!(false));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/nvidia.yaml")).unwrap(),
        written
    );
}

#[test]
fn check_mode_shows_the_diff_and_writes_nothing() {
    let dir = h200_node("check");
    let mut a = args(&dir);
    a["_ansible_check_mode"] = json!(true);
    a["_ansible_diff"] = json!(true);
    let (code, r) = run(&dir, a);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["changed"], json!(true));
    assert!(r["diff"][0]["after"]
        .as_str()
        .unwrap()
        .contains("/dev/nvidia0"));
    assert!(!dir.join("out").exists(), "check mode writes nothing");
}

#[test]
fn a_node_without_the_driver_gets_a_clear_answer_and_no_file() {
    let dir = h200_node("nodriver");
    std::fs::remove_dir_all(dir.join("root/sys/module/nvidia")).unwrap();
    let (code, r) = run(&dir, args(&dir));
    assert_eq!(code, 1);
    assert_eq!(
        r["msg"],
        json!(
            "no NVIDIA driver is loaded on this node: a CDI spec lists the running driver's \
               device files and libraries, so there is nothing to write. Load the driver first \
               (site.yml -e install_gpu_driver=true), or leave this node out"
        )
    );
    assert!(!dir.join("out").exists());
}

#[test]
fn missing_device_files_fail_and_keep_the_old_spec() {
    let dir = h200_node("nodev");
    put(&dir, "out/nvidia.yaml", "old spec\n");
    std::fs::remove_file(dir.join("root/dev/nvidia0")).unwrap();
    let (code, r) = run(&dir, args(&dir));
    assert_eq!(code, 1);
    assert!(
        r["msg"].as_str().unwrap().starts_with(
            "the NVIDIA driver is loaded but its device files /dev/nvidia0 do not exist"
        ),
        "{r}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/nvidia.yaml")).unwrap(),
        "old spec\n"
    );
}

#[test]
fn libraries_elsewhere_are_found_through_ld_so_conf_or_library_dirs() {
    let dir = h200_node("ldconf");
    let root = dir.join("root");
    std::fs::remove_dir_all(root.join("usr/local/nvidia/lib64")).unwrap();
    let (code, r) = run(&dir, args(&dir));
    assert_eq!(code, 1);
    assert!(r["msg"].as_str().unwrap().starts_with(
        "no library of the running driver 580.159.04 (lib*.so.580.159.04) in /usr/local/nvidia/lib64, "
    ));
    put(&root, &format!("/opt/nv/lib/libcuda.so.{V}"), "cuda");
    put(
        &root,
        "/etc/ld.so.conf",
        "include /etc/ld.so.conf.d/*.conf\n",
    );
    put(
        &root,
        "/etc/ld.so.conf.d/nvidia.conf",
        "# the driver\n/opt/nv/lib\n",
    );
    let (code, r) = run(&dir, args(&dir));
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        r["spec"]["containerEdits"]["mounts"][0],
        mount(&format!("/opt/nv/lib/libcuda.so.{V}"))
    );
    std::fs::remove_file(root.join("etc/ld.so.conf")).unwrap();
    let mut a = args(&dir);
    a["library_dirs"] = json!(["/opt/nv/lib/"]);
    let (code, r) = run(&dir, a);
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        r["changed"],
        json!(false),
        "the same spec as through ld.so.conf"
    );
}

#[test]
fn absent_removes_the_spec_once() {
    let dir = h200_node("absent");
    run(&dir, args(&dir));
    let mut a = args(&dir);
    a["state"] = json!("absent");
    let (_, r) = run(&dir, a.clone());
    assert_eq!(r["changed"], json!(true));
    assert!(!dir.join("out/nvidia.yaml").exists());
    let (_, r) = run(&dir, a);
    assert_eq!(r["changed"], json!(false));
}

#[test]
fn a_root_that_is_no_folder_and_an_unwritable_path_are_named() {
    let dir = scratch("badpaths");
    let (code, r) = run(&dir, json!({"root": dir.join("nowhere")}));
    assert_eq!(code, 1);
    assert_eq!(
        r["msg"],
        json!(format!(
            "root {} is not a directory: it must be the filesystem to inspect, / on a node",
            dir.join("nowhere").display()
        ))
    );
    let node = h200_node("unwritable");
    std::fs::write(node.join("file"), "a file, not a folder").unwrap();
    let target = node.join("file/nvidia.yaml");
    let (code, r) = run(&node, json!({"root": node.join("root"), "path": target}));
    assert_eq!(code, 1);
    let msg = r["msg"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("cannot write the CDI spec {}: ", target.display()))
            && msg.ends_with("; the file was left as it was"),
        "{msg}"
    );
}
