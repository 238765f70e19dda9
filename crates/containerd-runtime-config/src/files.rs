//! Replacing containerd's files atomically, with temporaries and backups
//! where no `imports` glob can find them.
//!
//! containerd globs its imports with Go's `filepath.Match`, where `*` also
//! matches names that start with a dot: with `imports = ["conf.d/*"]`, a
//! temporary `conf.d/.99-nvidia.toml.tmp` or a backup `conf.d/99-nvidia.toml.
//! 1234.2026-12-01@10:00:00~` is loaded as configuration. So every temporary
//! and backup of a file lives in the main config's folder (`/etc/containerd`,
//! which no import glob sensibly covers: it would import config.toml
//! itself), on the same file system as its target for the final rename.
//!
//! Temporaries get unique names (`O_EXCL`, pid and a clock-derived suffix,
//! retried on a clash) and are removed on every exit path but SIGKILL; those
//! of dead runs are removed by the next run ([`clean_stale`]).

use ansible_module::fs::utc_timestamp;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The prefix of every temporary this module creates.
const TMP_PREFIX: &str = ".containerd-runtime-config.";
const TMP_SUFFIX: &str = ".tmp";

/// New content staged under a temporary name, not yet the target's.
/// Dropping it without `commit` removes the temporary.
#[derive(Debug)]
pub struct Staged {
    target: PathBuf,
    staged: PathBuf,
    committed: bool,
}

impl Staged {
    /// Writes `content` to a new temporary in `dir`, with the target's mode
    /// and owner (`new_mode` for a new target), synced to disk.
    pub fn new(target: &Path, dir: &Path, content: &[u8], new_mode: u32) -> io::Result<Staged> {
        let existing = match fs::metadata(target) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (staged, mut file) = create_unique(dir)?;
        let guard = Staged {
            target: target.to_path_buf(),
            staged,
            committed: false,
        };
        file.write_all(content)?;
        match &existing {
            Some(meta) => {
                // Owner first: chown may clear set-id bits the chmod restores.
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
                file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            }
            None => file.set_permissions(fs::Permissions::from_mode(new_mode))?,
        }
        file.sync_all()?;
        Ok(guard)
    }

    /// Renames the staged content over the target. With `backup_dir`, the
    /// previous file is first kept there as `<name>.<pid>.<date>@<time>~`;
    /// when the rename then fails, that backup is removed again, so a
    /// failure leaves exactly what was there.
    pub fn commit(mut self, backup_dir: Option<&Path>) -> io::Result<Option<PathBuf>> {
        let backup = match backup_dir {
            Some(dir) if self.target.exists() => {
                let path = backup_path(dir, &self.target);
                // A hard link keeps the old inode, mode and owner; copy
                // where the file system cannot link.
                if fs::hard_link(&self.target, &path).is_err() {
                    fs::copy(&self.target, &path)?;
                }
                Some(path)
            }
            _ => None,
        };
        if let Err(e) = fs::rename(&self.staged, &self.target) {
            if let Some(b) = &backup {
                let _ = fs::remove_file(b);
            }
            return Err(e);
        }
        self.committed = true;
        for dir in [self.target.parent(), self.staged.parent()]
            .into_iter()
            .flatten()
        {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all(); // the rename is durable once the folder is
            }
        }
        Ok(backup)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.staged);
        }
    }
}

/// A new file `dir/.containerd-runtime-config.<pid>.<unique>.tmp`, mode
/// 0600, created with `O_EXCL` (never an existing file or a planted link).
fn create_unique(dir: &Path) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(pid) << 32);
    for _ in 0..100 {
        // xorshift: a different name on every clash.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let path = dir.join(format!("{TMP_PREFIX}{pid}.{seed:016x}{TMP_SUFFIX}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no unused temporary file name after 100 tries",
    ))
}

fn backup_path(dir: &Path, target: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(
        "{name}.{}.{}~",
        std::process::id(),
        utc_timestamp(secs)
    ))
}

/// Removes the temporaries that runs killed before they could clean up left
/// in `dir`: this module's (`.containerd-runtime-config.<pid>.*.tmp`) and
/// the older `.<name>.<pid>.tmp` ones, when no process `<pid>` runs. Returns
/// what was removed.
pub fn clean_stale(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut removed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_pid(&name, names) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if pid != own && is_file && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            if fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

/// The pid in a temporary's name, if it is one of ours.
fn stale_pid(name: &str, names: &[&str]) -> Option<u32> {
    let middle = name.strip_suffix(TMP_SUFFIX)?;
    if let Some(rest) = middle.strip_prefix(TMP_PREFIX) {
        return rest.split('.').next()?.parse().ok();
    }
    // Before: `.<name>.<pid>.tmp` and `.<name>.check.<pid>.tmp`.
    names.iter().find_map(|n| {
        let rest = middle.strip_prefix(&format!(".{n}."))?;
        rest.strip_prefix("check.").unwrap_or(rest).parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_this_module_and_of_older_versions_are_recognised() {
        let names = ["config.toml", "99-nvidia.toml"];
        assert_eq!(
            stale_pid(".containerd-runtime-config.42.00ff.tmp", &names),
            Some(42)
        );
        assert_eq!(stale_pid(".config.toml.42.tmp", &names), Some(42));
        assert_eq!(stale_pid(".config.toml.check.42.tmp", &names), Some(42));
        assert_eq!(stale_pid(".99-nvidia.toml.7.tmp", &names), Some(7));
        assert_eq!(stale_pid("config.toml", &names), None);
        assert_eq!(stale_pid(".other.toml.42.tmp", &names), None);
        assert_eq!(stale_pid(".config.toml.x.tmp", &names), None);
    }
}
