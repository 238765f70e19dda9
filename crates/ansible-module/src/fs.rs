//! Files replaced the way Ansible's `atomic_move` does it: a temporary file in
//! the same directory, written and fsynced, given the old file's mode and
//! owner, then renamed over the target. A reader sees the old file or the new
//! one, never half of either, and a crash leaves the old file in place.

use crate::result::Diff;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Reads a file, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// New content staged beside its target, not yet visible under the target's
/// name. Dropping it without `commit` removes the temporary file.
#[derive(Debug)]
pub struct StagedFile {
    target: PathBuf,
    staged: PathBuf,
    committed: bool,
}

impl StagedFile {
    /// Writes `content` to a temporary file in the target's directory (created
    /// when missing, mode 0755) with the target's mode and owner, or `new_mode`
    /// when the target does not exist yet.
    pub fn stage(target: &Path, content: &[u8], new_mode: u32) -> io::Result<StagedFile> {
        let dir = parent_dir(target);
        create_dirs(dir)?;
        let existing = match fs::metadata(target) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?
            .to_string_lossy();
        let staged = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)?;
        let guard = StagedFile {
            target: target.to_path_buf(),
            staged,
            committed: false,
        };
        file.write_all(content)?;
        match &existing {
            Some(meta) => {
                // Keep the owner first: chown may clear set-id bits that the
                // chmod below then restores.
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
                file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            }
            None => file.set_permissions(fs::Permissions::from_mode(new_mode))?,
        }
        file.sync_all()?;
        Ok(guard)
    }

    /// Where the staged content is, for a validator to read before commit.
    pub fn path(&self) -> &Path {
        &self.staged
    }

    /// Makes the staged content the target's. With `backup`, the previous
    /// file stays under `<target>.<pid>.<date>@<time>~` and its path is returned.
    pub fn commit(mut self, backup: bool) -> io::Result<Option<PathBuf>> {
        let backup_file = if backup && self.target.exists() {
            let backup_path = backup_path(&self.target);
            // A hard link keeps the old inode, its mode and owner, for free;
            // copy where the file system cannot link.
            if fs::hard_link(&self.target, &backup_path).is_err() {
                fs::copy(&self.target, &backup_path)?;
            }
            Some(backup_path)
        } else {
            None
        };
        fs::rename(&self.staged, &self.target)?;
        self.committed = true;
        // The rename is durable only once the directory is synced.
        if let Ok(dir) = File::open(parent_dir(&self.target)) {
            let _ = dir.sync_all();
        }
        Ok(backup_file)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.staged);
        }
    }
}

/// Creates `dir` and its missing parents with mode 0755, whatever the umask
/// the module runs under (the action plugin's is 077): a folder for a config
/// file, such as /etc/containerd, must be as its package makes it, readable
/// by all.
fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn backup_path(target: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = target.as_os_str().to_owned();
    name.push(format!(".{}.{}~", std::process::id(), utc_timestamp(secs)));
    PathBuf::from(name)
}

/// `YYYY-MM-DD@HH:MM:SS` in UTC, the stamp Ansible puts in backup names.
pub fn utc_timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}@{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// What `converge_file` did.
#[derive(Clone, Debug, PartialEq)]
pub struct FileOutcome {
    pub changed: bool,
    pub backup_file: Option<PathBuf>,
    /// Present when the content differs (also in check mode).
    pub diff: Option<Diff>,
}

/// Makes `path` hold exactly `content`: nothing is written when it already
/// does, or in check mode, where only the diff is reported.
pub fn converge_file(
    path: &Path,
    content: &[u8],
    new_mode: u32,
    backup: bool,
    check_mode: bool,
) -> io::Result<FileOutcome> {
    let before = read_optional(path)?;
    if before.as_deref() == Some(content) {
        return Ok(FileOutcome {
            changed: false,
            backup_file: None,
            diff: None,
        });
    }
    let diff = Diff::of_file(&path.to_string_lossy(), before.as_deref(), content);
    let backup_file = if check_mode {
        None
    } else {
        StagedFile::stage(path, content, new_mode)?.commit(backup && before.is_some())?
    };
    Ok(FileOutcome {
        changed: true,
        backup_file,
        diff: Some(diff),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ansible-module-fs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn timestamp_matches_a_known_date() {
        // 2026-11-29 09:52:32 UTC
        assert_eq!(utc_timestamp(1_795_945_952), "2026-11-29@09:52:32");
        assert_eq!(utc_timestamp(0), "1970-01-01@00:00:00");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29@00:00:00");
    }

    #[test]
    fn converge_creates_then_reports_no_change() {
        let dir = scratch("create");
        let path = dir.join("sub/gpu.fact");
        let first = converge_file(&path, b"{}\n", 0o644, true, false).unwrap();
        assert!(first.changed);
        assert_eq!(first.backup_file, None, "nothing to back up for a new file");
        assert_eq!(fs::read(&path).unwrap(), b"{}\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        assert_eq!(fs::metadata(dir.join("sub")).unwrap().mode() & 0o777, 0o755);
        let second = converge_file(&path, b"{}\n", 0o644, true, false).unwrap();
        assert!(!second.changed);
        assert!(second.diff.is_none());
    }

    #[test]
    fn check_mode_reports_the_diff_and_writes_nothing() {
        let dir = scratch("check");
        let path = dir.join("f");
        fs::write(&path, "old\n").unwrap();
        let out = converge_file(&path, b"new\n", 0o644, true, true).unwrap();
        assert!(out.changed);
        let diff = out.diff.unwrap();
        assert_eq!(
            (diff.before.as_str(), diff.after.as_str()),
            ("old\n", "new\n")
        );
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary or backup file left"
        );
    }

    #[test]
    fn replace_keeps_mode_and_backs_up_the_old_content() {
        let dir = scratch("replace");
        let path = dir.join("config.toml");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let out = converge_file(&path, b"new\n", 0o644, true, false).unwrap();
        let backup = out.backup_file.expect("a backup of the old file");
        assert_eq!(fs::read(&backup).unwrap(), b"old\n");
        assert!(backup.to_string_lossy().ends_with('~'));
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn a_staged_file_dropped_without_commit_leaves_nothing() {
        let dir = scratch("drop");
        let path = dir.join("config.toml");
        fs::write(&path, "old\n").unwrap();
        let staged = StagedFile::stage(&path, b"candidate\n", 0o644).unwrap();
        assert_eq!(fs::read(staged.path()).unwrap(), b"candidate\n");
        drop(staged);
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }
}
