//! The built `nvidia_gpu_facts` binary, run the way Ansible runs it: one
//! argument, the path of a JSON args file; one JSON object back on stdout.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nvidia_gpu_facts");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpu-facts-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary with `argv` as given; returns the exit code and the one JSON object.
fn run_raw(argv: &[&str]) -> (i32, Value) {
    let out = Command::new(BIN).args(argv).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "one line of JSON, nothing else: {stdout:?}"
    );
    assert!(
        out.stderr.is_empty(),
        "nothing on stderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap(),
        serde_json::from_str(&stdout).expect("stdout is JSON"),
    )
}

fn run(test: &str, args: Value) -> (i32, Value) {
    let file = scratch(test).join("args");
    std::fs::write(&file, args.to_string()).unwrap();
    run_raw(&[file.to_str().unwrap()])
}

fn h200_root() -> String {
    fixtures().join("h200-vm").to_string_lossy().into_owned()
}

#[test]
fn detects_the_real_h200_capture() {
    let (code, r) = run("h200", json!({"root": h200_root()}));
    assert_eq!(code, 0);
    assert_eq!(r["changed"], json!(false));
    assert_eq!(r["failed"], json!(false));
    let facts = &r["ansible_facts"];
    assert_eq!(facts["nvidia_gpu_present"], json!(true));
    assert_eq!(facts["nvidia_gpu_count"], json!(1));
    assert_eq!(
        facts["nvidia_gpus"],
        json!([{
            "pci_address": "0000:00:06.0", "device_id": "2335", "subsystem_device_id": "18bf",
            "class": "0302", "name": "NVIDIA H200", "architecture": "hopper",
            "driver": "nvidia", "numa_node": null,
        }])
    );
    assert_eq!(facts["nvidia_nvswitch_count"], json!(0));
    assert_eq!(facts["nvidia_driver_loaded"], json!(true));
    assert_eq!(facts["nvidia_driver_version"], json!("580.159.04"));
    assert_eq!(facts["nvidia_kernel_module_type"], json!("open"));
    assert_eq!(facts["nouveau_loaded"], json!(false));
    assert_eq!(facts["nvidia_container_runtime_path"], json!(null));
    assert_eq!(facts["node_os_family"], json!("Debian"));
    assert_eq!(facts["node_os_version"], json!("24.04"));
    assert!(
        facts.get("has_nvidia_gpu").is_none(),
        "has_nvidia_gpu belongs to the user"
    );
    assert_eq!(
        r["msg"],
        json!("1 NVIDIA GPU (NVIDIA H200), driver 580.159.04 (open)")
    );
}

#[test]
fn hgx_board_reports_8_gpus_and_4_nvswitches() {
    let root = fixtures().join("profiles/hgx-h100");
    let (_, r) = run("hgx", json!({"root": root}));
    assert_eq!(r["ansible_facts"]["nvidia_gpu_count"], json!(8));
    assert_eq!(r["ansible_facts"]["nvidia_nvswitch_count"], json!(4));
    assert_eq!(
        r["msg"],
        json!("8 NVIDIA GPUs (NVIDIA H100 80GB HBM3), 4 NVSwitches, driver 570.124.06 (open)")
    );
}

#[test]
fn no_argument_file_is_a_json_failure() {
    let (code, r) = run_raw(&[]);
    assert_eq!(code, 1);
    assert_eq!(r["failed"], json!(true));
    assert!(
        r["msg"]
            .as_str()
            .unwrap()
            .starts_with("no arguments file given"),
        "{r}"
    );
}

#[test]
fn missing_argument_file_is_a_json_failure() {
    let (code, r) = run_raw(&["/nonexistent/args"]);
    assert_eq!(code, 1);
    assert_eq!(
        r["msg"],
        json!("cannot read the arguments file /nonexistent/args: No such file or directory (os error 2)")
    );
}

#[test]
fn invalid_json_is_a_json_failure() {
    let file = scratch("badjson").join("args");
    std::fs::write(&file, "{\"root\": ").unwrap();
    let (code, r) = run_raw(&[file.to_str().unwrap()]);
    assert_eq!(code, 1);
    let msg = r["msg"].as_str().unwrap();
    assert!(
        msg.contains("is not valid JSON: EOF while parsing"),
        "{msg}"
    );
}

