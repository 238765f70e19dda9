//! The one error type of this crate: what was asked that cannot be done, with
//! the value or path it is about, and a message that says how to fix it. The
//! module turns it into Ansible's failure in one place
//! (`nvidia_driver_install`'s `failure_of`).

use std::path::PathBuf;
use std::time::Duration;

/// What `checksum` must look like, in every checksum message.
const CHECKSUM_WANTED: &str = "checksum must be `sha256:` followed by the 64 hex digits that \
                               `sha256sum` prints for the installer";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "version must be a full driver version such as 580.95.05 (the part of \
         NVIDIA-Linux-x86_64-580.95.05.run after the architecture), not {0:?}"
    )]
    Version(String),

    #[error("kernel_module_type must be auto, open or proprietary, not {0:?}")]
    ModuleTypeName(String),

    #[error("{CHECKSUM_WANTED}; got {0:?} (no `sha256:` prefix)")]
    ChecksumPrefix(String),

    #[error("{CHECKSUM_WANTED}; got the algorithm {0:?}, and only sha256 is supported")]
    ChecksumAlgorithm(String),

    #[error(
        "{CHECKSUM_WANTED}; got {length} characters after `sha256:`{}",
        if *all_hex { "" } else { ", not all of them hex digits" }
    )]
    ChecksumDigest { length: usize, all_hex: bool },

    /// No kernel module type can work: the driver has no open modules, or
    /// the node's GPUs need a type the request or the driver rules out.
    #[error(
        "kernel_module_type is open, but driver {version} has no open kernel modules (they \
         exist from branch 515 on): use a newer driver or kernel_module_type: proprietary"
    )]
    NoOpenModules { version: String },

    #[error(
        "kernel_module_type is open, but the open kernel modules do not support {gpus} \
         (Maxwell, Pascal and Volta need the proprietary module): use kernel_module_type: \
         proprietary or auto"
    )]
    OpenUnsupported { gpus: String },

    #[error(
        "kernel_module_type is proprietary, but {gpus} works only with the open kernel \
         modules: use kernel_module_type: open or auto"
    )]
    ProprietaryUnsupported { gpus: String },

    #[error(
        "no kernel module type drives every GPU of this node: {legacy} needs the proprietary \
         module and {open_only} needs the open one; put them in different nodes"
    )]
    MixedGpus { legacy: String, open_only: String },

    #[error(
        "{gpus} works only with the open kernel modules, which driver {version} does not \
         have: install a driver that supports it"
    )]
    OpenOnlyTooOld { gpus: String, version: String },

    /// Another run held the install lock for the whole `timeout`.
    #[error(
        "{} holds the lock {} and did not finish within lock_timeout ({} s); two driver \
         installers must never run at once. Wait for it to finish (its progress is in \
         /var/log/nvidia-installer.log), then run this again, or raise lock_timeout",
        holder_name(*holder), path.display(), timeout.as_secs()
    )]
    LockBusy {
        path: PathBuf,
        holder: Option<u32>,
        timeout: Duration,
    },

    #[error("cannot open the lock file {}: {source}; set lock_path to a writable place", path.display())]
    LockIo {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The lock path is not a private regular file of this user.
    #[error(
        "refusing the lock file {}: {why}. Another user may have put it there to block or \
         misdirect driver installs; remove it (no driver installation uses it) or set \
         lock_path to a folder only root can write",
        path.display()
    )]
    LockUnsafe { path: PathBuf, why: String },
}

impl Error {
    /// The file the error is about, for the failure's return values.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::LockBusy { path, .. }
            | Error::LockIo { path, .. }
            | Error::LockUnsafe { path, .. } => Some(path),
            _ => None,
        }
    }
}

fn holder_name(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("another driver installation (pid {pid})"),
        None => "another driver installation".to_string(),
    }
}
