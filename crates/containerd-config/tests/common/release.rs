//! The real containerd and runc releases `tests/containerd_releases.py`
//! fetches from Debian's archive and caches (the tests never use the
//! machine's own). Shared by this crate's tests and containerd-runtime-config's
//! (included there with `#[path]`): one way to find them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What `tests/containerd_releases.py ARGS` prints: a path it fetched
/// (`bin 1.6`: containerd 1.6's bin folder; `runc`: runc).
pub fn release_script(args: &[&str]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/containerd_releases.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs tests/containerd_releases.py");
    assert!(
        out.status.success(),
        "tests/containerd_releases.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