#[test]
fn a_list_instead_of_an_object_is_refused() {
    let file = scratch("list").join("args");
    std::fs::write(&file, "[1, 2]").unwrap();
    let (code, r) = run_raw(&[file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(r["msg"]
        .as_str()
        .unwrap()
        .ends_with("must hold a JSON object of options, not a list"));
}

#[test]
fn unknown_option_is_refused_like_ansible_does() {
    let (code, r) = run(
        "unknown",
        json!({"roto": "/", "_ansible_module_name": "nvidia_gpu_facts"}),
    );
    assert_eq!(code, 1);
    assert_eq!(
        r["msg"],
        json!("Unsupported parameters for (nvidia_gpu_facts) module: roto. Supported parameters include: decide_gpu_mode, has_nvidia_gpu, local_facts_path, local_facts_write, root, site_plan, supported_os_families, verdicts.")
    );
}

#[test]
fn wrong_type_names_the_option() {
    let (code, r) = run("type", json!({"root": ["/"]}));
    assert_eq!(code, 1);
    assert!(
        r["msg"]
            .as_str()
            .unwrap()
            .starts_with("argument 'root' is of type list and we were unable to convert to path"),
        "{r}"
    );
}

#[test]
fn a_root_that_is_not_a_directory_fails_clearly() {
    let (code, r) = run("noroot", json!({"root": "/nonexistent"}));
    assert_eq!(code, 1);
    assert_eq!(
        r["msg"],
        json!("root /nonexistent is not a directory: it must be the filesystem to inspect, / on a node")
    );
}

#[test]
fn facts_file_is_written_once_then_unchanged() {
    let dir = scratch("factsfile");
    let path = dir.join("facts.d/gpu.fact");
    let args = json!({"root": h200_root(), "local_facts_path": path});
    let (_, first) = run("factsfile-1", args.clone());
    assert_eq!(first["changed"], json!(true));
    let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["nvidia_gpu_count"], json!(1));
    assert_eq!(
        written["nvidia_gpus"],
        first["ansible_facts"]["nvidia_gpus"]
    );
    assert!(
        written.get("node_os_family").is_none(),
        "the file holds detection only"
    );
    let (_, second) = run("factsfile-2", args);
    assert_eq!(second["changed"], json!(false));
}

#[test]
fn gpu_mode_is_detection_unless_the_user_set_it() {
    let (_, detected) = run(
        "mode-detected",
        json!({"root": h200_root(), "decide_gpu_mode": true}),
    );
    assert_eq!(detected["ansible_facts"]["gpu_node_enabled"], json!(true));
    assert_eq!(
        detected["ansible_facts"]["gpu_node_mode_source"],
        json!("detected")
    );
    let (_, user) = run(
        "mode-user",
        json!({"root": h200_root(), "decide_gpu_mode": true, "has_nvidia_gpu": "false"}),
    );
    assert_eq!(user["ansible_facts"]["gpu_node_enabled"], json!(false));
    assert_eq!(user["ansible_facts"]["gpu_node_mode_source"], json!("user"));
    assert!(user["ansible_facts"].get("has_nvidia_gpu").is_none());
    let (_, null) = run(
        "mode-null",
        json!({"root": h200_root(), "decide_gpu_mode": true, "has_nvidia_gpu": null}),
    );
    assert_eq!(
        null["ansible_facts"]["gpu_node_mode_source"],
        json!("detected")
    );
    let (_, plain) = run("mode-off", json!({"root": h200_root()}));
    assert!(plain["ansible_facts"].get("gpu_node_enabled").is_none());
}

#[test]
fn unsupported_os_family_fails_and_writes_nothing() {
    let path = scratch("os").join("facts.d/gpu.fact");
    let (code, r) = run(
        "os",
        json!({"root": h200_root(), "local_facts_path": path, "supported_os_families": ["RedHat"]}),
    );
    assert_eq!(code, 1);
    assert_eq!(
        r["msg"],
        json!("This node runs ubuntu 24.04 (OS family Debian); supported OS families: RedHat.")
    );
    assert!(!path.exists());
}

#[test]
fn check_mode_reports_the_facts_file_diff_and_writes_nothing() {
    let dir = scratch("check");
    let path = dir.join("facts.d/gpu.fact");
    let args = json!({"root": h200_root(), "local_facts_path": path,
                      "_ansible_check_mode": true, "_ansible_diff": true});
    let (code, r) = run("check-1", args);
    assert_eq!(code, 0);
    assert_eq!(r["changed"], json!(true));
    assert!(
        !dir.join("facts.d").exists(),
        "check mode creates nothing, not even the directory"
    );
    let diff = &r["diff"][0];
    assert_eq!(diff["before"], json!(""));
    assert!(diff["after"]
        .as_str()
        .unwrap()
        .contains("\"nvidia_gpu_count\": 1"));
    assert_eq!(diff["after_header"], json!(path.to_string_lossy()));
}

#[test]
fn spec_flag_prints_the_argument_spec() {
    let (code, r) = run_raw(&["--argument-spec"]);
    assert_eq!(code, 0);
    assert_eq!(r["module"], json!("nvidia_gpu_facts"));
    assert_eq!(
        r["options"]["root"],
        json!({"type": "path", "required": false, "default": "/"})
    );
    assert_eq!(
        r["options"]["local_facts_path"],
        json!({"type": "path", "required": false})
    );
}

#[test]
fn a_relative_local_facts_path_is_refused_and_nothing_is_written() {
    let dir = scratch("relative-facts");
    let args = dir.join("args");
    std::fs::write(
        &args,
        json!({"root": h200_root(), "local_facts_path": "gpu.fact"}).to_string(),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg(&args)
        .current_dir(&dir)
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        r["msg"],
        json!("local_facts_path must be an absolute path on the node, not gpu.fact")
    );
    assert!(!dir.join("gpu.fact").exists());
}

#[test]
fn a_loaded_driver_with_an_unreadable_version_is_not_called_absent() {
    let root = scratch("unreadable-version-root").join("root");
    let status = Command::new("cp")
        .arg("-a")
        .arg(fixtures().join("h200-vm"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(root.join("sys/module/nvidia/version")).unwrap();
    std::fs::remove_file(root.join("proc/driver/nvidia/version")).unwrap();
    let (code, r) = run(
        "unreadable-version",
        json!({"root": root.to_string_lossy()}),
    );
    assert_eq!(code, 0);
    assert_eq!(r["ansible_facts"]["nvidia_driver_loaded"], json!(true));
    let msg = r["msg"].as_str().unwrap();
    assert!(!msg.contains("no NVIDIA driver"), "{msg}");
    assert!(
        msg.ends_with("NVIDIA driver loaded, its version unreadable"),
        "{msg}"
    );
}

/// The Korean guide's troubleshooting fix 3, as it installs it.
const GUIDE_GPU_FACT: &str = "#!/bin/bash\necho '{\"has_nvidia_gpu\": true}'\n";

fn write_file(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn cpu_root(test: &str) -> PathBuf {
    // A node with no PCI device at all: detection finds no GPU.
    let root = scratch(test).join("root");
    std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
    root
}

#[test]
fn our_facts_file_is_json_mode_0644_and_says_it_is_ours() {
    let path = scratch("ours-node").join("facts.d/gpu.fact");
    let (_, r) = run(
        "ours",
        json!({"root": h200_root(), "local_facts_path": path}),
    );
    assert_eq!(r["changed"], json!(true));
    assert_eq!(r["local_facts_owner"], json!("nvidia_gpu_facts"));
    let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["written_by"], json!("nvidia_gpu_facts"));
    assert_eq!(mode_of(&path), 0o644);
}

#[test]
fn the_guides_executable_gpu_fact_is_kept_and_decides_the_mode() {
    let path = scratch("guide-fact-node").join("facts.d/gpu.fact");
    write_file(&path, GUIDE_GPU_FACT, 0o755);
    let root = cpu_root("guide-fact-root");
    let args = json!({"root": root, "local_facts_path": path, "decide_gpu_mode": true});
    let (code, r) = run("guide-fact", args);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["changed"], json!(false));
    assert_eq!(r["local_facts_owner"], json!("user"));
    assert_eq!(r["ansible_facts"]["nvidia_gpu_present"], json!(false));
    assert_eq!(r["ansible_facts"]["gpu_node_enabled"], json!(true));
    assert_eq!(
        r["ansible_facts"]["gpu_node_mode_source"],
        json!("local_facts")
    );
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("is not written by nvidia_gpu_facts")
            && warning.contains("has_nvidia_gpu: true sets this node's GPU mode"),
        "{warning}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), GUIDE_GPU_FACT);
    assert_eq!(mode_of(&path), 0o755);
}

#[test]
fn the_has_nvidia_gpu_variable_wins_over_the_users_gpu_fact() {
    let path = scratch("var-wins-node").join("facts.d/gpu.fact");
    write_file(&path, GUIDE_GPU_FACT, 0o755);
    let args = json!({"root": cpu_root("var-wins-root"), "local_facts_path": path,
                      "decide_gpu_mode": true, "has_nvidia_gpu": false});
    let (_, r) = run("var-wins", args);
    assert_eq!(r["ansible_facts"]["gpu_node_enabled"], json!(false));
    assert_eq!(r["ansible_facts"]["gpu_node_mode_source"], json!("user"));
    assert!(
        r["warnings"][0].as_str().unwrap().contains(
            "its has_nvidia_gpu: true is overridden by the has_nvidia_gpu: false set in Ansible"
        ),
        "{r}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), GUIDE_GPU_FACT);
}

#[test]
fn a_users_plain_json_gpu_fact_decides_too_and_one_without_the_key_does_not() {
    let path = scratch("plain-json-node").join("facts.d/gpu.fact");
    write_file(&path, "{\"has_nvidia_gpu\": \"no\"}\n", 0o644);
    let args = json!({"root": h200_root(), "local_facts_path": path, "decide_gpu_mode": true});
    let (_, r) = run("plain-json-1", args.clone());
    assert_eq!(r["ansible_facts"]["gpu_node_enabled"], json!(false));
    assert_eq!(
        r["ansible_facts"]["gpu_node_mode_source"],
        json!("local_facts")
    );
    write_file(&path, "[site]\nrack=4\n", 0o644);
    let (_, r) = run("plain-json-2", args);
    assert_eq!(
        r["ansible_facts"]["gpu_node_mode_source"],
        json!("detected")
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "[site]\nrack=4\n");
}

#[test]
fn a_gpu_fact_of_an_earlier_release_left_executable_is_made_ours_and_0644() {
    let path = scratch("earlier-node").join("facts.d/gpu.fact");
    write_file(
        &path,
        "{\"nvidia_gpu_present\": true, \"nvidia_gpu_count\": 1}\n",
        0o755,
    );
    let args = json!({"root": h200_root(), "local_facts_path": path, "decide_gpu_mode": true});
    let (_, check) = run(
        "earlier-check",
        json!({"root": h200_root(), "local_facts_path": path,
                                                  "_ansible_check_mode": true}),
    );
    assert_eq!(check["changed"], json!(true));
    assert_eq!(mode_of(&path), 0o755, "check mode changes nothing");
    let (_, r) = run("earlier", args.clone());
    assert_eq!(r["changed"], json!(true));
    assert_eq!(
        r["ansible_facts"]["gpu_node_mode_source"],
        json!("detected")
    );
    assert_eq!(mode_of(&path), 0o644);
    let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["written_by"], json!("nvidia_gpu_facts"));
    let (_, again) = run("earlier-again", args);
    assert_eq!(again["changed"], json!(false));
}

#[test]
fn a_users_script_that_prints_no_json_fails_naming_it_and_is_kept() {
    let path = scratch("bad-script-node").join("facts.d/gpu.fact");
    write_file(&path, "#!/bin/sh\necho has_nvidia_gpu=true\n", 0o755);
    let (code, r) = run(
        "bad-script",
        json!({"root": h200_root(), "local_facts_path": path, "decide_gpu_mode": true}),
    );
    assert_eq!(code, 1);
    let msg = r["msg"].as_str().unwrap();
    assert!(
        msg.contains(&path.to_string_lossy().into_owned())
            && msg.contains("did not print a JSON object")
            && msg.contains("has_nvidia_gpu=true"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "#!/bin/sh\necho has_nvidia_gpu=true\n"
    );
}

#[test]
fn local_facts_write_false_reads_the_file_and_writes_nothing() {
    let dir = scratch("read-only-node");
    let path = dir.join("facts.d/gpu.fact");
    let (_, r) = run(
        "read-only",
        json!({"root": h200_root(), "local_facts_path": path, "local_facts_write": false,
               "decide_gpu_mode": true}),
    );
    assert_eq!(r["changed"], json!(false));
    assert_eq!(
        r["ansible_facts"]["gpu_node_mode_source"],
        json!("detected")
    );
    assert!(!dir.join("facts.d").exists());
}

#[test]
fn a_facts_file_ansible_cannot_read_is_replaced_and_kept_as_a_backup() {
    let dir = scratch("unreadable-node").join("facts.d");
    let path = dir.join("gpu.fact");
    write_file(&path, "{ not json\n", 0o644);
    let (_, r) = run(
        "unreadable",
        json!({"root": h200_root(), "local_facts_path": path}),
    );
    assert_eq!(r["changed"], json!(true));
    assert!(r["warnings"][0]
        .as_str()
        .unwrap()
        .contains("is neither JSON nor INI"));
    let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["written_by"], json!("nvidia_gpu_facts"));
    let backups: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("gpu.fact.") && name.ends_with('~'))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join(&backups[0])).unwrap(),
        "{ not json\n"
    );
}

