//! The built module, run as Ansible runs it (`MODULE ARGS_FILE`, one JSON
//! object on stdout) against scratch directories. Every version 2 file it
//! writes is checked with the real containerd (Debian's 1.6); version 3
//! files are checked against the table paths containerd 2.x documents, with
//! a stand-in `containerd` that answers as 2.0 does.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{release_script, Node};
const HAND_WRITTEN_V2: &str =
    include_str!("../../containerd-config/tests/fixtures/hand-written-v2.toml");
const HAND_WRITTEN_V3: &str =
    include_str!("../../containerd-config/tests/fixtures/hand-written-v3.toml");
/// /etc/containerd/config.toml as Debian 12's containerd package ships it.
const DEBIAN_V2: &str = "version = 2

[plugins]
  [plugins.\"io.containerd.grpc.v1.cri\"]
    [plugins.\"io.containerd.grpc.v1.cri\".cni]
      bin_dir = \"/usr/lib/cni\"
      conf_dir = \"/etc/cni/net.d\"
  [plugins.\"io.containerd.internal.v1.opt\"]
    path = \"/var/lib/containerd/opt\"
";

impl Node {
    fn new(name: &str) -> Node {
        Node::scratch("crc-module", name)
    }

    fn write_config(&self, text: &str) {
        fs::write(self.config(), text).unwrap();
    }

    fn read(&self, path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    /// A `containerd` that answers like 2.0: its version, and for
    /// `config dump` the candidate itself (it merges no imports).
    fn containerd_2(&self) -> String {
        let path = self.root.join("bin/containerd");
        fs::write(
            &path,
            "#!/bin/sh\ncase \"$1\" in\n\
             --version) echo 'containerd github.com/containerd/containerd/v2 v2.0.4 1a43cb6a1035441f9aca8f5666a9b3ef9e70ab20' ;;\n\
             --config) cat \"$2\" ;;\n\
             *) exit 2 ;;\nesac\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// Runs the module with `args` over defaults pointing into this node,
    /// with containerd 1.6 and runc on PATH.
    fn run(&self, args: Value) -> Value {
        let (result, out) = self.run_module(&self.args(args), Some(&path_with_containerd()));
        let failed = result["failed"].as_bool().unwrap();
        assert_eq!(out.status.code(), Some(i32::from(failed)), "{result}");
        result
    }

    fn ok(&self, args: Value) -> Value {
        let result = self.run(args);
        assert_eq!(result["failed"], json!(false), "{result:#}");
        result
    }

    fn fails(&self, args: Value) -> String {
        let result = self.run(args);
        assert_eq!(result["failed"], json!(true), "{result:#}");
        result["msg"].as_str().unwrap().to_string()
    }

    /// Every file and directory under `etc/`: content, mode, owner.
    fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32, u32, u32)> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, u32, u32, u32)>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let content = if meta.is_file() {
                    fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                out.insert(path.clone(), (content, meta.mode(), meta.uid(), meta.gid()));
                if meta.is_dir() {
                    walk(&path, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root.join("etc"), &mut out);
        out
    }

    fn files_in_config_dir(&self) -> usize {
        fs::read_dir(self.root.join("etc/containerd"))
            .unwrap()
            .count()
    }
}

/// containerd 1.6.20 from Debian's archive, fetched and cached by
/// `tests/containerd_releases.py` (the tests never use the machine's own):
/// these tests exist to prove that containerd accepts what we write.
fn containerd() -> PathBuf {
    release_script(&["bin", "1.6"]).join("containerd")
}

/// PATH with containerd 1.6's and runc's folders first: the module asks the
/// containerd it finds for its version and has it validate, and looks for
/// runc, as on a node with Debian's packages. A fresh test machine has
/// neither of its own.
fn path_with_containerd() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let containerd_dir = containerd().parent().unwrap().to_path_buf();
        let runc_dir = release_script(&["runc"]).parent().unwrap().to_path_buf();
        format!(
            "{}:{}:{}",
            containerd_dir.display(),
            runc_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    })
    .clone()
}

/// `containerd --config FILE config dump` succeeds and its effective
/// configuration has `default` as default runtime, the NVIDIA runtime's
/// BinaryName (when given) and SystemdCgroup on runc and it.
fn assert_containerd_accepts(
    config: &Path,
    default: &str,
    nvidia_binary: Option<&str>,
    systemd: bool,
) -> String {
    let out = Command::new(containerd())
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "containerd rejects {}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8(out.stdout).unwrap();
    let doc: toml_edit::DocumentMut = dump.parse().unwrap();
    let cri = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
    assert_eq!(
        cri["default_runtime_name"].as_str(),
        Some(default),
        "{dump}"
    );
    assert_eq!(
        cri["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
        Some(systemd),
        "{dump}"
    );
    if let Some(binary) = nvidia_binary {
        let nvidia = &cri["runtimes"]["nvidia"];
        assert_eq!(
            nvidia["runtime_type"].as_str(),
            Some("io.containerd.runc.v2"),
            "{dump}"
        );
        assert_eq!(
            nvidia["options"]["BinaryName"].as_str(),
            Some(binary),
            "{dump}"
        );
        assert_eq!(
            nvidia["options"]["SystemdCgroup"].as_bool(),
            Some(systemd),
            "{dump}"
        );
    }
    dump
}

/// The runtime settings at the table paths containerd 2.x documents for
/// config version 3 (docs/cri/config.md), and no version 2 plugin name.
fn assert_version_3_paths(text: &str, default: &str, nvidia_binary: &str) {
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    assert_eq!(doc["version"].as_integer(), Some(3));
    let containerd = &doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"];
    assert_eq!(
        containerd["default_runtime_name"].as_str(),
        Some(default),
        "{text}"
    );
    let nvidia = &containerd["runtimes"]["nvidia"];
    assert_eq!(
        nvidia["runtime_type"].as_str(),
        Some("io.containerd.runc.v2"),
        "{text}"
    );
    assert_eq!(
        nvidia["options"]["BinaryName"].as_str(),
        Some(nvidia_binary),
        "{text}"
    );
    assert_eq!(
        nvidia["options"]["SystemdCgroup"].as_bool(),
        Some(true),
        "{text}"
    );
    assert_eq!(
        containerd["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
        Some(true),
        "{text}"
    );
    assert!(
        !text.contains("io.containerd.grpc.v1.cri\".containerd"),
        "{text}"
    );
}

/// A second run with the same input changes nothing, byte for byte.
fn assert_second_run_changes_nothing(node: &Node, args: Value) {
    let before = node.snapshot();
    let again = node.ok(args);
    assert_eq!(again["changed"], json!(false), "{again:#}");
    assert_eq!(again["restart_required"], json!(false));
    assert_eq!(again["backup_file"], Value::Null);
    assert!(again.get("diff").is_none());
    assert_eq!(node.snapshot(), before);
}

#[test]
fn template_v2_without_a_file_creates_one_containerd_accepts() {
    let node = Node::new("tpl-v2-new");
    let args = json!({"mode": "template"});
    let out = node.ok(args.clone());
    assert_eq!(out["changed"], json!(true));
    assert_eq!(out["restart_required"], json!(true));
    assert_eq!(
        out["config_version"],
        json!(2),
        "containerd 1.6 on the node: version 2"
    );
    assert_eq!(out["default_runtime"], json!("nvidia"));
    // The guide's fact, set where the runtime is written.
    assert_eq!(out["ansible_facts"]["nvidia_runtime_enabled"], json!(true));
    assert_eq!(out["backup_file"], Value::Null);
    assert_eq!(out["validated"], json!(true));
    assert!(
        out["containerd_version"]
            .as_str()
            .unwrap()
            .starts_with("1."),
        "{out}"
    );
    assert_eq!(
        out["diff"][0]["before_header"],
        json!(format!("{} (absent)", node.config().display()))
    );
    assert_eq!(
        out["diff"][0]["after"].as_str().unwrap(),
        node.read(&node.config())
    );
    assert_eq!(fs::metadata(node.config()).unwrap().mode() & 0o7777, 0o644);
    assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn template_v2_replacing_a_file_keeps_mode_owner_and_a_backup() {
    let node = Node::new("tpl-v2-replace");
    node.write_config(HAND_WRITTEN_V2);
    fs::set_permissions(node.config(), fs::Permissions::from_mode(0o640)).unwrap();
    // As root (CI), give it another owner; otherwise it keeps ours.
    let _ = std::os::unix::fs::chown(node.config(), Some(4242), Some(4243));
    let owner = fs::metadata(node.config())
        .map(|m| (m.uid(), m.gid()))
        .unwrap();
    let out = node.ok(json!({"mode": "template", "template_vars": {"sandbox_image": "registry.internal.example/pause:3.10"}}));
    assert_eq!(out["changed"], json!(true));
    let backup = PathBuf::from(out["backup_file"].as_str().unwrap());
    assert_eq!(node.read(&backup), HAND_WRITTEN_V2);
    let meta = fs::metadata(node.config()).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), owner);
    let dump = assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
    assert!(dump.contains("sandbox_image = \"registry.internal.example/pause:3.10\""));
    assert_eq!(out["diff"][0]["before"].as_str().unwrap(), HAND_WRITTEN_V2);
}

#[test]
fn template_without_nvidia_uses_the_standard_template() {
    let node = Node::new("tpl-runc");
    let out = node.ok(json!({"mode": "template", "nvidia_runtime": false}));
    assert_eq!(out["default_runtime"], json!("runc"));
    assert_eq!(out["ansible_facts"]["nvidia_runtime_enabled"], json!(false));
    let text = node.read(&node.config());
    assert!(!text.contains("nvidia"), "{text}");
    assert_containerd_accepts(&node.config(), "runc", None, true);
}

#[test]
fn template_v2_not_as_default_and_without_systemd_cgroup() {
    let node = Node::new("tpl-not-default");
    let args = json!({"mode": "template", "set_as_default": false, "systemd_cgroup": false});
    let out = node.ok(args.clone());
    assert_eq!(out["default_runtime"], json!("runc"));
    assert_containerd_accepts(&node.config(), "runc", Some(&node.runtime()), false);
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn template_v3_for_containerd_2() {
    let node = Node::new("tpl-v3");
    let args = json!({"mode": "template", "containerd_path": node.containerd_2()});
    let out = node.ok(args.clone());
    assert_eq!(
        out["config_version"],
        json!(3),
        "containerd 2.0 on the node: version 3"
    );
    assert_eq!(out["containerd_version"], json!("v2.0.4"));
    assert_eq!(out["validated"], json!(true));
    let text = node.read(&node.config());
    assert_version_3_paths(&text, "nvidia", &node.runtime());
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    assert_eq!(
        doc["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].as_str(),
        Some("registry.k8s.io/pause:3.10")
    );
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn merge_v2_changes_only_the_runtime_settings() {
    let node = Node::new("merge-v2");
    node.write_config(HAND_WRITTEN_V2);
    let args = json!({"mode": "merge"});
    let out = node.ok(args.clone());
    assert_eq!(out["config_version"], json!(2));
    let text = node.read(&node.config());
    let expected = HAND_WRITTEN_V2
        .replace("default_runtime_name = \"runc\"", "default_runtime_name = \"nvidia\"")
        .replace(
            "SystemdCgroup = false # kubelet still on cgroupfs here\n",
            &format!(
                "SystemdCgroup = true # kubelet still on cgroupfs here\n\
                 \n        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\n\
                 \x20         runtime_type = \"io.containerd.runc.v2\"\n\
                 \n          [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia.options]\n\
                 \x20           BinaryName = \"{}\"\n\
                 \x20           SystemdCgroup = true\n",
                node.runtime()
            ),
        );
    assert_eq!(text, expected);
    assert_eq!(
        node.read(Path::new(out["backup_file"].as_str().unwrap())),
        HAND_WRITTEN_V2
    );
    let dump = assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
    assert!(dump.contains(
        "endpoint = [\"https://mirror.internal.example:5000\", \"https://registry-1.docker.io\"]"
    ));
    assert!(dump.contains("runtime_type = \"io.containerd.kata.v2\""));
    let files = node.files_in_config_dir();
    assert_second_run_changes_nothing(&node, args);
    assert_eq!(node.files_in_config_dir(), files, "no second backup");
}

#[test]
fn merge_v2_without_a_file() {
    let node = Node::new("merge-v2-new");
    let args = json!({"mode": "merge"});
    let out = node.ok(args.clone());
    assert_eq!(out["config_version"], json!(2));
    assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn merge_v2_into_debians_file() {
    let node = Node::new("merge-debian");
    node.write_config(DEBIAN_V2);
    node.ok(json!({"mode": "merge"}));
    let text = node.read(&node.config());
    assert!(text.starts_with(
        &DEBIAN_V2[..DEBIAN_V2
            .find("  [plugins.\"io.containerd.internal.v1.opt\"]")
            .unwrap()]
    ));
    assert!(text.ends_with(
        "  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"/var/lib/containerd/opt\"\n"
    ));
    let dump = assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
    assert!(dump.contains("bin_dir = \"/usr/lib/cni\""));
}

#[test]
fn merge_without_nvidia_makes_runc_the_default_and_keeps_other_runtimes() {
    let node = Node::new("merge-runc");
    node.write_config(HAND_WRITTEN_V2);
    node.ok(json!({"mode": "merge"}));
    let with_nvidia = node.read(&node.config());
    let args = json!({"mode": "merge", "nvidia_runtime": false});
    let out = node.ok(args.clone());
    assert_eq!(out["default_runtime"], json!("runc"));
    assert_eq!(
        node.read(&node.config()),
        with_nvidia.replace(
            "default_runtime_name = \"nvidia\"",
            "default_runtime_name = \"runc\""
        )
    );
    assert_containerd_accepts(&node.config(), "runc", Some(&node.runtime()), true);
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn merge_v3_for_containerd_2_keeps_the_file() {
    let node = Node::new("merge-v3");
    node.write_config(HAND_WRITTEN_V3);
    let args = json!({"mode": "merge", "containerd_path": node.containerd_2()});
    let out = node.ok(args.clone());
    assert_eq!(out["config_version"], json!(3));
    let text = node.read(&node.config());
    let head = &HAND_WRITTEN_V3[..HAND_WRITTEN_V3.find("      default_runtime_name").unwrap()];
    assert!(text.starts_with(head), "{text}");
    assert!(text.contains("      default_runtime_name = 'nvidia'\n"));
    assert_version_3_paths(&text, "nvidia", &node.runtime());
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn merge_v3_without_a_file() {
    let node = Node::new("merge-v3-new");
    let args =
        json!({"mode": "merge", "config_version": "3", "containerd_path": node.containerd_2()});
    node.ok(args.clone());
    assert_version_3_paths(&node.read(&node.config()), "nvidia", &node.runtime());
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn merge_enables_the_cri_plugin_dockers_packages_disable() {
    let node = Node::new("merge-docker");
    node.write_config("#   Copyright 2018-2022 Docker Inc.\n\ndisabled_plugins = [\"cri\"]\n");
    let out = node.ok(json!({"mode": "merge"}));
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("enabled the CRI plugin (removed cri from disabled_plugins"),
        "{out}"
    );
    assert!(node
        .read(&node.config())
        .contains("disabled_plugins = []\n"));
    assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
}

#[test]
fn drop_in_v2_with_debians_file() {
    let node = Node::new("dropin-debian");
    node.write_config(DEBIAN_V2);
    let args = json!({"mode": "drop_in"});
    let out = node.ok(args.clone());
    assert_eq!(out["drop_in_path"], json!(node.drop_in()));
    assert_eq!(out["drop_in_backup_file"], Value::Null);
    assert_eq!(out["diff"].as_array().unwrap().len(), 2);
    assert_eq!(
        node.read(&node.config()),
        DEBIAN_V2.replace(
            "version = 2\n",
            &format!(
                "version = 2\nimports = [\"{}\"]\n",
                node.drop_in().display()
            )
        )
    );
    let drop_in = node.read(&node.drop_in());
    assert!(
        drop_in.contains("\nversion = 2\n"),
        "the drop-in's version is the main file's"
    );
    assert!(
        drop_in.contains("bin_dir = \"/usr/lib/cni\""),
        "carries the main file's CRI section"
    );
    let dump = assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
    assert!(dump.contains("bin_dir = \"/usr/lib/cni\""));
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn drop_in_v2_keeps_the_main_files_settings_in_effect() {
    let node = Node::new("dropin-hand");
    node.write_config(HAND_WRITTEN_V2);
    let args = json!({"mode": "drop_in"});
    node.ok(args.clone());
    let main = node.read(&node.config());
    assert_eq!(
        main,
        HAND_WRITTEN_V2.replace(
            "version = 2\n",
            &format!(
                "version = 2\nimports = [\"{}\"]\n",
                node.drop_in().display()
            )
        )
    );
    let dump = assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
    assert!(dump.contains("sandbox_image = \"registry.k8s.io/pause:3.9\""));
    assert!(dump.contains(
        "endpoint = [\"https://mirror.internal.example:5000\", \"https://registry-1.docker.io\"]"
    ));
    assert!(dump.contains("runtime_type = \"io.containerd.kata.v2\""));
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn drop_in_v2_without_a_main_file() {
    let node = Node::new("dropin-new");
    fs::remove_dir_all(node.root.join("etc/containerd")).unwrap();
    let args = json!({"mode": "drop_in"});
    let out = node.ok(args.clone());
    assert_eq!(out["backup_file"], Value::Null);
    assert!(node.read(&node.config()).ends_with(&format!(
        "version = 2\nimports = [\"{}\"]\n",
        node.drop_in().display()
    )));
    assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn drop_in_v2_updates_its_file_with_a_backup() {
    let node = Node::new("dropin-update");
    node.write_config(DEBIAN_V2);
    node.ok(json!({"mode": "drop_in"}));
    let old = node.read(&node.drop_in());
    let out = node.ok(json!({"mode": "drop_in", "systemd_cgroup": false}));
    assert_eq!(
        out["backup_file"],
        Value::Null,
        "the main file is unchanged"
    );
    assert_eq!(
        node.read(Path::new(out["drop_in_backup_file"].as_str().unwrap())),
        old
    );
    assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), false);
}

#[test]
fn drop_in_v3_for_containerd_2() {
    let node = Node::new("dropin-v3");
    node.write_config(HAND_WRITTEN_V3);
    // The stand-in containerd does not merge imports, so it cannot validate.
    let args =
        json!({"mode": "drop_in", "containerd_path": node.containerd_2(), "validate": false});
    let out = node.ok(args.clone());
    assert_eq!(out["config_version"], json!(3));
    assert_eq!(out["validated"], json!(false));
    assert_eq!(
        node.read(&node.config()),
        HAND_WRITTEN_V3.replace(
            "version = 3\n",
            &format!(
                "version = 3\nimports = [\"{}\"]\n",
                node.drop_in().display()
            )
        )
    );
    let drop_in = node.read(&node.drop_in());
    assert_version_3_paths(&drop_in, "nvidia", &node.runtime());
    assert!(
        drop_in.contains("enable_cdi = true"),
        "carries the main file's runtime plugin section"
    );
    assert!(
        !drop_in.contains("io.containerd.cri.v1.images"),
        "the images plugin stays in the main file"
    );
    assert_second_run_changes_nothing(&node, args);
}

#[test]
fn an_invalid_existing_file_is_refused_and_left_as_it_was() {
    for mode in ["merge", "drop_in"] {
        let node = Node::new(&format!("invalid-{mode}"));
        node.write_config("version = 2\n# comment\n[plugins.\"io.containerd.grpc.v1.cri\"\nsandbox_image = \"x\"\n");
        let before = node.snapshot();
        let msg = node.fails(json!({"mode": mode}));
        assert_eq!(
            msg,
            format!(
                "{} is not valid TOML: line 3, column 37: unclosed table, expected `]`; nothing written",
                node.config().display()
            )
        );
        assert_eq!(
            node.snapshot(),
            before,
            "no byte changed, no temporary file left"
        );
    }
}

#[test]
fn a_missing_runtime_binary_fails_before_anything_is_written() {
    for mode in ["template", "merge", "drop_in"] {
        let node = Node::new(&format!("no-runtime-{mode}"));
        node.write_config(DEBIAN_V2);
        let before = node.snapshot();
        let msg = node
            .fails(json!({"mode": mode, "runtime_path": "/opt/nowhere/nvidia-container-runtime"}));
        assert!(
            msg.starts_with(
                "the NVIDIA runtime binary /opt/nowhere/nvidia-container-runtime does not exist"
            ),
            "{msg}"
        );
        assert!(msg.contains("require_runtime_binary: false"), "{msg}");
        assert_eq!(node.snapshot(), before);
    }
    let node = Node::new("no-runtime-exec");
    fs::set_permissions(node.runtime(), fs::Permissions::from_mode(0o644)).unwrap();
    let msg = node.fails(json!({"mode": "merge"}));
    assert!(msg.contains("is not executable"), "{msg}");
}

#[test]
fn require_runtime_binary_false_configures_it_anyway() {
    let node = Node::new("no-runtime-ok");
    let out = node.ok(json!({"mode": "merge", "runtime_path": "/opt/later/nvidia-container-runtime", "require_runtime_binary": false}));
    assert_eq!(out["changed"], json!(true));
    assert_containerd_accepts(
        &node.config(),
        "nvidia",
        Some("/opt/later/nvidia-container-runtime"),
        true,
    );
}

#[test]
fn check_mode_writes_nothing_and_reports_the_diff() {
    for mode in ["template", "merge", "drop_in"] {
        for existing in [None, Some(HAND_WRITTEN_V2)] {
            let node = Node::new(&format!("check-{mode}-{}", existing.is_some()));
            if let Some(text) = existing {
                node.write_config(text);
            }
            let before = node.snapshot();
            let out = node.ok(json!({"mode": mode, "_ansible_check_mode": true}));
            assert_eq!(out["changed"], json!(true), "{out:#}");
            assert_eq!(out["restart_required"], json!(true));
            assert_eq!(out["backup_file"], Value::Null);
            assert!(
                out["msg"].as_str().unwrap().starts_with("would update"),
                "{out}"
            );
            let diffs = out["diff"].as_array().unwrap();
            assert_eq!(diffs.len(), if mode == "drop_in" { 2 } else { 1 });
            assert_eq!(
                diffs.last().unwrap()["before"].as_str().unwrap(),
                existing.unwrap_or("")
            );
            assert_eq!(
                node.snapshot(),
                before,
                "{mode}: nothing written, not even a temporary file"
            );
        }
    }
    // Not even the directory.
    let node = Node::new("check-nodir");
    fs::remove_dir_all(node.root.join("etc/containerd")).unwrap();
    node.ok(json!({"mode": "drop_in", "_ansible_check_mode": true}));
    assert!(!node.root.join("etc/containerd").exists());
}

#[test]
fn check_mode_still_has_containerd_validate() {
    let node = Node::new("check-invalid");
    node.write_config(DEBIAN_V2);
    let before = node.snapshot();
    let msg = node.fails(json!({"mode": "template", "_ansible_check_mode": true, "template_vars": {"containerd_oom_score": "high"}}));
    assert!(
        msg.contains("containerd rejects the new configuration"),
        "{msg}"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn a_config_containerd_rejects_is_never_written() {
    let node = Node::new("rejected");
    node.write_config(DEBIAN_V2);
    let before = node.snapshot();
    let msg =
        node.fails(json!({"mode": "template", "template_vars": {"containerd_oom_score": "high"}}));
    assert!(
        msg.starts_with(&format!(
            "containerd rejects the new configuration for {}, so it was not written: ",
            node.config().display()
        )),
        "{msg}"
    );
    assert!(msg.contains("Can't convert high(string) to int"), "{msg}");
    assert_eq!(
        node.snapshot(),
        before,
        "no byte changed, no temporary file left"
    );
}

#[test]
fn an_import_that_overrides_the_runtimes_is_caught() {
    let node = Node::new("overridden");
    let other = node.root.join("etc/containerd/registry.toml");
    fs::write(
        &other,
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    )
    .unwrap();
    node.write_config("version = 2\nimports = [\"registry.toml\"]\n");
    let before = node.snapshot();
    let msg = node.fails(json!({"mode": "merge"}));
    assert!(
        msg.contains("default_runtime_name` is \"runc\", expected \"nvidia\""),
        "{msg}"
    );
    assert!(
        msg.contains("another file it imports overrides these settings; nothing written"),
        "{msg}"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn config_version_3_is_refused_for_containerd_1() {
    let node = Node::new("v3-on-1");
    let msg = node.fails(json!({"mode": "template", "config_version": "3"}));
    assert!(
        msg.starts_with("config version 3 needs containerd 2.0 or later, and "),
        "{msg}"
    );
    assert!(msg.ends_with("(set config_version: 2)"), "{msg}");
}

#[test]
fn editing_cannot_change_the_files_version() {
    let node = Node::new("v2-to-3");
    node.write_config(HAND_WRITTEN_V2);
    let msg = node.fails(
        json!({"mode": "merge", "config_version": 3, "containerd_path": node.containerd_2()}),
    );
    assert!(
        msg.contains("is a version 2 config but config_version 3 was asked"),
        "{msg}"
    );
    assert_eq!(node.read(&node.config()), HAND_WRITTEN_V2);
}

#[test]
fn a_user_template_that_does_not_configure_the_runtime_is_refused() {
    let node = Node::new("user-template");
    let template = "version = {{ config_version }}\n\
        [plugins.{{ cri_plugin | toml }}.containerd]\n\
        default_runtime_name = {{ runtime_name | toml }}\n\
        [plugins.{{ cri_plugin | toml }}.containerd.runtimes.runc.options]\n\
        SystemdCgroup = {{ systemd_cgroup | toml }}\n";
    let msg = node.fails(json!({"mode": "template", "template": template}));
    assert!(
        msg.starts_with(
            "the rendered template given in `template` does not configure what the task asks: "
        ),
        "{msg}"
    );
    assert!(msg.contains("`plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.runtime_type` is missing"), "{msg}");
    assert!(msg.contains("the runtime `plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia` is missing"), "{msg}");
    assert!(!node.config().exists());
}

#[test]
fn a_template_error_names_the_line() {
    let node = Node::new("template-error");
    let msg = node.fails(json!({"mode": "template", "template": "version = {{ config_version }}\nsandbox_image = {{ sandbox | toml }}\n"}));
    assert_eq!(
        msg,
        "template given in `template`, line 2 (`sandbox_image = {{ sandbox | toml }}`): undefined value; nothing written"
    );
}

#[test]
fn template_options_outside_template_mode_are_ignored_with_a_warning() {
    let node = Node::new("warn-template");
    let out = node.ok(json!({"mode": "merge", "template_vars": {"sandbox_image": "x"}}));
    assert_eq!(
        out["warnings"],
        json!(["template_vars is used only with mode: template; it is ignored"])
    );
}

#[test]
fn validate_false_skips_containerd() {
    let node = Node::new("no-validate");
    let out = node.ok(json!({"mode": "merge", "validate": false}));
    assert_eq!(out["validated"], json!(false));
    assert_containerd_accepts(&node.config(), "nvidia", Some(&node.runtime()), true);
}

#[test]
fn unknown_options_and_bad_runtime_names_are_refused() {
    let node = Node::new("bad-options");
    let msg = node.fails(json!({"mode": "merge", "runtime": "nvidia"}));
    assert!(
        msg.starts_with("Unsupported parameters for (containerd_runtime_config) module: runtime."),
        "{msg}"
    );
    let msg = node.fails(json!({"mode": "merge", "runtime_name": "runc"}));
    assert!(
        msg.starts_with("runtime_name must not be \"runc\""),
        "{msg}"
    );
    let msg = node.fails(json!({"mode": "drop_in", "drop_in_path": node.config()}));
    assert!(msg.starts_with("drop_in_path "), "{msg}");
    assert!(
        msg.ends_with("is the main config's path ") || msg.contains("is the main config's path"),
        "{msg}"
    );
}

/// `state: inspect` on `node`: the task's result, after checking that it
/// changed nothing (in check mode or not) and reported the same both times.
fn inspect(node: &Node, args: Value) -> Value {
    let before = node.snapshot();
    let mut all = json!({"state": "inspect"});
    for (k, v) in args.as_object().unwrap() {
        all[k] = v.clone();
    }
    let out = node.ok(all.clone());
    all["_ansible_check_mode"] = json!(true);
    let checked = node.ok(all);
    assert_eq!(out["changed"], json!(false), "{out:#}");
    assert_eq!(
        out["current"], checked["current"],
        "check mode reports the same"
    );
    assert_eq!(out["msg"], checked["msg"]);
    assert_eq!(node.snapshot(), before, "inspect writes nothing");
    assert!(out.get("diff").is_none());
    out
}

#[test]
fn inspect_reports_the_effective_configuration_containerd_reads() {
    let node = Node::new("inspect-template");
    node.ok(json!({"mode": "template"}));
    let out = inspect(&node, json!({}));
    // runc's BinaryName is bare: whether `runc` is on containerd's service
    // PATH is this machine's business, not the test's (node.rs tests the
    // lookup with files of their own).
    let mut current = out["current"].clone();
    assert!(current["runtimes"]["runc"]["binary_exists"].is_boolean());
    current["runtimes"]["runc"]["binary_exists"] = json!(null);
    assert_eq!(
        current,
        json!({
            "path": node.config(),
            "exists": true,
            "source": "containerd config dump",
            "error": null,
            "config_version": 2,
            "default_runtime": "nvidia",
            "runtimes": {
                "nvidia": {
                    "runtime_type": "io.containerd.runc.v2",
                    "binary_name": node.runtime(),
                    "systemd_cgroup": true,
                    "binary_exists": true,
                },
                "runc": {
                    "runtime_type": "io.containerd.runc.v2",
                    "binary_name": null,
                    "systemd_cgroup": true,
                    "binary_exists": null,
                },
            },
            "imports": [],
            "cri_disabled": false,
            "daemons": [],
        })
    );
    assert!(out["containerd_version"]
        .as_str()
        .unwrap()
        .starts_with("1."));
    assert_eq!(
        out["msg"],
        json!(format!(
            "{} (read with containerd config dump): default runtime nvidia ({}, SystemdCgroup \
             true); runtimes: nvidia, runc",
            node.config().display(),
            node.runtime()
        ))
    );
}

#[test]
fn inspect_follows_the_imports_of_a_drop_in() {
    let node = Node::new("inspect-drop-in");
    node.write_config(DEBIAN_V2);
    node.ok(json!({"mode": "drop_in"}));
    let current = &inspect(&node, json!({}))["current"];
    assert_eq!(current["imports"], json!([node.drop_in()]));
    assert_eq!(current["default_runtime"], json!("nvidia"));
    assert_eq!(
        current["runtimes"]["nvidia"]["binary_name"],
        json!(node.runtime())
    );
    assert_eq!(current["runtimes"]["nvidia"]["systemd_cgroup"], json!(true));
}

#[test]
fn inspect_sees_a_hand_edit_and_a_missing_runtime_binary() {
    let node = Node::new("inspect-edited");
    node.ok(json!({"mode": "template"}));
    let text = node.read(&node.config());
    node.write_config(&text.replace(
        "default_runtime_name = \"nvidia\"",
        "default_runtime_name = \"runc\"",
    ));
    fs::remove_file(node.runtime()).unwrap();
    let current = &inspect(&node, json!({}))["current"];
    assert_eq!(current["default_runtime"], json!("runc"));
    assert_eq!(current["runtimes"]["nvidia"]["binary_exists"], json!(false));
    // runc's bare BinaryName: found or not on this machine's service PATH.
    assert!(current["runtimes"]["runc"]["binary_exists"].is_boolean());
}

#[test]
fn inspect_judges_against_the_runtime_setup_given_and_only_then() {
    let node = Node::new("inspect-judges");
    node.ok(json!({"mode": "template"}));
    let fine = inspect(&node, json!({}));
    assert_eq!(fine["problems"], json!([]), "{fine:#}");
    let line = fine["as_expected"].as_str().unwrap();
    assert!(
        line.starts_with(&format!(
            "default runtime nvidia ({}), SystemdCgroup true; read with ",
            node.runtime()
        )),
        "{line}"
    );
    // The same file judged for a CPU node: the NVIDIA runtime is the default.
    let cpu = inspect(&node, json!({"nvidia_runtime": false}));
    assert_eq!(cpu["problems"][0]["fix"], json!("configure"), "{cpu:#}");
    assert!(cpu["as_expected"].is_null());

    let text = node.read(&node.config());
    node.write_config(&text.replace(
        "default_runtime_name = \"nvidia\"",
        "default_runtime_name = \"runc\"",
    ));
    fs::remove_file(node.runtime()).unwrap();
    let broken = inspect(&node, json!({}));
    // runc's bare BinaryName is looked up on the service PATH, which this
    // machine's may lack: a third problem then, not asserted here.
    assert_eq!(
        json!(broken["problems"].as_array().unwrap()[..2]),
        json!([
            {"msg": "containerd's default runtime is runc, expected nvidia", "fix": "configure"},
            {"msg": format!("the nvidia runtime's binary {} does not exist or is not executable, so no pod can start with it", node.runtime()),
             "fix": "install_runtime"},
        ]),
        "{broken:#}"
    );
    // Without nvidia_runtime, inspect reports and does not judge.
    let unjudged = inspect(&node, json!({"nvidia_runtime": null}));
    assert!(unjudged.get("problems").is_none(), "{unjudged:#}");
    assert_eq!(unjudged["current"], broken["current"]);
}

#[test]
fn inspect_without_a_file_reports_containerds_built_in_defaults() {
    let node = Node::new("inspect-absent");
    let out = inspect(&node, json!({}));
    let current = &out["current"];
    assert_eq!(current["exists"], json!(false));
    assert_eq!(current["source"], json!("containerd config dump"));
    assert_eq!(current["default_runtime"], json!("runc"));
    assert_eq!(current["runtimes"]["runc"]["systemd_cgroup"], json!(false));
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("does not exist: containerd's built-in defaults"),
        "{out}"
    );
}

#[test]
fn inspect_reports_a_config_containerd_rejects_without_failing() {
    let node = Node::new("inspect-invalid");
    node.write_config("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n");
    let out = inspect(&node, json!({}));
    let error = out["current"]["error"].as_str().unwrap();
    assert!(error.contains("config dump` failed"), "{error}");
    assert!(error.contains("failed to load TOML"), "{error}");
    assert_eq!(out["current"]["default_runtime"], Value::Null);
    assert_eq!(out["current"]["runtimes"], json!({}));
    assert!(out["msg"]
        .as_str()
        .unwrap()
        .starts_with("cannot read containerd's configuration: "));
}

#[test]
fn inspect_reads_version_3_from_containerd_2() {
    let node = Node::new("inspect-v3");
    node.write_config(HAND_WRITTEN_V3);
    let out = inspect(&node, json!({"containerd_path": node.containerd_2()}));
    assert_eq!(out["containerd_version"], json!("v2.0.4"));
    assert_eq!(out["current"]["config_version"], json!(3));
    assert_eq!(out["current"]["source"], json!("containerd config dump"));
    let doc: toml_edit::DocumentMut = HAND_WRITTEN_V3.parse().unwrap();
    assert_eq!(
        out["current"]["default_runtime"].as_str(),
        doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["default_runtime_name"]
            .as_str()
    );
}

#[test]
fn every_run_reports_the_configuration_it_found_before_changing_it() {
    let node = Node::new("current-before");
    let first = node.ok(json!({"mode": "template"}));
    assert_eq!(first["changed"], json!(true));
    assert_eq!(first["current"]["exists"], json!(false));
    assert_eq!(first["current"]["default_runtime"], json!("runc"));
    // Read from the files even though containerd is there and validated the
    // new file: one containerd run fewer on every change.
    assert_eq!(first["validated"], json!(true));
    assert_eq!(first["current"]["source"], json!("file"));
    let second =
        node.ok(json!({"mode": "merge", "set_as_default": false, "_ansible_check_mode": true}));
    assert_eq!(second["changed"], json!(true));
    assert_eq!(
        second["default_runtime"],
        json!("runc"),
        "what it would write"
    );
    assert_eq!(
        second["current"]["default_runtime"],
        json!("nvidia"),
        "what it found"
    );
}

#[test]
fn state_configure_needs_nvidia_runtime_and_inspect_a_plain_path() {
    let node = Node::new("state-options");
    let msg = node.fails(json!({"nvidia_runtime": null}));
    assert_eq!(
        msg,
        "state is configure but all of the following are missing: nvidia_runtime"
    );
    let msg = node.fails(json!({"state": "inspect", "path": "etc/containerd/config.toml"}));
    assert_eq!(msg, "path must be absolute, got etc/containerd/config.toml");
    let msg = node.fails(json!({"state": "read"}));
    assert!(msg.contains("state"), "{msg}");
}
