//! The real containerd, for configs that must be accepted by it.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

/// containerd 1.6.20 from Debian's archive, fetched and cached by
/// `tests/containerd_releases.py` (the tests never use the machine's own):
/// these tests exist to prove that containerd accepts what we write.
pub fn containerd() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/containerd_releases.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["bin", "1.6"])
        .output()
        .expect("python3 runs tests/containerd_releases.py");
    assert!(
        out.status.success(),
        "containerd 1.6 is not available: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("containerd")
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
