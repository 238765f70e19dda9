//! The whole flow of [`install`] on a stand-in machine
//! ([`FakeSystem`]) over a node root built in a temporary folder: what each
//! kind of run decides, writes, runs and reports. The stand-in installer
//! changes the node's files as the real one does (it "loads" the driver by
//! writing `/sys/module/nvidia/version` and logs), so every step after it
//! reads what a real node would show. tests/module.rs runs the built binary
//! with the shell stand-in installer; these run in milliseconds.

use super::*;
use nvidia_driver::system::fake::{exited, FakeSystem};
use std::collections::BTreeMap;
use std::fs;

const NEW: &str = "580.95.05";
const OLD: &str = "570.124.06";
const RELEASE: &str = "6.8.0-45-generic";
const LOG: &str = "/var/log/nvidia-installer.log";

/// A node folder: `root/` (the node's files) and `tmp/` (its TMPDIR).
struct Node {
    dir: PathBuf,
}

impl Node {
    /// An Ubuntu node with one H100 and its kernel headers, no driver loaded.
    fn new(test: &str) -> Node {
        let dir =
            std::env::temp_dir().join(format!("nvidia-driver-flow-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let node = Node { dir };
        fs::create_dir_all(node.dir.join("tmp")).unwrap();
        let gpu = "/sys/bus/pci/devices/0000:01:00.0";
        node.write(&format!("{gpu}/vendor"), "0x10de\n");
        node.write(&format!("{gpu}/device"), "0x2330\n");
        node.write(&format!("{gpu}/class"), "0x030200\n");
        node.write("/proc/sys/kernel/osrelease", &format!("{RELEASE}\n"));
        node.write(
            "/etc/os-release",
            "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n",
        );
        node.write(&format!("/lib/modules/{RELEASE}/build/Makefile"), "");
        node.write("/proc/stat", "cpu 1 2 3 4\nbtime 1000\n");
        fs::create_dir_all(node.installer().parent().unwrap()).unwrap();
        fs::write(node.installer(), "#!/bin/sh\n").unwrap();
        node
    }

    /// Where the installer is (the module reads it as it is, not under `root`).
    fn installer(&self) -> PathBuf {
        self.dir
            .join("installers/NVIDIA-Linux-x86_64-580.95.05.run")
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn write(&self, node_path: &str, content: &str) {
        let path = self.root().join(node_path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn read(&self, node_path: &str) -> Option<String> {
        fs::read_to_string(self.root().join(node_path.trim_start_matches('/'))).ok()
    }

    /// The driver `version` is loaded.
    fn load(&self, version: &str) {
        self.write("/sys/module/nvidia/version", &format!("{version}\n"));
    }

    fn load_nouveau(&self) {
        fs::create_dir_all(self.root().join("sys/module/nouveau")).unwrap();
    }

    /// Every file under the node folder (root and TMPDIR) with its content.
    fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).unwrap().map(Result::unwrap) {
                let path = entry.path();
                if path.is_dir() {
                    out.insert(path.clone(), Vec::new());
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), fs::read(&path).unwrap());
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(&self.dir, &mut files);
        files
    }

    /// A machine with the build tools, its TMPDIR in this node.
    fn machine(&self) -> FakeSystem {
        FakeSystem::new()
            .program("cc")
            .program("make")
            .program("dkms")
            .tmpdir(&self.dir.join("tmp"))
    }

    /// Runs the module with `args` over this node.
    fn install(&self, sys: &FakeSystem, args: Value) -> (Result<Outcome, Failure>, Vec<String>) {
        let mut all = json!({
            "version": NEW,
            "installer": self.installer(),
            "root": self.root(),
            "lock_path": "/run/nvidia-driver-install.lock",
        });
        for (k, v) in args.as_object().unwrap() {
            all[k] = v.clone();
        }
        let mut module = Module::new(&SPEC, all.as_object().unwrap().clone()).unwrap();
        let opts: Options = module.options().unwrap();
        let result = install(&mut module, &opts, sys);
        (result, module_warnings(&module))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn module_warnings(module: &Module) -> Vec<String> {
    let result = module.result_json(Ok(Outcome::new(false)));
    result["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// NVIDIA's installer as far as the node sees it: on success it logs and
/// loads the new driver (unless `loads` is false: the old module stays in
/// use); on failure it logs a compiler error and exits 1.
fn installer(
    node: &Node,
    succeeds: bool,
    loads: bool,
) -> impl Fn(&[String]) -> std::io::Result<nvidia_driver::Output> {
    let root = node.root();
    move |argv| {
        let write = |path: &str, text: &str| {
            let path = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        assert!(
            Path::new(&argv[1]).is_file(),
            "the installer that runs exists: {argv:?}"
        );
        if !succeeds {
            write(LOG, "-> Building kernel modules\nERROR: An error occurred while performing the step: \"Building kernel modules\".\n");
            return exited(1, "ERROR: An error occurred while performing the step");
        }
        write(LOG, "-> Installation of the kernel module for the NVIDIA Accelerated Graphics Driver for Linux-x86_64 succeeded.\n");
        if loads {
            write("/sys/module/nvidia/version", &format!("{NEW}\n"));
        }
        exited(0, "")
    }
}

#[test]
fn the_installed_version_changes_nothing_and_runs_nothing() {
    let node = Node::new("installed");
    node.load(NEW);
    let sys = node.machine().behaving("sh", installer(&node, true, true));
    let before = node.files();
    let (result, _) = node.install(&sys, json!({}));
    let outcome = result.unwrap();
    assert!(!outcome.changed);
    assert!(outcome
        .msg
        .unwrap()
        .starts_with("NVIDIA driver 580.95.05 is installed already"));
    assert_eq!(outcome.values["reboot_required"], false);
    assert_eq!(sys.ran(), []);
    assert_eq!(node.files(), before, "not even the lock file is made");
}

#[test]
fn an_install_runs_the_private_copy_under_the_lock_and_verifies_the_loaded_driver() {
    let node = Node::new("install");
    node.load(OLD);
    let smi_root = node.root();
    let sys = node
        .machine()
        .behaving("sh", installer(&node, true, true))
        .behaving("nvidia-smi", move |_| {
            let v = fs::read_to_string(smi_root.join("sys/module/nvidia/version")).unwrap();
            exited(0, &v)
        });
    let (result, warnings) = node.install(&sys, json!({"installer_timeout": 99}));
    let outcome = result.unwrap();
    assert!(outcome.changed);
    assert_eq!(
        outcome.msg.as_deref(),
        Some("installed NVIDIA driver 580.95.05 (open kernel modules, registered with DKMS)")
    );
    assert_eq!(outcome.facts["nvidia_driver_version"], NEW);
    assert_eq!(outcome.values["installed_version_before"], OLD);
    assert_eq!(outcome.values["reboot_required"], false);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("driver 570.124.06 is loaded now")),
        "{warnings:?}"
    );
    let ran = sys.ran();
    let installer_run = ran
        .iter()
        .find(|r| r.guarded)
        .expect("the installer ran guarded");
    assert_eq!(installer_run.timeout, Some(Duration::from_secs(99)));
    let copy = Path::new(&installer_run.argv[1]);
    assert!(
        copy.starts_with(node.dir.join("tmp")),
        "the private copy ran: {copy:?}"
    );
    assert!(!copy.exists(), "the private copy is removed after the run");
    assert_eq!(outcome.values["command"][1], installer_run.argv[1]);
    assert_eq!(
        sys.ran_programs().last().unwrap(),
        "/usr/bin/nvidia-smi",
        "verified last"
    );
    assert_eq!(outcome.values["commands"].as_array().unwrap().len(), 2);
    assert_eq!(
        node.read("/run/nvidia-driver-install.lock").as_deref(),
        Some("4242\n"),
        "the installer's pid holds the lock"
    );
}

#[test]
fn loaded_nouveau_is_blacklisted_the_initramfs_rebuilt_and_a_reboot_asked_for() {
    let node = Node::new("nouveau");
    node.load_nouveau();
    let sys = node
        .machine()
        .behaving("sh", installer(&node, true, true))
        .program("update-initramfs");
    let (result, _) = node.install(&sys, json!({}));
    let outcome = result.unwrap();
    assert!(outcome.changed);
    assert_eq!(outcome.values["reboot_required"], true);
    let msg = outcome.msg.unwrap();
    assert!(
        msg.starts_with("nouveau is loaded, so driver 580.95.05 cannot be installed yet"),
        "{msg}"
    );
    assert!(msg.contains("Reboot the node"), "{msg}");
    assert!(node
        .read(nouveau::BLACKLIST_PATH)
        .unwrap()
        .contains("blacklist nouveau"));
    assert_eq!(
        sys.ran_programs(),
        ["update-initramfs"],
        "the installer waits for the reboot"
    );
    assert_eq!(outcome.diffs.len(), 1, "the blacklist's diff");

    // The next run before the reboot: nothing more to write or rebuild.
    let again = FakeSystem::new()
        .program("cc")
        .program("make")
        .program("dkms")
        .program("update-initramfs");
    let second = node.install(&again, json!({})).0.unwrap();
    assert!(!second.changed);
    assert!(second.msg.unwrap().starts_with("nouveau is still loaded"));
    assert_eq!(again.ran(), []);
}

#[test]
fn a_failed_initramfs_rebuild_reports_the_blacklist_it_wrote() {
    let node = Node::new("initramfs");
    node.load_nouveau();
    let sys = node
        .machine()
        .behaving("update-initramfs", |_| exited(3, "E: no space"));
    let failure = node.install(&sys, json!({})).0.unwrap_err();
    assert!(
        failure
            .msg
            .contains("`update-initramfs -u` failed (exit status 3): E: no space"),
        "{}",
        failure.msg
    );
    assert_eq!(failure.values["changed"], true, "the blacklist was written");
    assert!(node.read(nouveau::BLACKLIST_PATH).is_some());
}

#[test]
fn a_driver_that_does_not_load_asks_for_a_reboot() {
    let node = Node::new("reboot");
    node.load(OLD);
    let sys = node.machine().behaving("sh", installer(&node, true, false));
    let outcome = node.install(&sys, json!({})).0.unwrap();
    assert!(outcome.changed);
    assert_eq!(outcome.values["reboot_required"], true);
    assert_eq!(
        outcome.msg.as_deref(),
        Some("installed NVIDIA driver 580.95.05 (open kernel modules), but the kernel still runs driver 570.124.06 (the old module could not be replaced while loaded): reboot the node to load it")
    );
    assert!(
        !outcome.facts.contains_key("nvidia_driver_version"),
        "not loaded: no new fact"
    );
}

#[test]
fn a_failed_installer_reports_its_status_and_the_log_it_wrote() {
    let node = Node::new("failed");
    node.load(OLD);
    node.write(LOG, "an old log from an earlier install\n");
    let sys = node
        .machine()
        .behaving("sh", installer(&node, false, false));
    let failure = node.install(&sys, json!({})).0.unwrap_err();
    assert!(
        failure
            .msg
            .starts_with("the NVIDIA installer failed (exit status 1): ERROR: An error occurred"),
        "{}",
        failure.msg
    );
    assert!(
        failure
            .msg
            .contains(&format!("Last lines of {LOG}:\n-> Building kernel modules")),
        "{}",
        failure.msg
    );
    assert_eq!(failure.values["rc"], 1);
    assert_eq!(
        failure.values["installer_log_tail"][0],
        "-> Building kernel modules"
    );
    assert_eq!(
        node.read("/sys/module/nvidia/version").as_deref(),
        Some("570.124.06\n"),
        "the old driver stays"
    );
}

#[test]
fn a_killed_installer_that_wrote_no_log_reports_its_output() {
    let node = Node::new("killed");
    let sys = node.machine().behaving("sh", |_| {
        Ok(nvidia_driver::Output {
            status: None,
            stdout: "Unpacking\n".into(),
            stderr: String::new(),
        })
    });
    let failure = node.install(&sys, json!({})).0.unwrap_err();
    assert!(
        failure
            .msg
            .starts_with("the NVIDIA installer failed (killed by a signal). It wrote no log"),
        "{}",
        failure.msg
    );
    assert!(
        failure.msg.ends_with("its last output:\nUnpacking"),
        "{}",
        failure.msg
    );
    assert_eq!(failure.values["rc"], Value::Null);
}

#[test]
fn a_hung_installer_is_killed_at_its_timeout_and_may_have_changed_the_node() {
    let node = Node::new("timeout");
    let sys = node
        .machine()
        .hanging("sh", |_| exited(0, "Building kernel modules"));
    let failure = node
        .install(&sys, json!({"installer_timeout": 5}))
        .0
        .unwrap_err();
    assert!(failure.msg.starts_with("the NVIDIA installer did not finish within installer_timeout (5 s): it ran longer than 5 s"), "{}", failure.msg);
    assert!(
        failure.msg.contains("Building kernel modules"),
        "{}",
        failure.msg
    );
    assert_eq!(failure.values["changed"], true);
}

#[test]
fn check_mode_writes_nothing_runs_nothing_and_shows_the_command() {
    let node = Node::new("check");
    node.load(OLD);
    let sys = node
        .machine()
        .behaving("sh", installer(&node, true, true))
        .program("nvidia-smi");
    let before = node.files();
    let outcome = node
        .install(&sys, json!({"_ansible_check_mode": true}))
        .0
        .unwrap();
    assert!(outcome.changed);
    let msg = outcome.msg.unwrap();
    let with = format!("with `sh {} --silent", node.installer().display());
    assert!(
        msg.starts_with("check mode: would install NVIDIA driver 580.95.05 (open kernel modules) "),
        "{msg}"
    );
    assert!(msg.contains(&with), "{msg}");
    assert_eq!(outcome.values["planned"], json!([msg]));
    assert_eq!(sys.ran(), []);
    assert_eq!(node.files(), before);
}

#[test]
fn check_mode_with_the_installer_still_to_fetch_says_it_would_fetch_it_first() {
    let node = Node::new("fetch");
    fs::remove_file(node.installer()).unwrap();
    let installer = node.installer().display().to_string();
    let sys = node.machine();
    let before = node.files();
    let args = json!({"_ansible_check_mode": true, "installer_url": "http://repo/nvidia/NVIDIA-Linux-x86_64-580.95.05.run"});
    let outcome = node.install(&sys, args.clone()).0.unwrap();
    assert!(outcome.changed);
    assert_eq!(outcome.values["planned"], json!([
        format!("would fetch http://repo/nvidia/NVIDIA-Linux-x86_64-580.95.05.run to {installer}"),
        format!("would run: sh {installer} --silent --no-questions --ui=none --log-file-name=/var/log/nvidia-installer.log --kernel-module-type=open --dkms"),
    ]));
    assert_eq!(node.files(), before);

    // Without a source, a missing installer is a failed check, in check mode too.
    let mut missing = args;
    missing.as_object_mut().unwrap().remove("installer_url");
    let failure = node.install(&sys, missing).0.unwrap_err();
    assert!(failure.msg.contains("installer"), "{}", failure.msg);
}

#[test]
fn the_spec_refuses_half_a_signing_pair_and_a_fetch_without_its_target() {
    let args = |v: Value| v.as_object().unwrap().clone();
    let half = Module::new(
        &SPEC,
        args(json!({"version": NEW, "module_signing_key": "/k"})),
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        half,
        "parameters are required together: module_signing_key, module_signing_cert"
    );
    let fetch = Module::new(
        &SPEC,
        args(json!({"version": NEW, "installer_url": "http://repo/x.run"})),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        fetch.contains("installer_url") && fetch.contains("installer"),
        "{fetch}"
    );
}

/// The options of `args` over `node` (as [`Node::install`] fills them).
fn options(node: &Node, args: Value) -> Options {
    let mut all = json!({"version": NEW, "installer": node.installer(), "root": node.root()});
    for (k, v) in args.as_object().unwrap() {
        all[k] = v.clone();
    }
    Module::new(&SPEC, all.as_object().unwrap().clone())
        .unwrap()
        .options()
        .unwrap()
}

#[test]
fn planning_says_whether_the_installer_is_needed_with_the_install_s_own_rule() {
    let node = Node::new("planned");
    node.load(OLD);
    let sys = node.machine();
    let url = "http://repo/nvidia/NVIDIA-Linux-x86_64-580.95.05.run";
    let needed = play::plan_fetch(
        &options(&node, json!({"state": "planned", "installer_url": url})),
        &sys,
    )
    .unwrap();
    assert_eq!(needed.values["needed"], true);
    assert_eq!(
        needed.msg.unwrap(),
        format!("NVIDIA driver 570.124.06 is loaded; installing 580.95.05 with {}, downloaded from {url}. WARNING: no checksum is set for it (gpu_driver_checksum or gpu_driver_checksums), so the installer, which runs as root, is NOT verified (gpu_driver_checksum_required: false).", node.installer().display())
    );
    let refused = play::plan_fetch(
        &options(
            &node,
            json!({"state": "planned", "checksum_required": true}),
        ),
        &sys,
    )
    .unwrap_err();
    assert!(
        refused.msg.starts_with(
            "No checksum is set for NVIDIA-Linux-x86_64-580.95.05.run, which would run as root"
        ),
        "{}",
        refused.msg
    );

    node.load(NEW);
    let loaded = play::plan_fetch(
        &options(
            &node,
            json!({"state": "planned", "checksum_required": true}),
        ),
        &sys,
    )
    .unwrap();
    assert_eq!(
        loaded.values["needed"], false,
        "loaded: no checksum needed either"
    );
    assert_eq!(
        loaded.msg.unwrap(),
        "NVIDIA driver 580.95.05 is loaded already: nothing to download or install."
    );
    let forced = play::plan_fetch(
        &options(
            &node,
            json!({"state": "planned", "force": true, "kernel_module_type": "open"}),
        ),
        &sys,
    )
    .unwrap();
    assert_eq!(forced.values["needed"], true);
    assert_eq!(sys.ran(), [], "planning runs nothing");
}

#[test]
fn a_reboot_the_play_does_not_make_stops_the_node_with_what_to_do() {
    let node = Node::new("stop");
    let asks = || {
        Outcome::new(true)
            .msg("Reboot the node.")
            .value("reboot_required", true)
    };
    let stop = |args: Value| {
        play::with_stop_message(asks(), &options(&node, args), false)
            .values
            .get("stop_msg")
            .cloned()
    };
    assert_eq!(stop(json!({})), None, "no play host: a plain module call");
    let no_reboot = stop(json!({"play_host": "w1"})).unwrap();
    assert_eq!(no_reboot, "Reboot the node. w1 stops here (gpu_driver_reboot is false); the other nodes go on. After the reboot, run the playbook for it again (-l w1 -e install_gpu_driver=true), or let Ansible reboot it: -e gpu_driver_reboot=true.");
    assert_eq!(
        stop(json!({"play_host": "w1", "reboot_by_play": true})),
        None,
        "the play reboots it"
    );
    let again = stop(json!({"play_host": "w1", "reboot_by_play": true, "rebooted": true})).unwrap();
    assert!(again.as_str().unwrap().starts_with("w1 was rebooted, but the driver still asks for a reboot: Reboot the node. Look at the node"), "{again}");
    let done = play::with_stop_message(
        Outcome::new(true).value("reboot_required", false),
        &options(&node, json!({"play_host": "w1"})),
        false,
    );
    let checked =
        play::with_stop_message(asks(), &options(&node, json!({"play_host": "w1"})), true);
    assert!(
        !checked.values.contains_key("stop_msg"),
        "check mode stops no node"
    );
    assert!(!done.values.contains_key("stop_msg"));
}
