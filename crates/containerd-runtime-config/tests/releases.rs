//! The module against real containerd releases (issue 12): 1.6.20, 1.7.24
//! and 2.1.9 from Debian's archive, fetched and cached by
//! `tests/containerd_releases.py`. Each test here failed against the release
//! named in it before the fix it guards.

use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use std::process::Command;

mod common;

use common::{release, Node};

fn containerd(version: &str) -> String {
    release(version)
        .join("containerd")
        .to_string_lossy()
        .into_owned()
}

/// `containerd config default` of a release.
fn default_config(version: &str) -> String {
    let out = Command::new(containerd(version))
        .args(["config", "default"])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

impl Node {
    fn new(name: &str) -> Node {
        Node::scratch("crc-rel", name)
    }
    /// The module with `args` over the common defaults, validating with
    /// containerd `version`.
    fn run(&self, version: &str, args: Value) -> Value {
        let mut all = self.args(args);
        all["containerd_path"] = containerd(version).into();
        self.run_module(&all, None).0
    }
    fn ok(&self, version: &str, args: Value) -> Value {
        let out = self.run(version, args);
        assert_eq!(out["failed"], json!(false), "{out:#}");
        out
    }
    /// The default runtime the daemon of `version` would run pods with,
    /// reading the real file from `/` as systemd starts it.
    fn effective_default(&self, version: &str) -> String {
        let dump = dump(version, &self.config());
        let cri = if dump["version"].as_integer() == Some(3) {
            &dump["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]
        } else {
            &dump["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
        };
        cri["default_runtime_name"].as_str().unwrap().to_string()
    }
    fn names_in(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// containerd 2.x re-reads its config after a strict parse fails; through
/// `--config /dev/stdin` (a pipe) the second read found nothing and every
/// version 2 file (1.7's own default) was refused in check mode.
#[test]
fn containerd_2_validates_a_version_2_file_in_check_mode() {
    let node = Node::new("v2-on-2x-check");
    fs::write(node.config(), default_config("1.7")).unwrap();
    for mode in ["merge", "template", "drop_in"] {
        let out = node.ok("2.1", json!({"mode": mode, "_ansible_check_mode": true}));
        assert_eq!(out["changed"], json!(true), "{mode}: {out:#}");
        assert_eq!(out["config_version"], json!(2));
    }
}

/// drop_in compared the effective configuration with and without the
/// drop-in; the "without" copy went through /dev/stdin and 2.x refused it.
#[test]
fn containerd_2_drop_in_over_a_version_2_file() {
    let node = Node::new("v2-on-2x-drop-in");
    fs::write(node.config(), default_config("1.7")).unwrap();
    let out = node.ok("2.1", json!({"mode": "drop_in"}));
    assert_eq!(out["validated"], json!(true));
    assert_eq!(node.effective_default("2.1"), "nvidia");
}

/// containerd 1.6 resolves a relative `imports` entry against its working
/// directory (`/` under systemd), 1.7 and 2.x against the file's folder. A
/// main file with `imports = ["conf.d/*.toml"]` was taken as importing the
/// drop-in already; 1.6 never loaded it.
#[test]
fn containerd_1_6_loads_the_drop_in_under_a_relative_import() {
    for version in ["1.6", "1.7"] {
        let node = Node::new(&format!("relative-{version}"));
        let main = default_config(version).replace("imports = []", "imports = [\"conf.d/*.toml\"]");
        fs::write(node.config(), main).unwrap();
        node.ok(version, json!({"mode": "drop_in"}));
        assert_eq!(
            node.effective_default(version),
            "nvidia",
            "containerd {version}"
        );
    }
}

/// A glob without extension (`conf.d/*`) matched the module's temporary and
/// backup files: the second change failed and a crash left a file containerd
/// would import. Neither ever lands where the glob looks.
#[test]
fn an_extensionless_glob_never_sees_temporaries_or_backups() {
    let node = Node::new("glob-star");
    let glob = node.conf_d().join("*");
    let main = default_config("1.7").replace(
        "imports = []",
        &format!("imports = [{:?}]", glob.to_string_lossy()),
    );
    fs::write(node.config(), main).unwrap();
    node.ok("1.7", json!({"mode": "drop_in"}));
    let second = node.ok("1.7", json!({"mode": "drop_in", "systemd_cgroup": false}));
    assert_eq!(second["changed"], json!(true));
    assert!(second["drop_in_backup_file"].is_string(), "{second:#}");
    assert_eq!(node.names_in(&node.conf_d()), vec!["99-nvidia.toml"]);
    assert_eq!(node.effective_default("1.7"), "nvidia");
}

/// containerd's effective configuration (1.x: version 2 paths).
fn dump(version: &str, config: &Path) -> toml_edit::DocumentMut {
    let out = Command::new(containerd(version))
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().parse().unwrap()
}

const CRUN: &str = "
        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun]
          runtime_type = \"io.containerd.runc.v2\"
          [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun.options]
            BinaryName = \"/usr/bin/crun\"
";

/// `set_as_default: false` forced `default_runtime_name` to runc, replacing
/// a user's crun (or kata) default. It is left alone; only a default that
/// is the NVIDIA runtime itself goes back to runc.
#[test]
fn set_as_default_false_leaves_a_users_other_default() {
    for mode in ["merge", "drop_in"] {
        let node = Node::new(&format!("keep-default-{mode}"));
        let main = default_config("1.7").replace(
            "default_runtime_name = \"runc\"",
            "default_runtime_name = \"crun\"",
        ) + CRUN;
        fs::write(node.config(), &main).unwrap();
        let out = node.ok("1.7", json!({"mode": mode, "set_as_default": false}));
        assert_eq!(out["default_runtime"], json!("crun"), "{mode}");
        assert_eq!(node.effective_default("1.7"), "crun", "{mode}");
        // The NVIDIA runtime is configured all the same, for RuntimeClass use.
        let d = dump("1.7", &node.config());
        let nvidia = &d["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["nvidia"];
        assert_eq!(
            nvidia["options"]["BinaryName"].as_str(),
            Some(node.runtime().as_str())
        );
    }
    // Where the NVIDIA runtime itself is the default, it stops being it.
    let node = Node::new("keep-default-ours");
    node.ok("1.7", json!({"mode": "merge"}));
    assert_eq!(node.effective_default("1.7"), "nvidia");
    node.ok("1.7", json!({"mode": "merge", "set_as_default": false}));
    assert_eq!(node.effective_default("1.7"), "runc");
}

/// The NVIDIA runtime inherits what a customised runc entry carries, as
/// nvidia-ctk copies it: GPU pods must run like the others but for the GPUs.
#[test]
fn the_nvidia_runtime_inherits_a_customised_runc_entry() {
    for mode in ["merge", "drop_in"] {
        let node = Node::new(&format!("inherit-{mode}"));
        let main = default_config("1.7")
            .replace(
                "privileged_without_host_devices = false",
                "privileged_without_host_devices = true",
            )
            .replace(
                "base_runtime_spec = \"\"",
                "base_runtime_spec = \"/etc/containerd/base.json\"",
            )
            .replace("Root = \"\"", "Root = \"/run/runc-custom\"");
        assert_ne!(
            main,
            default_config("1.7"),
            "the 1.7 default has these keys"
        );
        fs::write(node.config(), &main).unwrap();
        fs::write(
            node.root.join("etc/containerd/base.json"),
            "{\"ociVersion\": \"1.1.0\"}",
        )
        .unwrap();
        let main = main.replace(
            "/etc/containerd/base.json",
            &node.root.join("etc/containerd/base.json").to_string_lossy(),
        );
        fs::write(node.config(), &main).unwrap();
        node.ok("1.7", json!({"mode": mode}));
        let d = dump("1.7", &node.config());
        let runtimes = &d["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        let nvidia = &runtimes["nvidia"];
        assert_eq!(
            nvidia["privileged_without_host_devices"].as_bool(),
            Some(true),
            "{mode}"
        );
        assert!(
            nvidia["base_runtime_spec"]
                .as_str()
                .unwrap()
                .ends_with("base.json"),
            "{mode}"
        );
        assert_eq!(
            nvidia["options"]["Root"].as_str(),
            Some("/run/runc-custom"),
            "{mode}"
        );
        assert_eq!(
            nvidia["options"]["BinaryName"].as_str(),
            Some(node.runtime().as_str())
        );
        assert_eq!(nvidia["options"]["SystemdCgroup"].as_bool(), Some(true));
    }
}

/// `enable_cdi` in every mode: containerd 1.7 needs it for CDI devices; 1.6
/// has no CDI and is refused with a message; 2.x has it on already.
#[test]
fn enable_cdi_in_every_mode() {
    for mode in ["template", "merge", "drop_in"] {
        let node = Node::new(&format!("cdi-{mode}"));
        fs::write(node.config(), default_config("1.7")).unwrap();
        node.ok("1.7", json!({"mode": mode, "enable_cdi": true}));
        let d = dump("1.7", &node.config());
        assert_eq!(
            d["plugins"]["io.containerd.grpc.v1.cri"]["enable_cdi"].as_bool(),
            Some(true),
            "{mode}"
        );
        let again = node.ok("1.7", json!({"mode": mode, "enable_cdi": true}));
        assert_eq!(again["changed"], json!(false), "{mode}");
    }
    let node = Node::new("cdi-2.1");
    fs::write(node.config(), default_config("2.1")).unwrap();
    node.ok("2.1", json!({"mode": "drop_in", "enable_cdi": true}));
    let d = dump("2.1", &node.config());
    assert_eq!(
        d["plugins"]["io.containerd.cri.v1.runtime"]["enable_cdi"].as_bool(),
        Some(true)
    );
    let node = Node::new("cdi-1.6");
    fs::write(node.config(), default_config("1.6")).unwrap();
    let before = fs::read(node.config()).unwrap();
    let out = node.run("1.6", json!({"mode": "merge", "enable_cdi": true}));
    assert_eq!(out["failed"], json!(true));
    assert!(
        out["msg"].as_str().unwrap().contains("has no CDI support"),
        "{out}"
    );
    assert_eq!(fs::read(node.config()).unwrap(), before);
}

/// 2.1's `config default` quotes plugin names with '...'; a table a user
/// added with "..." came back re-quoted after merge.
#[test]
fn merge_keeps_a_users_header_quoting_on_2_1() {
    let node = Node::new("quotes");
    let header = "[plugins.\"io.containerd.cri.v1.images\".registry.headers]";
    let main = format!("{}\n{header}\n  X-Site = ['gpu']\n", default_config("2.1"));
    fs::write(node.config(), &main).unwrap();
    node.ok("2.1", json!({"mode": "merge"}));
    let after = fs::read_to_string(node.config()).unwrap();
    assert!(after.contains(header), "{after}");
    assert_eq!(node.effective_default("2.1"), "nvidia");
}
