//! One driver installation at a time per node.
//!
//! The lock is `flock(2)` on a file under `/run/lock`: the kernel releases it
//! when the last process holding the open file ends, however it ends, so a
//! crashed run never leaves a stale lock behind, and there is no pid file to
//! clean up. The installer inherits the locked file ([`InstallLock::file`]),
//! so a killed module does not release the lock while its installer still
//! runs. The holder's pid (the installer's, once it runs) is written into the
//! file only so that a waiting run can say whom it waits for.
//!
//! `/run/lock` is writable by every user, so the file is opened without
//! following a symlink, without truncating, non-blocking, and used only when
//! it is a regular file of this user with one link that others cannot write:
//! another user's file is refused, naming its owner, and never read.

use crate::Error;
use rustix::fs::{flock, FlockOperation, OFlags};
use rustix::io::Errno;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The default lock file (a node path).
pub const DEFAULT_LOCK_PATH: &str = "/run/lock/nvidia-driver-install.lock";

/// How often a waiting run tries again.
const POLL: Duration = Duration::from_millis(200);

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct InstallLock {
    file: File,
    path: PathBuf,
    /// How long this run waited for another one.
    pub waited: Duration,
}

impl InstallLock {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The locked file, for the installer to inherit.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Records `pid` (the installer's) as the holder, for waiting runs' messages.
    pub fn record_holder(&mut self, pid: u32) {
        let _ = write_pid(&mut self.file, pid);
    }
}

fn write_pid(file: &mut File, pid: u32) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{pid}")
}

/// Takes the lock at `path`, waiting up to `timeout` for a run that holds it
/// (a zero timeout refuses at once).
pub fn acquire(path: &Path, timeout: Duration) -> Result<InstallLock, Error> {
    let io_error = |error| Error::LockIo {
        path: path.to_path_buf(),
        source: error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(safe_flags())
        .open(path)
        .map_err(|e| refused_or_io(path, e))?;
    check_private(path, &file)?;
    let started = Instant::now();
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(Errno::WOULDBLOCK | Errno::INTR) => {
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(Error::LockBusy {
                        path: path.to_path_buf(),
                        holder: read_pid(&mut file),
                        timeout,
                    });
                }
                std::thread::sleep(POLL.min(timeout - waited));
            }
            Err(e) => return Err(io_error(e.into())),
        }
    }
    // Only for the messages of runs that wait; the lock does not depend on it.
    let _ = write_pid(&mut file, std::process::id());
    Ok(InstallLock {
        file,
        path: path.to_path_buf(),
        waited: started.elapsed(),
    })
}

/// Whether another run holds the lock now, without taking it or creating the
/// file (for check mode): `Some(pid or None)` when it is held.
pub fn holder(path: &Path) -> Option<Option<u32>> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(safe_flags())
        .open(path)
        .ok()?;
    let trusted = check_private(path, &file).is_ok();
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => None,
        Err(_) => Some(read_pid(&mut file).filter(|_| trusted)),
    }
}

/// Never through a symlink, never blocking (a FIFO in its place).
fn safe_flags() -> i32 {
    (OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32
}

fn refused_or_io(path: &Path, error: io::Error) -> Error {
    // O_NOFOLLOW on a symlink fails with ELOOP.
    if error.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
        return Error::LockUnsafe {
            path: path.to_path_buf(),
            why: "it is a symbolic link".to_string(),
        };
    }
    Error::LockIo {
        path: path.to_path_buf(),
        source: error,
    }
}

/// A regular file of this user, with one link, that others cannot write.
fn check_private(path: &Path, file: &File) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|error| Error::LockIo {
        path: path.to_path_buf(),
        source: error,
    })?;
    let me = rustix::process::geteuid().as_raw();
    let why = if !meta.file_type().is_file() {
        Some("it is not a regular file".to_string())
    } else if meta.uid() != me {
        Some(format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        ))
    } else if meta.nlink() != 1 {
        Some(format!(
            "it has {} hard links (a link to another file?)",
            meta.nlink()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "others can write it (mode {:o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::LockUnsafe {
            path: path.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!("nvidia-driver-lock-{name}-{}", std::process::id()))
            .join("run/lock/test.lock")
    }

    #[test]
    fn a_second_taker_is_refused_while_the_first_holds_it() {
        let path = lock_path("busy");
        let first = acquire(&path, Duration::ZERO).unwrap();
        assert_eq!(holder(&path), Some(Some(std::process::id())));
        let started = Instant::now();
        let err = acquire(&path, Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "another driver installation (pid {}) holds the lock {}",
                std::process::id(),
                path.display()
            )),
            "{msg}"
        );
        drop(first);
        assert_eq!(holder(&path), None);
        acquire(&path, Duration::ZERO).expect("free again once dropped");
    }

    #[test]
    fn a_waiting_taker_gets_the_lock_when_it_is_released() {
        let path = lock_path("wait");
        let first = acquire(&path, Duration::ZERO).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let second = acquire(&path, Duration::from_secs(10)).unwrap();
        assert!(
            second.waited >= Duration::from_millis(250),
            "{:?}",
            second.waited
        );
        releaser.join().unwrap();
    }

    #[test]
    fn a_symlink_fifo_or_hard_link_in_place_of_the_lock_is_refused_and_left_alone() {
        let path = lock_path("hostile");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let victim = path.with_file_name("victim");
        std::fs::write(&victim, "precious\n").unwrap();

        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let err = acquire(&path, Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("it is a symbolic link"), "{err}");
        std::fs::remove_file(&path).unwrap();

        std::fs::hard_link(&victim, &path).unwrap();
        let err = acquire(&path, Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("2 hard links"), "{err}");
        assert_eq!(holder(&path), None);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let err = acquire(&path, Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn no_lock_file_means_no_holder() {
        assert_eq!(holder(Path::new("/nonexistent/nvidia.lock")), None);
    }
}
