//! Reads what a Linux node is, from the files the kernel and the distribution
//! keep: PCI functions in sysfs, loaded modules and the NVIDIA driver in sysfs
//! and procfs, the OS in os-release. Never runs a program (`lspci` is often not
//! installed on GPU nodes, and never in minimal images).
//!
//! Every read goes through a [`Root`], so the same code inspects the live node
//! (`/`), a chroot or image being built, or a captured node in a test.

pub mod gpu;
pub mod kernel;
pub mod nvidia_ids;
pub mod os;
pub mod pci;

use std::io;
use std::path::{Path, PathBuf};

/// The filesystem being inspected; node paths are resolved beneath it.
#[derive(Clone, Debug)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Root {
        Root(path.into())
    }

    /// The host path of a node path: `/sys/module` under root `/mnt` is `/mnt/sys/module`.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.0.join(node_path.trim_start_matches('/'))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// A small text file (a sysfs attribute), trimmed.
    pub fn read_trimmed(&self, node_path: &str) -> io::Result<String> {
        read_trimmed(&self.path(node_path))
    }
}

pub(crate) fn read_trimmed(path: &Path) -> io::Result<String> {
    read_text(path, ATTRIBUTE_LIMIT).map(|s| s.trim().to_string())
}

/// The most a sysfs, procfs or os-release file is read for: real ones are a
/// few bytes to a few KiB.
pub const ATTRIBUTE_LIMIT: u64 = 64 * 1024;

/// A regular file's text, up to `limit` bytes. The file is opened
/// non-blocking and must be a regular file (sysfs and procfs attributes are):
/// a FIFO, socket or device in its place is an error, never a hang; a longer
/// file is an error, never a huge allocation.
pub fn read_text(path: &Path, limit: u64) -> io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file (a FIFO, socket or device where a file belongs)",
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// What could not be read, for the module's `warnings`: a missing attribute
/// degrades one field to null, it never fails detection.
pub type Warnings = Vec<String>;
