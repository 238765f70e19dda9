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
    /// A copy that exists nowhere else (check mode; a main file that imports
    /// a staged drop-in): written to an unnamed in-memory file.
    Text(&'a str),
}

/// An unnamed in-memory file (`memfd_create`) holding a text, which a child
/// process opens as `/proc/self/fd/N`: a real file that containerd can read
/// twice (2.x re-reads its config after a strict parse fails, which a pipe
/// such as `/dev/stdin` cannot do), never visible in any folder, so no
/// `imports` glob can find it and a killed run leaves nothing behind.
pub struct UnnamedFile {
    fd: std::os::fd::OwnedFd,
    path: String,
}

impl UnnamedFile {
    pub fn new(text: &str) -> std::io::Result<UnnamedFile> {
        use rustix::fs::{memfd_create, MemfdFlags};
        use std::os::fd::AsRawFd;
        // No CLOEXEC: containerd, the child, must inherit it.
        let fd = memfd_create("containerd-candidate", MemfdFlags::empty())?;
        let mut file = std::fs::File::from(fd);
        file.write_all(text.as_bytes())?;
        let fd: std::os::fd::OwnedFd = file.into();
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        Ok(UnnamedFile { fd, path })
    }

    /// The path the child opens it by.
    pub fn path(&self) -> &str {
        let _ = &self.fd;
        &self.path
    }
}

/// `containerd --config CANDIDATE config dump`: containerd parses the
/// candidate and its imports exactly as it would at start-up, and prints the
/// merged result. Its stdout on success; on failure, the message for `msg`.
pub fn config_dump(containerd: &Path, candidate: Candidate<'_>) -> Result<String, String> {
    let memfd = match candidate {
        Candidate::Text(text) => Some(
            UnnamedFile::new(text)
                .map_err(|e| format!("cannot make an in-memory copy of the candidate: {e}"))?,
        ),
        Candidate::File(_) => None,
    };
    let config: std::ffi::OsString = match (&candidate, &memfd) {
        (Candidate::File(path), _) => path.as_os_str().to_owned(),
        (_, Some(file)) => file.path().into(),
        _ => unreachable!("a text candidate has its in-memory file"),
    };
    let shown_config = match candidate {
        Candidate::File(path) => path.display().to_string(),
        Candidate::Text(_) => "<candidate>".into(),
    };
    let mut command = Command::new(containerd);
    // The daemon runs in `/`: containerd 1.6 resolves relative imports
    // against the working directory.
    command
        .current_dir("/")
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"])
        .stdin(Stdio::null());
    let shown = format!(
        "{} --config {shown_config} config dump",
        containerd.display()
    );
    let out = command
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    drop(memfd);
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
