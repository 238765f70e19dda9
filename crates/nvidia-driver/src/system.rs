//! What the module asks of the machine besides reading the node's files:
//! finding programs, running them, and free space. Behind a trait so that the
//! planning code is tested without running anything.
//!
//! Programs come from `PATH` even when the node's files are read under another
//! root: a chroot's programs would run against the wrong kernel anyway.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished program said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit status; `None` when a signal ended the program.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The last `n` lines of stdout followed by stderr, for messages.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .chain(self.stderr.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

/// The machine the module runs on.
pub trait System {
    /// The path of `name` on `PATH`, as `command -v` finds it.
    fn find_program(&self, name: &str) -> Option<PathBuf>;
    /// Runs `argv` without a shell, stdin closed, output captured.
    fn run(&self, argv: &[String]) -> io::Result<Output>;
    /// Bytes an unprivileged writer may still use on the filesystem of `path`.
    fn free_bytes(&self, path: &Path) -> io::Result<u64>;
    /// Runs `argv` as [`System::run`] does, but in a process group of its
    /// own (a killed module does not kill it, and a timeout kills all of it),
    /// with `inherit` open in it (the install lock), killed with its group
    /// after `timeout` (an error of kind `TimedOut`). `started` gets its pid.
    fn run_guarded(
        &self,
        argv: &[String],
        inherit: &File,
        timeout: Duration,
        started: &mut dyn FnMut(u32),
    ) -> io::Result<Output>;
    /// The `$TMPDIR` of the module's environment: where the installer
    /// unpacks itself and its private copy is made.
    fn tmpdir(&self) -> Option<String> {
        std::env::var("TMPDIR").ok()
    }
}

#[cfg(any(test, feature = "fake"))]
pub mod fake;

/// The real machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Host;

impl System for Host {
    fn find_program(&self, name: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    }

    fn run(&self, argv: &[String]) -> io::Result<Output> {
        let out = command(argv)?.output()?;
        Ok(Output {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn free_bytes(&self, path: &Path) -> io::Result<u64> {
        let st = rustix::fs::statvfs(path)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn run_guarded(
        &self,
        argv: &[String],
        inherit: &File,
        timeout: Duration,
        started: &mut dyn FnMut(u32),
    ) -> io::Result<Output> {
        // Output goes to an unlinked file, not a pipe: a killed module must
        // not take the installer down with SIGPIPE on its next line of output.
        let mut log = unnamed_file()?;
        let mut command = command(argv)?;
        command
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .process_group(0);
        // The child inherits the locked file: the lock then lasts as long as
        // the installer does, even when this module is killed. The module is
        // single-threaded, so no other child can inherit it meanwhile.
        use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
        let flags = fcntl_getfd(inherit)?;
        fcntl_setfd(inherit, flags - FdFlags::CLOEXEC)?;
        let spawned = command.spawn();
        fcntl_setfd(inherit, flags)?;
        let mut child = spawned?;
        started(child.id());
        let status = wait_or_kill(&mut child, timeout)?;
        let output = Output {
            status: status.and_then(|s| s.code()),
            stdout: read_tail(&mut log)?,
            stderr: String::new(),
        };
        match status {
            Some(_) => Ok(output),
            None => Err(timed_out(timeout, &output)),
        }
    }
}

/// The error of a guarded run killed at its `timeout`, with its last output.
fn timed_out(timeout: Duration, output: &Output) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "it ran longer than {} s and was killed with its process group; its last output: {}",
            timeout.as_secs(),
            output.tail(3).join(" / ")
        ),
    )
}

/// `argv` as a command without a shell, its stdin closed.
fn command(argv: &[String]) -> io::Result<Command> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    Ok(command)
}

/// A new file in the temporary folder whose name is gone at once.
fn unnamed_file() -> io::Result<File> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path = std::env::temp_dir().join(format!(
        ".nvidia-driver-install-output.{}.{nanos}",
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// The last MiB of what the program wrote.
fn read_tail(file: &mut File) -> io::Result<String> {
    use std::io::{Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(len.saturating_sub(1 << 20)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The child's exit status, or `None` after `timeout`, when its whole process
/// group has been killed.
fn wait_or_kill(
    child: &mut Child,
    timeout: Duration,
) -> io::Result<Option<std::process::ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if started.elapsed() >= timeout {
            if let Some(pgid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100).min(timeout));
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_run_past_its_timeout_is_killed_with_its_whole_group() {
        let dir = std::env::temp_dir().join(format!("nvidia-driver-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = File::create(dir.join("lock")).unwrap();
        let marker = dir.join("grandchild-lived");
        // A grandchild that would outlive its parent's kill, were the group spared.
        let script = format!(
            "(sleep 2; touch {}) & echo started; sleep 30",
            marker.display()
        );
        let argv: Vec<String> = ["sh", "-c", &script]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut pid = 0;
        let started = Instant::now();
        let err = Host
            .run_guarded(&argv, &lock, Duration::from_millis(500), &mut |p| pid = p)
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("started"), "{err}");
        assert_ne!(pid, 0);
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            !marker.exists(),
            "a process of the group survived the timeout"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_guarded_run_holds_the_inherited_lock_after_the_caller_lets_go() {
        use rustix::fs::{flock, FlockOperation};
        let dir =
            std::env::temp_dir().join(format!("nvidia-driver-inherit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        let lock = File::create(&path).unwrap();
        flock(&lock, FlockOperation::NonBlockingLockExclusive).unwrap();
        // The child backgrounds a holder of the inherited fd and exits at once.
        let argv: Vec<String> = ["sh", "-c", "sleep 2 >/dev/null 2>&1 &"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Host.run_guarded(&argv, &lock, Duration::from_secs(10), &mut |_| {})
            .unwrap();
        drop(lock);
        let other = File::open(&path).unwrap();
        assert!(
            flock(&other, FlockOperation::NonBlockingLockExclusive).is_err(),
            "the lock went with the caller although its child still runs"
        );
        std::thread::sleep(Duration::from_millis(2500));
        flock(&other, FlockOperation::NonBlockingLockExclusive).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tail_keeps_the_last_lines_of_both_streams() {
        let out = Output {
            status: Some(1),
            stdout: "a\nb\n\n".into(),
            stderr: "c\nd\n".into(),
        };
        assert_eq!(out.tail(3), ["b", "c", "d"]);
        assert_eq!(out.tail(10), ["a", "b", "c", "d"]);
        assert!(!out.success());
    }
}
