//! The installer runs from a private copy, made and hashed in one pass: the
//! bytes that were hashed are the bytes that run. Checking the original path
//! and then running it would run whatever is there by then (a file swapped,
//! or edited in place, between the two).
//!
//! The copy lives in a folder of its own (mode 0700, made with `mkdir`, which
//! never follows a symlink or reuses a folder) under `$TMPDIR` or `/var/tmp`,
//! and keeps the installer's file name (makeself archives and the name checks
//! read it). It is removed after the run; one left by a killed run is removed
//! by the next run that holds the install lock, when no installer can be
//! using it.

use crate::sha256::{self, Sha256};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The prefix of the private folders' names.
const PREFIX: &str = "nvidia-driver-install.";

/// A private copy of the installer; dropping it removes it.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    path: PathBuf,
    /// The SHA-256 of the copy, as lower-case hex.
    pub sha256: String,
}

impl Staged {
    /// The copy, to run.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the private folders are made: `$TMPDIR` when it is absolute, else `/var/tmp`.
pub fn parent_dir(tmpdir: Option<&str>) -> PathBuf {
    PathBuf::from(tmpdir.filter(|t| t.starts_with('/')).unwrap_or("/var/tmp"))
}

/// Opens `installer` without blocking (a FIFO is refused, not waited on) and
/// only when it is a regular file.
pub fn open_regular(installer: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(installer)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or folder)",
        ));
    }
    // Back to blocking reads for the copy; a regular file never blocks anyway.
    rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())?;
    Ok(file)
}

/// Copies `installer` into a new private folder under `parent`, hashing the
/// bytes as they are written.
pub fn copy(installer: &Path, parent: &Path) -> io::Result<Staged> {
    let name = installer
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut source = open_regular(installer)?;
    let dir = private_dir(parent)?;
    let path = dir.join(name);
    let mut staged = Staged {
        dir,
        path,
        sha256: String::new(),
    };
    let mut copy = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&staged.path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        copy.write_all(&buf[..n])?;
    }
    copy.sync_all()?;
    staged.sha256 = sha256::hex(&hasher.finish());
    Ok(staged)
}

/// A new folder only this user can enter, under `parent`.
fn private_dir(parent: &Path) -> io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..100u32 {
        let dir = parent.join(format!("{PREFIX}{}.{nanos:x}{attempt}", std::process::id()));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot make a private folder in {}: {e}", parent.display()),
                ))
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free private folder name in {}", parent.display()),
    ))
}

/// Removes the private folders that killed runs left under `parent`; only
/// while holding the install lock (no installer runs from one then), and
/// only folders of this user.
pub fn remove_stale(parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.filter_map(Result::ok) {
        let ours = entry.file_name().to_string_lossy().starts_with(PREFIX)
            && entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nvidia-driver-stage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_copy_is_private_hashed_and_removed_when_dropped() {
        let dir = scratch("copy");
        let installer = dir.join("NVIDIA-Linux-x86_64-580.95.05.run");
        std::fs::write(&installer, b"abc").unwrap();
        let staged = copy(&installer, &dir).unwrap();
        assert_eq!(
            staged.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(staged.path().file_name(), installer.file_name());
        assert_eq!(std::fs::read(staged.path()).unwrap(), b"abc");
        let folder = staged.path().parent().unwrap().to_path_buf();
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Changing the original changes nothing in the copy.
        std::fs::write(&installer, b"evil").unwrap();
        assert_eq!(std::fs::read(staged.path()).unwrap(), b"abc");
        drop(staged);
        assert!(!folder.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = scratch("fifo");
        let fifo = dir.join("NVIDIA-Linux-x86_64-580.95.05.run");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = copy(&fifo, &dir).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_folders_are_removed_and_others_kept() {
        let dir = scratch("stale");
        std::fs::create_dir(dir.join(format!("{PREFIX}1.2"))).unwrap();
        std::fs::create_dir(dir.join("unrelated")).unwrap();
        remove_stale(&dir);
        assert!(!dir.join(format!("{PREFIX}1.2")).exists());
        assert!(dir.join("unrelated").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
