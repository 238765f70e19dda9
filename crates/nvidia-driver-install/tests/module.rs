//! The built module, run the way Ansible runs it (`MODULE ARGS_FILE`), on
//! copies of the fixture nodes, with tests/fixtures/fake-nvidia-installer.sh
//! in place of NVIDIA's installer and a PATH that holds only what each test
//! puts there.

// The fixture nodes, shared with node-probe's tests.
#[path = "../../node-probe/tests/common/mod.rs"]
mod common;

use common::copy_tree;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODULE: &str = env!("CARGO_BIN_EXE_nvidia_driver_install");
const ARCH: &str = std::env::consts::ARCH;
const UBUNTU_KERNEL: &str = "6.8.0-45-generic";
const ROCKY_KERNEL: &str = "5.14.0-427.13.1.el9_4.x86_64";
/// The tools the stand-in installer uses besides the shell.
const HOST_TOOLS: &[&str] = &["sh", "mkdir", "date", "sleep", "uname"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A node for one test: `root/` (a copy of a fixture), `bin/` (its PATH),
/// `installers/` and the args files.
struct Node {
    dir: PathBuf,
    root: PathBuf,
    bin: PathBuf,
}

#[derive(Clone, Copy, PartialEq)]
enum Os {
    Ubuntu,
    Rocky,
}

impl Node {
    /// A copy of `fixture` that is ready for an install: the running kernel's
    /// release and headers, an os-release, a compiler, make and dkms.
    fn new(test: &str, fixture: &str, os: Os) -> Node {
        let dir = std::env::temp_dir().join(format!(
            "nvidia-driver-install-{test}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("root");
        copy_tree(&common::fixture(fixture), &root);
        let node = Node {
            bin: dir.join("bin"),
            dir,
            root,
        };
        fs::create_dir_all(&node.bin).unwrap();
        fs::create_dir_all(node.dir.join("tmp")).unwrap();
        for tool in HOST_TOOLS {
            let host = ["/bin", "/usr/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("the host has no {tool}"));
            symlink(host, node.bin.join(tool)).unwrap();
        }
        let release = match os {
            Os::Ubuntu => UBUNTU_KERNEL,
            Os::Rocky => ROCKY_KERNEL,
        };
        node.write("/proc/sys/kernel/osrelease", &format!("{release}\n"));
        if !node.root.join("etc/os-release").exists() {
            node.write(
                "/etc/os-release",
                match os {
                    Os::Ubuntu => "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n",
                    Os::Rocky => {
                        "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n"
                    }
                },
            );
        }
        node.write(&format!("/lib/modules/{release}/build/Makefile"), "");
        // Booted an hour ago.
        let boot = now_secs() - 3600;
        node.write("/proc/stat", &format!("cpu 1 2 3 4\nbtime {boot}\n"));
        for tool in ["cc", "make", "dkms"] {
            node.tool(tool, "exit 0");
        }
        node
    }

    fn write(&self, node_path: &str, content: &str) {
        let path = self.root.join(node_path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn remove(&self, node_path: &str) {
        let path = self.root.join(node_path.trim_start_matches('/'));
        fs::remove_dir_all(&path)
            .or_else(|_| fs::remove_file(&path))
            .unwrap();
    }

    fn read(&self, node_path: &str) -> Option<String> {
        fs::read_to_string(self.root.join(node_path.trim_start_matches('/'))).ok()
    }

    /// A program on the node's PATH that records each call and runs `body`.
    fn tool(&self, name: &str, body: &str) {
        let path = self.bin.join(name);
        fs::write(
            &path,
            format!(
                "#!/bin/sh\nmkdir -p \"$FAKE_NVIDIA_ROOT/var/lib/fake-tools\"\n\
                 echo \"{name} $*\" >>\"$FAKE_NVIDIA_ROOT/var/lib/fake-tools/calls\"\n{body}\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn untool(&self, name: &str) {
        fs::remove_file(self.bin.join(name)).unwrap();
    }

    /// An `nvidia-smi` that answers from the node's /sys/module/nvidia/version.
    fn nvidia_smi(&self) {
        self.tool(
            "nvidia-smi",
            "v=\"$FAKE_NVIDIA_ROOT/sys/module/nvidia/version\"\n\
             if [ -r \"$v\" ]; then read -r version <\"$v\"; echo \"$version\"; exit 0; fi\n\
             echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\n\
             exit 9",
        );
    }

    /// The stand-in installer, copied under the real installer's name.
    fn installer(&self, version: &str) -> PathBuf {
        let dir = self.dir.join("installers");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("NVIDIA-Linux-{ARCH}-{version}.run"));
        fs::copy(fixtures().join("fake-nvidia-installer.sh"), &path).unwrap();
        path
    }

    /// The programs the test tools recorded.
    fn tool_calls(&self) -> Vec<String> {
        lines(self.read("/var/lib/fake-tools/calls"))
    }

    /// The stand-in installer's start and end lines.
    fn installer_calls(&self) -> Vec<String> {
        lines(self.read("/var/lib/fake-nvidia-installer/calls"))
    }

    /// Starts the module with `args` (plus the node's root and a small
    /// min_free_mb, so that the test machine's free space does not matter).
    fn spawn(&self, name: &str, args: Value, env: &[(&str, &str)]) -> Child {
        let mut all = json!({
            "root": self.root,
            "min_free_mb": 1,
            "_ansible_module_name": "nvidia_driver_install",
        });
        for (k, v) in args.as_object().unwrap() {
            all[k] = v.clone();
        }
        let args_file = self.dir.join(format!("{name}.json"));
        fs::write(&args_file, all.to_string()).unwrap();
        Command::new(MODULE)
            .arg(&args_file)
            .env_clear()
            .env("PATH", &self.bin)
            .env("FAKE_NVIDIA_ROOT", &self.root)
            .env("TMPDIR", self.tmp())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The node's TMPDIR, where the module makes its private copy of the installer.
    fn tmp(&self) -> PathBuf {
        let tmp = self.dir.join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        tmp
    }

    /// The private copies of the installer left in TMPDIR.
    fn staged_copies(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.tmp())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn run(&self, args: Value) -> Value {
        let child = self.spawn("args", args, &[]);
        result(child)
    }

    /// Every file, link and directory under the test's folder but the args
    /// files, for comparing before and after.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        walk(&self.dir, &self.dir, &mut files);
        files.retain(|path, _| path.extension().is_none_or(|e| e != "json"));
        files
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Names the paths that differ, rather than printing two trees of bytes.
fn assert_unchanged(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    assert!(
        changed.is_empty(),
        "changed, created or removed: {changed:?}"
    );
}

fn result(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failed = value["failed"].as_bool().unwrap();
    assert_eq!(out.status.code(), Some(i32::from(failed)), "{value:#}");
    value
}

fn walk(base: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path.strip_prefix(base).unwrap().to_path_buf();
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let target = fs::read_link(&path).unwrap();
            files.insert(rel, target.to_string_lossy().as_bytes().to_vec());
        } else if kind.is_dir() {
            files.insert(rel, b"<dir>".to_vec());
            walk(base, &path, files);
        } else {
            files.insert(rel, fs::read(&path).unwrap());
        }
    }
}

fn lines(text: Option<String>) -> Vec<String> {
    text.unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sha256(path: &Path) -> String {
    nvidia_driver::checksum::sha256_file(path).unwrap()
}

fn check<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no pre-flight check {name}: {result:#}"))
}

fn msg(result: &Value) -> &str {
    result["msg"].as_str().unwrap()
}

#[test]
fn installs_the_driver_and_sets_the_facts() {
    let node = Node::new("install", "vfio", Os::Rocky);
    node.nvidia_smi();
    let installer = node.installer("580.95.05");
    let r = node.run(json!({
        "version": "580.95.05",
        "installer": installer,
        "checksum": format!("sha256:{}", sha256(&installer)),
    }));
    assert_eq!(r["failed"], false, "{r:#}");
    assert_eq!(r["changed"], true);
    assert_eq!(
        r["ansible_facts"],
        json!({"nvidia_driver_version": "580.95.05"})
    );
    assert_eq!(r["installed_version_before"], Value::Null);
    assert_eq!(r["reboot_required"], false);
    assert_eq!(r["kernel_module_type"], "open");
    assert!(
        r["kernel_module_type_reason"]
            .as_str()
            .unwrap()
            .contains("Ampere GPU 0000:3b:00.0 (10de:20b5)"),
        "{r:#}"
    );
    assert_eq!(
        msg(&r),
        "installed NVIDIA driver 580.95.05 (open kernel modules, registered with DKMS)"
    );
    // The private copy ran, under the installer's own name, and is gone.
    let ran = r["command"][1].as_str().unwrap();
    assert!(
        ran.starts_with(node.tmp().join("nvidia-driver-install.").to_str().unwrap()),
        "{ran}"
    );
    assert!(ran.ends_with("/NVIDIA-Linux-x86_64-580.95.05.run"), "{ran}");
    assert_eq!(r["installer_sha256"], sha256(&installer));
    assert_eq!(node.staged_copies(), Vec::<String>::new());
    let command = json!([
        "sh",
        ran,
        "--silent",
        "--no-questions",
        "--ui=none",
        "--log-file-name=/var/log/nvidia-installer.log",
        "--kernel-module-type=open",
        "--dkms",
    ]);
    assert_eq!(r["command"], command);
    assert_eq!(r["commands"][0], command);
    assert_eq!(
        r["commands"][1],
        json!([
            node.bin.join("nvidia-smi"),
            "--query-gpu=driver_version",
            "--format=csv,noheader"
        ])
    );
    assert!(
        r["preflight"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{r:#}"
    );
    let names: Vec<&str> = r["preflight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "installer",
            "checksum",
            "kernel_module_type",
            "nouveau",
            "kernel_headers",
            "compiler",
            "make",
            "dkms",
            "secure_boot",
            "free_space",
            "other_installer"
        ]
    );
    assert_eq!(
        node.read("/sys/module/nvidia/version").as_deref(),
        Some("580.95.05\n")
    );
    assert!(node
        .read("/proc/driver/nvidia/version")
        .unwrap()
        .starts_with(&format!(
            "NVRM version: NVIDIA UNIX Open Kernel Module for {ARCH}  580.95.05"
        )));
    assert!(node
        .read("/var/log/nvidia-installer.log")
        .unwrap()
        .contains("is now complete."));
    assert_eq!(node.installer_calls().len(), 2, "one start, one end");

    // Run again: the version is installed now.
    let again = node.run(json!({"version": "580.95.05", "installer": installer}));
    assert_eq!(again["changed"], false, "{again:#}");
    assert_eq!(again["installed_version_before"], "580.95.05");
    assert_eq!(
        node.installer_calls().len(),
        2,
        "the installer did not run again"
    );
}

#[test]
fn a_failed_installer_reports_its_exit_status_and_log_tail() {
    let node = Node::new("fail", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    node.write(
        &format!("/var/lib/fake-nvidia-installer/NVIDIA-Linux-{ARCH}-580.95.05.run.fail"),
        "",
    );
    let marker = node.root.join(format!(
        "var/lib/fake-nvidia-installer/NVIDIA-Linux-{ARCH}-580.95.05.run.fail"
    ));
    fs::write(
        &marker,
        "error: 'struct vm_area_struct' has no member named 'vm_flags'\n",
    )
    .unwrap();
    let r = node.run(json!({"version": "580.95.05", "installer": installer}));
    assert_eq!(r["failed"], true, "{r:#}");
    assert_eq!(r["rc"], 1);
    let tail: Vec<&str> = r["installer_log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(tail.len(), 40);
    assert!(
        tail[39].starts_with("ERROR: Installation has failed."),
        "{tail:#?}"
    );
    assert!(tail
        .iter()
        .any(|l| l.ends_with("error: 'struct vm_area_struct' has no member named 'vm_flags'")));
    assert!(
        msg(&r).starts_with(
            "the NVIDIA installer failed (exit status 1): ERROR: An error occurred while \
             performing the step: \"Building kernel modules\"."
        ),
        "{}",
        msg(&r)
    );
    assert!(msg(&r).contains(". Last lines of /var/log/nvidia-installer.log:\n"));
    assert!(msg(&r).ends_with(tail[39]));
    assert!(r.get("ansible_facts").is_none());
    assert_eq!(node.read("/sys/module/nvidia/version"), None);
}

#[test]
fn an_option_the_installer_does_not_know_fails_in_its_own_words() {
    let node = Node::new("badopt", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let r = node.run(json!({
        "version": "580.95.05",
        "installer": installer,
        "extra_args": ["--no-such-option"],
    }));
    assert_eq!(r["failed"], true, "{r:#}");
    assert_eq!(r["rc"], 1);
    assert_eq!(r["installer_log_tail"], json!([]));
    assert!(
        msg(&r).starts_with(
            "the NVIDIA installer failed (exit status 1): nvidia-installer: unrecognized \
             option: \"--no-such-option\". It wrote no log to /var/log/nvidia-installer.log; \
             its last output:\n"
        ),
        "{}",
        msg(&r)
    );
}

#[test]
fn the_installed_version_changes_nothing_and_runs_nothing() {
    let node = Node::new("same", "h200-vm", Os::Ubuntu);
    let before = node.snapshot();
    let r = node.run(json!({
        "version": "580.159.04",
        // Neither is looked at: not even the checksum is computed.
        "installer": "/nonexistent/NVIDIA-Linux-x86_64-580.159.04.run",
        "checksum": format!("sha256:{}", "0".repeat(64)),
    }));
    assert_eq!(r["failed"], false, "{r:#}");
    assert_eq!(r["changed"], false);
    assert_eq!(r["installed_version_before"], "580.159.04");
    assert_eq!(r["kernel_module_type"], "open");
    assert_eq!(
        r["ansible_facts"],
        json!({"nvidia_driver_version": "580.159.04"})
    );
    assert_eq!(
        msg(&r),
        "NVIDIA driver 580.159.04 is installed already (read from /sys/module/nvidia/version): \
         nothing to do"
    );
    assert_unchanged(&before, &node.snapshot());
    assert!(node.installer_calls().is_empty() && node.tool_calls().is_empty());
}

#[test]
fn an_explicit_module_type_that_differs_from_the_loaded_one_reinstalls() {
    let node = Node::new("flavour", "h200-vm", Os::Ubuntu);
    node.write(
        "/proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Thu Apr 30 2026\n",
    );
    let installer = node.installer("580.159.04");
    let r = node.run(json!({
        "version": "580.159.04",
        "installer": installer,
        "kernel_module_type": "open",
    }));
    assert_eq!(r["failed"], false, "{r:#}");
    assert_eq!(r["changed"], true);
    assert_eq!(r["installed_version_before"], "580.159.04");
    assert_eq!(r["command"][6], "--kernel-module-type=open");
    assert!(node
        .read("/proc/driver/nvidia/version")
        .unwrap()
        .starts_with(&format!(
            "NVRM version: NVIDIA UNIX Open Kernel Module for {ARCH}  580.159.04"
        )));
    let warnings = r["warnings"].as_array().unwrap();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("driver 580.159.04 is loaded now: the installer unloads it first"),
        "{warnings:#?}"
    );

    // auto accepts the flavour that is loaded.
    let auto = node.run(json!({"version": "580.159.04", "installer": installer}));
    assert_eq!(auto["changed"], false, "{auto:#}");
}

#[test]
fn loaded_nouveau_is_blacklisted_and_a_reboot_requested() {
    let node = Node::new("nouveau", "consumer", Os::Ubuntu);
    node.tool("update-initramfs", "exit 0");
    node.tool("dracut", "exit 0");
    let installer = node.installer("570.124.06");
    let args = json!({"version": "570.124.06", "installer": installer, "_ansible_diff": true});
    let r = node.run(args.clone());
    assert_eq!(r["failed"], false, "{r:#}");
    assert_eq!(r["changed"], true);
    assert_eq!(r["reboot_required"], true);
    assert_eq!(
        r["blacklist_file"],
        "/etc/modprobe.d/blacklist-nouveau.conf"
    );
    assert_eq!(r["commands"], json!([["update-initramfs", "-u"]]));
    assert_eq!(r["command"], Value::Null, "the installer does not run now");
    assert_eq!(r["kernel_module_type"], "open", "Turing on 570");
    assert_eq!(
        msg(&r),
        "nouveau is loaded, so driver 570.124.06 cannot be installed yet: blacklisted it in \
         /etc/modprobe.d/blacklist-nouveau.conf and rebuilt the initramfs (`update-initramfs \
         -u`). Reboot the node, then run this again to install the driver"
    );
    let blacklist = node.read("/etc/modprobe.d/blacklist-nouveau.conf").unwrap();
    assert!(blacklist.contains("\nblacklist nouveau\noptions nouveau modeset=0\n"));
    assert_eq!(r["diff"][0]["after"], blacklist.as_str());
    assert_eq!(node.tool_calls(), ["update-initramfs -u"]);
    assert!(node.installer_calls().is_empty(), "the installer never ran");
    assert!(r.get("ansible_facts").is_none());

    // Before the reboot: nothing more to do, and the answer is the same.
    let again = node.run(args);
    assert_eq!(again["changed"], false, "{again:#}");
    assert_eq!(again["reboot_required"], true);
    assert!(
        msg(&again).starts_with("nouveau is still loaded"),
        "{}",
        msg(&again)
    );
    assert_eq!(
        node.tool_calls().len(),
        1,
        "the initramfs is not rebuilt again"
    );
    assert!(node.installer_calls().is_empty());
}

#[test]
fn nouveau_left_loaded_on_purpose_fails_the_pre_flight() {
    let node = Node::new("nouveau-kept", "consumer", Os::Ubuntu);
    let installer = node.installer("570.124.06");
    let r = node.run(json!({
        "version": "570.124.06",
        "installer": installer,
        "disable_nouveau": false,
    }));
    assert_eq!(r["failed"], true, "{r:#}");
    assert_eq!(check(&r, "nouveau")["ok"], false);
    assert!(msg(&r).contains("[nouveau] nouveau is loaded and disable_nouveau is false"));
    assert_eq!(node.read("/etc/modprobe.d/blacklist-nouveau.conf"), None);
}

#[test]
fn every_failed_check_is_reported_at_once_and_names_its_fix() {
    let node = Node::new("headers", "vfio", Os::Rocky);
    node.remove(&format!("/lib/modules/{ROCKY_KERNEL}"));
    node.untool("make");
    node.untool("dkms");
    let installer = node.installer("580.95.05");
    let before = node.snapshot();
    let r = node.run(json!({"version": "580.95.05", "installer": installer}));
    assert_eq!(r["failed"], true, "{r:#}");
    assert!(
        msg(&r).starts_with("3 pre-flight checks failed, nothing was run or written: "),
        "{}",
        msg(&r)
    );
    assert_eq!(
        check(&r, "kernel_headers")["message"],
        format!(
            "the headers of the running kernel {ROCKY_KERNEL} are missing (/lib/modules/\
             {ROCKY_KERNEL}/build does not exist), so the installer cannot build the kernel \
             module: install `dnf install kernel-devel-{ROCKY_KERNEL}`"
        )
    );
    assert!(msg(&r).contains("[make] make is not on PATH"));
    assert!(msg(&r).contains(
        "[dkms] dkms is not on PATH but dkms is true: install `dnf install dkms` (from EPEL)"
    ));
    assert_eq!(check(&r, "compiler")["ok"], true);
    assert!(node.installer_calls().is_empty());
    let mut after = node.snapshot();
    // The lock file is the one thing a real run leaves.
    after.retain(|p, _| !p.starts_with("root/run"));
    assert_unchanged(&before, &after);
}

#[test]
fn missing_headers_on_ubuntu_name_linux_headers() {
    let node = Node::new("headers-ubuntu", "hgx-h100", Os::Ubuntu);
    node.remove(&format!("/lib/modules/{UBUNTU_KERNEL}"));
    node.write("/lib/modules/6.8.0-49-generic/build/Makefile", "");
    let installer = node.installer("580.95.05");
    let r = node.run(json!({"version": "580.95.05", "installer": installer}));
    assert_eq!(r["failed"], true, "{r:#}");
    let message = check(&r, "kernel_headers")["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "install `apt-get install linux-headers-{UBUNTU_KERNEL}`"
        )),
        "{message}"
    );
    assert!(message.ends_with(
        "headers are installed for 6.8.0-49-generic only: if the kernel was updated, reboot \
         into it first"
    ));
}

#[test]
fn secure_boot_needs_a_signing_key_and_then_signs() {
    let node = Node::new("secureboot", "vfio", Os::Rocky);
    node.write(
        "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0c9897b4a21",
        "\u{6}\0\0\0\u{1}",
    );
    let installer = node.installer("580.95.05");
    let r = node.run(json!({"version": "580.95.05", "installer": installer}));
    assert_eq!(r["failed"], true, "{r:#}");
    assert!(
        msg(&r).starts_with(
            "pre-flight check failed, nothing was run or written: [secure_boot] Secure Boot is \
             enabled (/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0c9897b4a21), \
             so the kernel will refuse an unsigned NVIDIA module: give module_signing_key and \
             module_signing_cert"
        ),
        "{}",
        msg(&r)
    );
    assert!(node.installer_calls().is_empty());

    let key = node.dir.join("mok.key");
    let cert = node.dir.join("mok.der");
    fs::write(&key, "key").unwrap();
    fs::write(&cert, "cert").unwrap();
    let signed = node.run(json!({
        "version": "580.95.05",
        "installer": installer,
        "module_signing_key": key,
        "module_signing_cert": cert,
    }));
    assert_eq!(signed["failed"], false, "{signed:#}");
    let command = signed["command"].as_array().unwrap();
    assert!(command.contains(&json!(format!(
        "--module-signing-secret-key={}",
        key.display()
    ))));
    assert!(command.contains(&json!(format!(
        "--module-signing-public-key={}",
        cert.display()
    ))));
    assert!(node
        .read("/var/log/nvidia-installer.log")
        .unwrap()
        .contains("-> Signing the kernel modules with the private key"));
}

#[test]
fn a_checksum_mismatch_runs_nothing() {
    let node = Node::new("checksum", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let wrong = "ab".repeat(32);
    let r = node.run(json!({
        "version": "580.95.05",
        "installer": installer,
        "checksum": format!("sha256:{wrong}"),
    }));
    assert_eq!(r["failed"], true, "{r:#}");
    assert_eq!(
        check(&r, "checksum")["message"],
        format!(
            "{} has sha256 {}, not the expected {wrong}: the file is damaged or is not the \
             installer you meant; copy it again from your repository",
            installer.display(),
            sha256(&installer)
        )
    );
    assert!(node.installer_calls().is_empty() && node.tool_calls().is_empty());
    assert_eq!(r["rc"], Value::Null, "no program ran");
}

#[test]
fn a_malformed_checksum_is_a_clear_error() {
    let node = Node::new("badsum", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let r = node.run(json!({
        "version": "580.95.05",
        "installer": installer,
        "checksum": "d41d8cd98f00b204e9800998ecf8427e",
    }));
    assert_eq!(r["failed"], true);
    assert_eq!(
        msg(&r),
        "checksum must be `sha256:` followed by the 64 hex digits that `sha256sum` prints for \
         the installer; got \"d41d8cd98f00b204e9800998ecf8427e\" (no `sha256:` prefix)"
    );
}

#[test]
fn check_mode_reports_the_command_and_changes_nothing() {
    let node = Node::new("check", "vfio", Os::Rocky);
    let installer = node.installer("550.54.15");
    let before = node.snapshot();
    let r = node.run(json!({
        "version": "550.54.15",
        "installer": installer,
        "kernel_module_type": "open",
        "dkms": false,
        "extra_args": ["--no-drm"],
        "_ansible_check_mode": true,
    }));
    assert_eq!(r["failed"], false, "{r:#}");
    assert_eq!(r["changed"], true);
    // Check mode copies nothing: the command names the installer itself.
    let command = json!([
        "sh",
        installer,
        "--silent",
        "--no-questions",
        "--ui=none",
        "--log-file-name=/var/log/nvidia-installer.log",
        "-m=kernel-open",
        "--no-drm",
    ]);
    assert_eq!(r["command"], command);
    assert_eq!(r["commands"], json!([command]));
    assert!(msg(&r).starts_with(
        "check mode: would install NVIDIA driver 550.54.15 (open kernel modules) with `sh "
    ));
    assert_eq!(
        r["preflight"].as_array().unwrap().len(),
        9,
        "no dkms check: {r:#}"
    );
    assert!(r.get("ansible_facts").is_none());
    assert_unchanged(&before, &node.snapshot());
    assert!(node.installer_calls().is_empty() && node.tool_calls().is_empty());
}

#[test]
fn check_mode_with_nouveau_writes_no_blacklist() {
    let node = Node::new("check-nouveau", "consumer", Os::Rocky);
    node.tool("dracut", "exit 0");
    let installer = node.installer("535.183.01");
    let before = node.snapshot();
    let r = node.run(json!({
        "version": "535.183.01",
        "installer": installer,
        "_ansible_check_mode": true,
        "_ansible_diff": true,
    }));
    assert_eq!(r["failed"], false, "{r:#}");
    assert_eq!(r["changed"], true);
    assert_eq!(r["reboot_required"], true);
    assert_eq!(r["commands"], json!([["dracut", "-f"]]));
    assert_eq!(r["kernel_module_type"], "proprietary", "Turing on 535");
    assert!(r["diff"][0]["before_header"]
        .as_str()
        .unwrap()
        .ends_with("(absent)"));
    assert_unchanged(&before, &node.snapshot());
    assert!(node.tool_calls().is_empty());
}

#[test]
fn concurrent_runs_never_start_two_installers() {
    let node = Node::new("concurrent", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let args = json!({"version": "580.95.05", "installer": installer});
    let slow = [("FAKE_NVIDIA_INSTALLER_SLEEP", "3")];
    let first = node.spawn("first", args.clone(), &slow);
    let second = node.spawn("second", args, &slow);
    let results = [result(first), result(second)];
    for r in &results {
        assert_eq!(r["failed"], false, "{r:#}");
    }
    let calls = node.installer_calls();
    assert_eq!(calls.len(), 2, "exactly one installer ran: {calls:?}");
    assert!(calls[0].starts_with("start ") && calls[1].starts_with("end "));
    let changed: Vec<bool> = results.iter().map(|r| r["changed"] == true).collect();
    assert_eq!(changed.iter().filter(|c| **c).count(), 1, "{results:#?}");
    let waited = results.iter().find(|r| r["changed"] == false).unwrap();
    assert!(
        msg(waited).ends_with("; another run installed it while this one waited for the lock"),
        "{}",
        msg(waited)
    );
}

#[test]
fn a_run_that_cannot_get_the_lock_in_time_refuses() {
    let node = Node::new("locked", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let lock_path = node.root.join("run/lock/nvidia-driver-install.lock");
    let held = nvidia_driver::lock::acquire(&lock_path, Duration::ZERO).unwrap();
    let started = Instant::now();
    let r = node.run(json!({
        "version": "580.95.05",
        "installer": installer,
        "lock_timeout": 1,
    }));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(r["failed"], true, "{r:#}");
    assert_eq!(
        msg(&r),
        format!(
            "another driver installation (pid {}) holds the lock {} and did not finish within \
             lock_timeout (1 s); two driver installers must never run at once. Wait for it to \
             finish (its progress is in /var/log/nvidia-installer.log), then run this again, or \
             raise lock_timeout",
            std::process::id(),
            lock_path.display()
        )
    );
    assert!(node.installer_calls().is_empty());
    drop(held);
}

#[test]
fn installed_but_not_loaded_asks_for_a_reboot() {
    let node = Node::new("noload", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let r = node.run(json!({
        "version": "580.95.05",
        "installer": installer,
        "extra_args": ["--skip-module-load"],
    }));
    assert_eq!(r["failed"], false, "{r:#}");
    assert_eq!(r["changed"], true);
    assert_eq!(r["reboot_required"], true);
    assert_eq!(
        msg(&r),
        "installed NVIDIA driver 580.95.05 (open kernel modules), but no NVIDIA kernel module \
         is loaded: reboot the node to load it"
    );
    assert!(r.get("ansible_facts").is_none());
}

#[test]
fn forcing_open_modules_on_volta_is_refused() {
    let node = Node::new("volta", "vfio", Os::Rocky);
    node.write("/sys/bus/pci/devices/0000:3b:00.0/device", "0x1db5\n");
    let installer = node.installer("580.95.05");
    let r = node.run(json!({
        "version": "580.95.05",
        "installer": installer,
        "kernel_module_type": "open",
    }));
    assert_eq!(r["failed"], true, "{r:#}");
    assert_eq!(r["kernel_module_type"], Value::Null);
    assert!(
        msg(&r).contains(
            "[kernel_module_type] kernel_module_type is open, but the open kernel modules do \
             not support Volta GPU 0000:3b:00.0 (10de:1db5)"
        ),
        "{}",
        msg(&r)
    );
    assert!(node.installer_calls().is_empty());
}

#[test]
fn no_installer_and_too_little_space_are_named() {
    let node = Node::new("noinstaller", "vfio", Os::Rocky);
    let r = node.run(json!({"version": "580.95.05", "min_free_mb": 1_000_000_000}));
    assert_eq!(r["failed"], true, "{r:#}");
    assert_eq!(
        check(&r, "installer")["message"],
        format!(
            "no installer given: installing driver 580.95.05 needs `installer`, the path of \
             NVIDIA-Linux-{ARCH}-580.95.05.run on the node (copy it there from your local \
             repository first)"
        )
    );
    let space = check(&r, "free_space")["message"].as_str().unwrap();
    assert!(
        // TMPDIR (the test's, where the installer's private copy goes) comes first.
        space.starts_with(&format!(
            "not enough free space for the installer: {} has ",
            node.tmp().display()
        )),
        "{space}"
    );
    assert!(
        space.contains("it needs 1000000000 MiB (min_free_mb) on each"),
        "{space}"
    );
}

#[test]
fn a_version_that_is_not_one_is_refused() {
    let node = Node::new("badversion", "vfio", Os::Rocky);
    let r = node.run(json!({"version": "580"}));
    assert_eq!(r["failed"], true);
    assert!(msg(&r).starts_with("version must be a full driver version such as 580.95.05"));
}

/// Waits up to `limit` for `done`, polling.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// The module's result, or a failed test when it runs past `limit` (a hang).
fn result_within(mut child: Child, limit: Duration) -> Value {
    if !wait_for(limit, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        panic!("the module ran longer than {limit:?}: it hung");
    }
    result(child)
}

#[test]
fn a_killed_module_leaves_its_installer_holding_the_lock() {
    let node = Node::new("killed", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let args = json!({"version": "580.95.05", "installer": installer});
    let mut first = node.spawn(
        "first",
        args.clone(),
        &[("FAKE_NVIDIA_INSTALLER_SLEEP", "3")],
    );
    assert!(wait_for(Duration::from_secs(20), || !node
        .installer_calls()
        .is_empty()));
    // What a dropped SSH session or an Ansible timeout does to the module.
    first.kill().unwrap();
    first.wait().unwrap();
    let installer_pid = node.installer_calls()[0]
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();

    let mut second_args = args.clone();
    second_args["lock_timeout"] = json!(0);
    let second = node.run(second_args);
    assert_eq!(second["failed"], true, "{second:#}");
    assert!(
        msg(&second).starts_with(&format!(
            "another driver installation (pid {installer_pid}) holds the lock"
        )),
        "{}",
        msg(&second)
    );
    assert!(wait_for(Duration::from_secs(20), || node
        .installer_calls()
        .len()
        == 2));
    let third = node.run(args);
    assert_eq!(third["changed"], false, "{third:#}");
    let calls = node.installer_calls();
    assert_eq!(calls.len(), 2, "one installer, never two: {calls:?}");
    assert!(
        calls[0].starts_with("start ") && calls[1].starts_with("end "),
        "{calls:?}"
    );
}

#[test]
fn a_hung_installer_is_killed_after_installer_timeout() {
    let node = Node::new("hung", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let started = Instant::now();
    let child = node.spawn(
        "args",
        json!({"version": "580.95.05", "installer": installer, "installer_timeout": 1}),
        &[("FAKE_NVIDIA_INSTALLER_SLEEP", "60")],
    );
    let r = result_within(child, Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(r["failed"], true, "{r:#}");
    assert_eq!(
        r["changed"], true,
        "a killed installer may have changed the node"
    );
    assert!(
        msg(&r).starts_with("the NVIDIA installer did not finish within installer_timeout (1 s)"),
        "{}",
        msg(&r)
    );
    let calls = node.installer_calls();
    assert_eq!(
        calls.len(),
        1,
        "started, and killed before its end: {calls:?}"
    );
    // The lock is free again: a new run is not refused.
    let again =
        node.run(json!({"version": "580.95.05", "installer": installer, "lock_timeout": 0}));
    assert_eq!(again["failed"], false, "{again:#}");
    assert_eq!(node.staged_copies(), Vec::<String>::new());
}

#[test]
fn a_fifo_as_installer_fails_the_preflight_without_blocking() {
    let node = Node::new("fifo", "vfio", Os::Rocky);
    let fifo = node.dir.join(format!("NVIDIA-Linux-{ARCH}-580.95.05.run"));
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for check_mode in [true, false] {
        let child = node.spawn(
            "args",
            json!({"version": "580.95.05", "installer": fifo, "checksum": format!("sha256:{}", "0".repeat(64)),
                   "_ansible_check_mode": check_mode}),
            &[],
        );
        let r = result_within(child, Duration::from_secs(20));
        assert_eq!(r["failed"], true, "{r:#}");
        assert!(
            check(&r, "installer")["message"]
                .as_str()
                .unwrap()
                .contains("is not a file"),
            "{r:#}"
        );
    }
    assert!(node.installer_calls().is_empty());
}

#[test]
fn an_installer_swapped_during_runs_never_runs_unverified() {
    let node = Node::new("swap", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let good = fs::read(&installer).unwrap();
    let checksum = format!("sha256:{}", sha256(&installer));
    // Same name, same behaviour, plus a mark that it ran.
    let evil = String::from_utf8(good.clone()).unwrap().replacen(
        "\n",
        "\nmkdir -p \"$FAKE_NVIDIA_ROOT/EVIL-RAN\"\n",
        1,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, path, dir) = (stop.clone(), installer.clone(), node.dir.clone());
        let (good, evil) = (good.clone(), evil.into_bytes());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, bytes) in [&evil, &good].iter().enumerate() {
                    let tmp = dir.join(format!("swap-{i}"));
                    fs::write(&tmp, bytes).unwrap();
                    fs::rename(&tmp, &path).unwrap();
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let (mut installed, mut refused) = (0, 0);
    for _ in 0..24 {
        let r = node.run(json!({"version": "580.95.05", "installer": installer, "checksum": checksum, "force": true}));
        if r["failed"] == true {
            assert_eq!(check(&r, "checksum")["ok"], false, "{r:#}");
            refused += 1;
        } else {
            assert_eq!(r["installer_sha256"], checksum["sha256:".len()..], "{r:#}");
            installed += 1;
        }
        assert!(
            !node.root.join("EVIL-RAN").exists(),
            "an unverified installer ran"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 24, "the file was swapped {swaps} times");
    assert_eq!(installed + refused, 24);
    assert_eq!(node.staged_copies(), Vec::<String>::new());
}

#[test]
fn root_lock_path_and_log_file_are_validated_and_nothing_is_created() {
    let node = Node::new("paths", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    let missing = node.dir.join("no-such-root");
    let cases = [
        (json!({"root": "relative/root"}), "root must be an absolute path, not relative/root"),
        (json!({"root": missing}), "is not an existing folder"),
        (json!({"lock_path": "/../escaped.lock"}), "lock_path must be an absolute path of a file on the node, without `..`, not /../escaped.lock"),
        (json!({"lock_path": "run/x.lock"}), "lock_path must be an absolute path"),
        (json!({"log_file": "/var/log/../../../escaped.log"}), "log_file must be an absolute path"),
        (json!({"log_file": "nv.log"}), "log_file must be an absolute path"),
        (json!({"installer_timeout": 0}), "installer_timeout must be 1 or more seconds, not 0"),
    ];
    let before = node.snapshot();
    for (extra, wanted) in cases {
        let mut args = json!({"version": "580.95.05", "installer": installer});
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        let r = node.run(args);
        assert_eq!(r["failed"], true, "{r:#}");
        assert!(
            msg(&r).contains(wanted),
            "{} does not contain {wanted}",
            msg(&r)
        );
    }
    assert!(!missing.exists(), "a missing root is never created");
    assert!(!node.dir.join("escaped.lock").exists());
    assert_unchanged(&before, &node.snapshot());
    assert!(node.installer_calls().is_empty());
}

#[test]
fn a_lock_file_of_another_user_is_refused_naming_its_owner_not_pid_1() {
    let node = Node::new("foreign-lock", "vfio", Os::Rocky);
    let installer = node.installer("580.95.05");
    node.write("/run/lock/nvidia-driver-install.lock", "1\n");
    let lock = node.root.join("run/lock/nvidia-driver-install.lock");
    std::os::unix::fs::chown(&lock, Some(65534), Some(65534)).unwrap();
    for check_mode in [false, true] {
        let r = node.run(
            json!({"version": "580.95.05", "installer": installer, "lock_timeout": 0,
                                "_ansible_check_mode": check_mode}),
        );
        let all = r.to_string();
        assert!(!all.contains("pid 1)"), "{r:#}");
        if !check_mode {
            assert_eq!(r["failed"], true, "{r:#}");
            assert!(
                msg(&r).starts_with(&format!(
                    "refusing the lock file {}: it is owned by uid 65534",
                    lock.display()
                )),
                "{}",
                msg(&r)
            );
        }
    }
    assert_eq!(fs::read_to_string(&lock).unwrap(), "1\n");
    assert!(node.installer_calls().is_empty());
}
