//! One driver installation at a time per node.
//!
//! The lock is `flock(2)` on a file under `/run/lock`: the kernel releases it
//! when the process ends however it ends, so a crashed or killed run never
//! leaves a stale lock behind, and there is no pid file to clean up. The
//! holder's pid is written into the file only so that a waiting run can say
//! whom it waits for.

use rustix::fs::{flock, FlockOperation};
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
    _file: File,
    path: PathBuf,
    /// How long this run waited for another one.
    pub waited: Duration,
}

impl InstallLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another run held it for the whole `timeout`.
    Busy {
        path: PathBuf,
        holder: Option<u32>,
        timeout: Duration,
    },
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy {
                path,
                holder,
                timeout,
            } => {
                let who = match holder {
                    Some(pid) => format!("another driver installation (pid {pid})"),
                    None => "another driver installation".to_string(),
                };
                write!(
                    f,
                    "{who} holds the lock {} and did not finish within lock_timeout ({} s); \
                     two driver installers must never run at once. Wait for it to finish (its \
                     progress is in /var/log/nvidia-installer.log), then run this again, or \
                     raise lock_timeout",
                    path.display(),
                    timeout.as_secs()
                )
            }
            LockError::Io { path, error } => write!(
                f,
                "cannot open the lock file {}: {error}; set lock_path to a writable place",
                path.display()
            ),
        }
    }
}

/// Takes the lock at `path`, waiting up to `timeout` for a run that holds it
/// (a zero timeout refuses at once).
pub fn acquire(path: &Path, timeout: Duration) -> Result<InstallLock, LockError> {
    let io_error = |error| LockError::Io {
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(io_error)?;
    let started = Instant::now();
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(Errno::WOULDBLOCK | Errno::INTR) => {
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(LockError::Busy {
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
    let _ = file
        .set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()));
    Ok(InstallLock {
        _file: file,
        path: path.to_path_buf(),
        waited: started.elapsed(),
    })
}

/// Whether another run holds the lock now, without taking it or creating the
/// file (for check mode): `Some(pid or None)` when it is held.
pub fn holder(path: &Path) -> Option<Option<u32>> {
    let mut file = File::open(path).ok()?;
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => None,
        Err(_) => Some(read_pid(&mut file)),
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
    fn no_lock_file_means_no_holder() {
        assert_eq!(holder(Path::new("/nonexistent/nvidia.lock")), None);
    }
}
