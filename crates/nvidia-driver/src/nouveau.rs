//! Retiring nouveau: the installer refuses to run while nouveau drives the GPU,
//! and nouveau comes back at boot from the initramfs unless that is rebuilt
//! after the blacklist is written. So: blacklist, rebuild, reboot, install.

use crate::system::System;
use node_probe::Root;
use std::time::{SystemTime, UNIX_EPOCH};

/// The blacklist file (a node path).
pub const BLACKLIST_PATH: &str = "/etc/modprobe.d/blacklist-nouveau.conf";

/// Its content: `modeset=0` too, so that a nouveau loaded anyway (from an old
/// initramfs) does not take the console.
pub const BLACKLIST: &str = "\
# Written by nvidia_driver_install: the NVIDIA driver cannot be installed
# while nouveau drives the GPU.
blacklist nouveau
options nouveau modeset=0
";

/// The programs that rebuild the initramfs, in the order they are looked for:
/// Debian and Ubuntu have `update-initramfs` (which calls dracut where dracut
/// is the generator), RHEL and Rocky have `dracut`.
const INITRAMFS_TOOLS: &[(&str, &[&str])] = &[("update-initramfs", &["-u"]), ("dracut", &["-f"])];

/// The argv that rebuilds the initramfs of the running kernel, when one of
/// the tools is on PATH.
pub fn initramfs_command(sys: &dyn System) -> Option<Vec<String>> {
    INITRAMFS_TOOLS.iter().find_map(|(tool, args)| {
        sys.find_program(tool)?;
        let mut argv = vec![tool.to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        Some(argv)
    })
}

/// When the node booted (`btime` of `/proc/stat`), in seconds since the epoch.
pub fn boot_time(root: &Root) -> Option<u64> {
    let stat = std::fs::read_to_string(root.path("/proc/stat")).ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|t| t.trim().parse().ok())
}

/// Whether the initramfs must be rebuilt while nouveau is loaded: always when
/// the blacklist was just written; when it was already there, only if it was
/// written before this boot. nouveau then came from an initramfs that lacks
/// the blacklist (written by hand, or an earlier rebuild failed); a blacklist
/// written since this boot just waits for the reboot.
pub fn initramfs_needs_rebuild(
    blacklist_written_now: bool,
    blacklist_mtime: Option<SystemTime>,
    boot_time: Option<u64>,
) -> bool {
    if blacklist_written_now {
        return true;
    }
    let written = blacklist_mtime
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    match (written, boot_time) {
        (Some(written), Some(boot)) => written <= boot,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_blacklist_blacklists_and_disables_modesetting() {
        let lines: Vec<&str> = BLACKLIST.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["blacklist nouveau", "options nouveau modeset=0"]);
    }

    #[test]
    fn rebuild_when_written_now_or_before_this_boot() {
        let at = |secs| Some(UNIX_EPOCH + Duration::from_secs(secs));
        assert!(initramfs_needs_rebuild(true, at(2000), Some(1000)));
        assert!(
            !initramfs_needs_rebuild(false, at(2000), Some(1000)),
            "waits for the reboot"
        );
        assert!(
            initramfs_needs_rebuild(false, at(500), Some(1000)),
            "stale initramfs"
        );
        assert!(
            initramfs_needs_rebuild(false, at(2000), None),
            "unknown boot time"
        );
    }

    #[test]
    fn boot_time_comes_from_proc_stat() {
        let dir = std::env::temp_dir().join(format!("nvidia-driver-btime-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        std::fs::write(
            dir.join("proc/stat"),
            "cpu 1 2 3\nbtime 1795945952\nprocesses 9\n",
        )
        .unwrap();
        assert_eq!(boot_time(&Root::new(&dir)), Some(1_795_945_952));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
