//! What the module asks of the machine besides reading the node's files:
//! finding programs, running them, and free space. Behind a trait so that the
//! planning code is tested without running anything.
//!
//! Programs come from `PATH` even when the node's files are read under another
//! root: a chroot's programs would run against the wrong kernel anyway.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
}

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
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
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
