//! Fixture nodes for integration tests, shared by node-probe's tests and
//! nvidia-driver-install's (which include this file by path): where each
//! fixture is, and a writable copy of one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The real H200 capture (`h200-vm`) or a synthetic profile of tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    match name {
        "h200-vm" => base.join("h200-vm"),
        profile => base.join("profiles").join(profile),
    }
}

/// A copy that keeps the fixture's symlinks (sysfs's `driver` links) and modes.
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        src.display(),
        dst.display()
    );
}
