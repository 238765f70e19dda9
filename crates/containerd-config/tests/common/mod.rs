//! The real containerd, for configs that must be accepted by it.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

mod release;

/// containerd 1.6.20 from Debian's archive: these tests exist to prove that
/// containerd accepts what we write.
pub fn containerd() -> PathBuf {
    release::release_script(&["bin", "1.6"]).join("containerd")
}

/// `containerd --config FILE config dump` of `text` (written to a scratch
/// file named `name`), which must succeed; its output.
pub fn dump(text: &str, name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("containerd-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(&file, text).unwrap();
    let out = dump_file(&file);
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

pub fn dump_file(file: &Path) -> String {
    let out = Command::new(containerd())
        .arg("--config")
        .arg(file)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "containerd rejects {}: {}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    String::from_utf8(out.stdout).unwrap()
}