/// A write killed between staging and rename (SIGKILL, a dropped SSH
/// session) leaves `.gpu.fact.<pid>[.<unique>].tmp`; the next real run
/// removes it, whether the file changes or not; check mode leaves it.
#[test]
fn a_killed_writes_temporary_is_removed_by_the_next_run() {
    let dir = scratch("killed-write").join("facts.d");
    let path = dir.join("gpu.fact");
    // No process has a pid this high (pid_max is at most 2^22): as a dead run's.
    let older = dir.join(".gpu.fact.999999999.tmp");
    let newer = dir.join(".gpu.fact.999999998.00000000deadbeef.tmp");
    write_file(&older, "{\"nvidia_gpu_pres", 0o600);
    write_file(&newer, "{\"nvidia_gpu_pres", 0o600);
    let args = json!({"root": h200_root(), "local_facts_path": path, "_ansible_check_mode": true});
    run("killed-write-check", args);
    assert!(
        older.exists() && newer.exists(),
        "check mode removes nothing"
    );
    let args = json!({"root": h200_root(), "local_facts_path": path});
    let (_, first) = run("killed-write", args.clone());
    assert_eq!(first["changed"], json!(true), "{first:#}");
    assert!(!older.exists() && !newer.exists());
    // An unchanged file: the cleanup still runs.
    write_file(&older, "{", 0o600);
    let (_, second) = run("killed-write-again", args);
    assert_eq!(second["changed"], json!(false), "{second:#}");
    assert!(!older.exists());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["gpu.fact".to_string()]);
}

