//! What the module asks of the node itself: executables, and containerd's
//! own opinion of a candidate config.

use containerd_config::{parse_containerd_version, ContainerdVersion};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where containerd is looked for after `$PATH`: Ansible runs modules with
/// a minimal environment where `/usr/local/bin` (containerd's release
/// tarballs) may be missing from `$PATH`.
const FALLBACK_DIRS: [&str; 3] = ["/usr/bin", "/usr/local/bin", "/bin"];

/// systemd's default `PATH` for services, which containerd and its shims
/// run with: where a runtime's bare `BinaryName` (or `runc`) is found.
const SERVICE_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Why a path is not an executable file, or `None` when it is one.
pub fn not_executable(path: &Path) -> Option<&'static str> {
    match std::fs::metadata(path) {
        Err(_) => Some("does not exist"),
        Ok(meta) if !meta.is_file() => Some("is not a file"),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Some("is not executable"),
        Ok(_) => None,
    }
}

/// The first executable `containerd` on `$PATH`, then in the usual places.
pub fn find_containerd() -> Option<PathBuf> {
    find_in(std::env::var_os("PATH"), &FALLBACK_DIRS, "containerd")
}

fn find_in(path_var: Option<std::ffi::OsString>, fallback: &[&str], name: &str) -> Option<PathBuf> {
    let path_dirs = path_var
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(fallback.iter().map(PathBuf::from))
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| not_executable(candidate).is_none())
}

/// Whether the runc shim would find `binary` (a runtime's `BinaryName`, or
/// `runc`): an executable file at that path, or a bare name on the service
/// `PATH`.
pub fn runtime_binary_exists(binary: &str) -> bool {
    let path = Path::new(binary);
    if path.is_absolute() {
        not_executable(path).is_none()
    } else {
        !binary.contains('/') && find_in(None, &SERVICE_PATH, binary).is_some()
    }
}

/// `containerd --version`, parsed.
pub fn containerd_version(containerd: &Path) -> Result<ContainerdVersion, String> {
    let out = Command::new(containerd)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", containerd.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_containerd_version(&stdout).ok_or_else(|| {
        format!(
            "cannot read a version from `{} --version`: {:?}",
            containerd.display(),
            stdout.trim()
        )
    })
}

/// Where `containerd config dump` reads the candidate from.
pub enum Candidate<'a> {
    File(&'a Path),
    /// Piped on stdin, in check mode, where nothing may be written.
    Text(&'a str),
}

/// `containerd --config CANDIDATE config dump`: containerd parses the
/// candidate and its imports exactly as it would at start-up, and prints the
/// merged result. Its stdout on success; on failure, the message for `msg`.
pub fn config_dump(containerd: &Path, candidate: Candidate<'_>) -> Result<String, String> {
    let config = match candidate {
        Candidate::File(path) => path.as_os_str().to_owned(),
        Candidate::Text(_) => "/dev/stdin".into(),
    };
    let mut command = Command::new(containerd);
    // The daemon runs in `/`: containerd 1.x resolves relative glob imports
    // against the working directory.
    command
        .current_dir("/")
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(match candidate {
            Candidate::File(_) => Stdio::null(),
            Candidate::Text(_) => Stdio::piped(),
        });
    let shown = format!(
        "{} --config {} config dump",
        containerd.display(),
        Path::new(&config).display()
    );
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if let (Candidate::Text(text), Some(mut stdin)) = (candidate, child.stdin.take()) {
        // containerd reads the whole config before it prints anything, so
        // writing first cannot deadlock; a write error shows in its exit.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    Err(format!(
        "`{shown}` failed ({}): {}",
        out.status,
        if why.is_empty() { "no message" } else { &why }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_is_looked_for_on_path_then_in_the_usual_places() {
        let dir = std::env::temp_dir().join(format!("crc-find-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("containerd"), "not executable").unwrap();
        std::fs::write(b.join("containerd"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.join("containerd"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let path = std::env::join_paths([&a, Path::new("relative")]).unwrap();
        let b_str = b.to_string_lossy().into_owned();
        assert_eq!(
            find_in(Some(path.clone()), &[&b_str], "containerd"),
            Some(b.join("containerd"))
        );
        assert_eq!(
            find_in(Some(path), &[], "containerd"),
            None,
            "a file that is not executable does not count"
        );
        assert_eq!(find_in(None, &[], "containerd"), None);
        let runtime = b.join("containerd").to_string_lossy().into_owned();
        assert!(runtime_binary_exists(&runtime));
        assert!(!runtime_binary_exists(
            &a.join("containerd").to_string_lossy()
        ));
        assert!(!runtime_binary_exists("no-such-runtime-binary"));
        assert!(!runtime_binary_exists("relative/path"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
