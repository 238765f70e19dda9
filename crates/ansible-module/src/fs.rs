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

/// New content staged under a temporary name, not yet visible under the
/// target's name. Dropping it without a commit removes the temporary file.
///
/// A temporary is `.<tag>.<pid>.<unique>.tmp`, created with `O_EXCL` (never
/// an existing file or a planted link), mode 0600 until its content is
/// complete; `tag` is the target's file name unless the caller stages in a
/// folder of its own ([`StagedFile::stage_in`]). Temporaries of runs that
/// were killed before they could remove them are found by [`clean_stale`].
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
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?
            .to_string_lossy()
            .into_owned();
        StagedFile::stage_in(target, dir, &name, content, new_mode)
    }

    /// As [`StagedFile::stage`], with the temporary in `dir` (which must
    /// exist, on the target's file system for the rename) named after `tag`:
    /// for a target whose own folder must not hold one (a folder a glob
    /// reads whole, such as containerd's `conf.d/*`).
    pub fn stage_in(
        target: &Path,
        dir: &Path,
        tag: &str,
        content: &[u8],
        new_mode: u32,
    ) -> io::Result<StagedFile> {
        let existing = match fs::metadata(target) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (staged, mut file) = create_unique(dir, tag)?;
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
    /// file stays beside it as `<target>.<pid>.<date>@<time>~` and its path
    /// is returned.
    pub fn commit(self, backup: bool) -> io::Result<Option<PathBuf>> {
        let dir = parent_dir(&self.target).to_path_buf();
        self.commit_with_backup_in(backup.then_some(&dir))
    }

    /// Renames the staged content over the target. With `backup_dir`, the
    /// previous file is first kept there as `<name>.<pid>.<date>@<time>~`;
    /// when the rename then fails, that backup is removed again, so a
    /// failure leaves exactly what was there.
    pub fn commit_with_backup_in(
        mut self,
        backup_dir: Option<&Path>,
    ) -> io::Result<Option<PathBuf>> {
        let backup = match backup_dir {
            Some(dir) if self.target.exists() => {
                let path = backup_path(dir, &self.target);
                // A hard link keeps the old inode, its mode and owner, for
                // free; copy where the file system cannot link.
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
        // The rename is durable only once the folders are synced.
        for dir in [parent_dir(&self.target), parent_dir(&self.staged)] {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(backup)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.staged);
        }
    }
}

const TMP_SUFFIX: &str = ".tmp";

/// A new file `dir/.<tag>.<pid>.<unique>.tmp`, mode 0600, created with
/// `O_EXCL`; a clash (a name left by a dead run of the same pid) is retried
/// under another name.
fn create_unique(dir: &Path, tag: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(pid) << 32)
        | 1;
    for _ in 0..100 {
        // xorshift: a different name on every clash.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let path = dir.join(format!(".{tag}.{pid}.{seed:016x}{TMP_SUFFIX}"));
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

/// Removes the temporaries that runs killed before they could clean up
/// (SIGKILL, a dropped SSH session) left in `dir`: `.<tag>.<pid>[.*].tmp`,
/// and `.<name>.<pid>.tmp` / `.<name>.check.<pid>.tmp` for each of
/// `older_names` (names earlier releases used), when no process `<pid>`
/// runs. Only regular files; returns what was removed.
pub fn clean_stale(dir: &Path, tag: &str, older_names: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut removed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_pid(&name, tag, older_names) else {
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

/// The pid in a temporary's name, if it is one [`clean_stale`] looks for.
fn stale_pid(name: &str, tag: &str, older_names: &[&str]) -> Option<u32> {
    let middle = name.strip_suffix(TMP_SUFFIX)?;
    if let Some(rest) = middle.strip_prefix(&format!(".{tag}.")) {
        return rest.split('.').next()?.parse().ok();
    }
    older_names.iter().find_map(|n| {
        let rest = middle.strip_prefix(&format!(".{n}."))?;
        rest.strip_prefix("check.").unwrap_or(rest).parse().ok()
    })
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
/// does, or in check mode, where only the diff is reported. A real run also
/// removes the temporaries of `path` that killed runs left (changed or not).
pub fn converge_file(
    path: &Path,
    content: &[u8],
    new_mode: u32,
    backup: bool,
    check_mode: bool,
) -> io::Result<FileOutcome> {
    if let (false, Some(name)) = (check_mode, path.file_name()) {
        clean_stale(parent_dir(path), &name.to_string_lossy(), &[]);
    }
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
    fn temporaries_of_dead_runs_are_found_by_tag_and_older_names() {
        let older = ["config.toml"];
        for (name, pid) in [
            (".containerd-runtime-config.42.00ff.tmp", Some(42)),
            (".gpu.fact.42.00ff.tmp", None),
            (".config.toml.42.tmp", Some(42)),
            (".config.toml.check.42.tmp", Some(42)),
            ("config.toml", None),
            (".other.toml.42.tmp", None),
            (".config.toml.x.tmp", None),
        ] {
            assert_eq!(
                stale_pid(name, "containerd-runtime-config", &older),
                pid,
                "{name}"
            );
        }
        // A file's own tag also covers the name earlier releases used.
        assert_eq!(stale_pid(".gpu.fact.42.tmp", "gpu.fact", &[]), Some(42));
        assert_eq!(
            stale_pid(".gpu.fact.42.00ff.tmp", "gpu.fact", &[]),
            Some(42)
        );
    }

    #[test]
    fn a_killed_runs_temporary_is_removed_by_the_next_real_run_only() {
        let dir = scratch("stale");
        let path = dir.join("gpu.fact");
        // No process has a pid this high (pid_max is at most 2^22).
        let dead = dir.join(".gpu.fact.999999999.tmp");
        let alive = dir.join(format!(".gpu.fact.{}.0001.tmp", std::process::id()));
        fs::write(&dead, "cut sh").unwrap();
        fs::write(&alive, "ours, in use").unwrap();
        converge_file(&path, b"{}\n", 0o644, false, true).unwrap();
        assert!(dead.exists(), "check mode removes nothing");
        converge_file(&path, b"{}\n", 0o644, false, false).unwrap();
        assert!(!dead.exists(), "a dead run's temporary is removed");
        assert!(alive.exists(), "a live process's temporary is left");
    }

    /// A scratch folder holding `config.toml` with "old\n".
    fn old_config(name: &str) -> (PathBuf, PathBuf) {
        let dir = scratch(name);
        let path = dir.join("config.toml");
        fs::write(&path, "old\n").unwrap();
        (dir, path)
    }

    #[test]
    fn a_failed_rename_removes_the_backup_it_made() {
        let (dir, path) = old_config("rename-fails");
        let staged = StagedFile::stage(&path, b"new\n", 0o644).unwrap();
        // The backup is made, then the rename finds no temporary.
        fs::remove_file(staged.path()).unwrap();
        assert!(staged.commit_with_backup_in(Some(&dir)).is_err());
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("config.toml")],
            "no backup left"
        );
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
    }

    #[test]
    fn a_staged_file_dropped_without_commit_leaves_nothing() {
        let (dir, path) = old_config("drop");
        let staged = StagedFile::stage(&path, b"candidate\n", 0o644).unwrap();
        assert_eq!(fs::read(staged.path()).unwrap(), b"candidate\n");
        drop(staged);
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }
}