/// verify.yml's call: registered results as Ansible passes them (a skipped
/// task has no rc), judged against the real H200 capture, in check mode.
#[test]
fn verdicts_judge_registered_results_against_this_detection() {
    let (code, r) = run(
        "verdicts",
        json!({
            "root": h200_root(),
            "_ansible_check_mode": true,
            "verdicts": {
                "gpu_node_enabled": true, "driver_expected": true, "host": "gpu1",
                "nvidia_smi": {"rc": 0, "cmd": "nvidia-smi", "stdout_lines": ["00000000:00:06.0"],
                               "stderr_lines": [], "changed": false},
                "container": {
                    "image": "cuda", "namespace": "k8s.io", "registry_config_path": "/etc/containerd/certs.d",
                    "client": "auto", "pull_missing": true, "nvidia_runtime_usable": true,
                    "images": {"rc": 0, "stdout_lines": [], "stderr_lines": []},
                    "pull": {"skipped": true, "changed": false, "skip_reason": "Conditional result was False"},
                    "run_nerdctl": {"skipped": true, "changed": false},
                    "run_ctr": {"skipped": true, "changed": false},
                },
            },
        }),
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["changed"], json!(false));
    assert_eq!(
        r["verdicts"],
        json!([
            {"check": "nvidia-smi", "status": "PASS",
             "msg": "nvidia-smi sees the 1 GPU(s) detection found (driver 580.159.04)"},
            {"check": "container", "status": "SKIP",
             "msg": "cuda is not on the node yet and check mode pulls nothing: run without --check, or pull it first (ctr -n k8s.io images pull cuda)"},
        ])
    );
}
