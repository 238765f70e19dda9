//! What tests/module.rs and tests/releases.rs share: the scratch node, the
//! module run as Ansible runs it, and the containerd releases
//! `tests/containerd_releases.py` fetches. Each test file adds the methods
//! only it needs to `Node` in its own `impl Node` block.
#![allow(dead_code)] // each test file uses a part

use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

pub const MODULE: &str = env!("CARGO_BIN_EXE_containerd_runtime_config");

/// A scratch node: `etc/containerd/` for the configs, `bin/` for a stand-in
/// nvidia-container-runtime, and the args file outside `etc/`. Removed when
/// dropped, unless a test failed (to look at).
pub struct Node {
    pub root: PathBuf,
}

impl Node {
    /// `prefix` keeps the scratch folders of two test files apart.
    pub fn scratch(prefix: &str, name: &str) -> Node {
        let root = std::env::temp_dir().join(format!("{prefix}-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("etc/containerd")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        let runtime = root.join("bin/nvidia-container-runtime");
        fs::write(&runtime, "#!/bin/sh\nexec runc \"$@\"\n").unwrap();
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o755)).unwrap();
        Node { root }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("etc/containerd/config.toml")
    }

    pub fn conf_d(&self) -> PathBuf {
        self.root.join("etc/containerd/conf.d")
    }

    pub fn drop_in(&self) -> PathBuf {
        self.conf_d().join("99-nvidia.toml")
    }

    pub fn runtime(&self) -> String {
        self.root
            .join("bin/nvidia-container-runtime")
            .to_string_lossy()
            .into_owned()
    }

    /// The options every test starts from (pointing into this node), with
    /// `args` over them.
    pub fn args(&self, args: Value) -> Value {
        let mut all = json!({
            "path": self.config(),
            "drop_in_path": self.drop_in(),
            "runtime_path": self.runtime(),
            "nvidia_runtime": true,
            "_ansible_diff": true,
        });
        for (k, v) in args.as_object().unwrap() {
            all[k] = v.clone();
        }
        all
    }

    /// Runs the module as Ansible does (`MODULE ARGS_FILE`) with `all` as
    /// the options and `path_env` as PATH (None: the test's own); its one
    /// JSON object, and the process's output.
    pub fn run_module(&self, all: &Value, path_env: Option<&str>) -> (Value, Output) {
        let args_file = self.root.join("args.json");
        fs::write(&args_file, all.to_string()).unwrap();
        let mut command = Command::new(MODULE);
        command.arg(&args_file);
        if let Some(path) = path_env {
            command.env("PATH", path);
        }
        let out = command.output().unwrap();
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "the module printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (result, out)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

#[path = "../../../containerd-config/tests/common/release.rs"]
mod release;
pub use release::release_script;

/// The bin folder of a release ("1.6", "1.7", "2.1"), fetched on first use.
pub fn release(version: &str) -> PathBuf {
    release_script(&["bin", version])
}
