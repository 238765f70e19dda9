//! The checks that must all pass before anything is written or run. Each one
//! names what is wrong and how to fix it on this node's distribution; the
//! module runs them all and reports every failure at once.

use crate::checksum::{self, Checksum};
use crate::installer;
use crate::module_type::Decision;
use crate::system::System;
use crate::version::DriverVersion;
use node_probe::{kernel, Root};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub message: String,
}

impl Check {
    pub fn pass(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            ok: true,
            message: message.into(),
        }
    }

    pub fn fail(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            ok: false,
            message: message.into(),
        }
    }
}

/// One message for all failed checks, or `None` when all passed.
pub fn summary(checks: &[Check]) -> Option<String> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("[{}] {}", c.name, c.message))
        .collect();
    match failed.len() {
        0 => None,
        1 => Some(format!(
            "pre-flight check failed, nothing was run or written: {}",
            failed[0]
        )),
        n => Some(format!(
            "{n} pre-flight checks failed, nothing was run or written: {}",
            failed.join(" ")
        )),
    }
}

/// How the node installs a package, for messages: `dnf install gcc`.
fn install_hint(family: Option<&str>, package: &str) -> String {
    match family {
        Some("RedHat") => format!("`dnf install {package}`"),
        Some("Debian") => format!("`apt-get install {package}`"),
        Some("Suse") => format!("`zypper install {package}`"),
        _ => format!("the package {package}"),
    }
}

/// The installer file: given, readable, and (when its name follows NVIDIA's
/// pattern) of the requested version and of this node's architecture.
pub fn installer(path: Option<&Path>, version: &DriverVersion, node_arch: &str) -> Check {
    const NAME: &str = "installer";
    let expected = installer::expected_name(node_arch, version);
    let Some(path) = path else {
        return Check::fail(
            NAME,
            format!(
                "no installer given: installing driver {version} needs `installer`, the path of \
                 {expected} on the node (copy it there from your local repository first)"
            ),
        );
    };
    let shown = path.display();
    // Non-blocking: a FIFO in its place is "not a file", never a hang.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path);
    match opened.and_then(|f| f.metadata()) {
        Ok(meta) if meta.is_file() => {
            let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            match file_name.as_deref().and_then(installer::parse_name) {
                Some(name) if name.version != version.as_str() => Check::fail(
                    NAME,
                    format!(
                        "{shown} installs driver {}, not the requested {version}: give the path \
                         of {expected}",
                        name.version
                    ),
                ),
                Some(name) if name.arch != node_arch => Check::fail(
                    NAME,
                    format!(
                        "{shown} is the installer for {} but this node is {node_arch}{}: give the \
                         path of {expected}",
                        name.arch,
                        if node_arch == "aarch64" {
                            " (Grace)"
                        } else {
                            ""
                        }
                    ),
                ),
                _ => Check::pass(
                    NAME,
                    format!("{shown} is readable ({} MiB)", meta.len() >> 20),
                ),
            }
        }
        Ok(_) => Check::fail(
            NAME,
            format!("{shown} is not a file: give the path of {expected}"),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::fail(
            NAME,
            format!("{shown} does not exist: copy {expected} to the node first"),
        ),
        Err(e) => Check::fail(NAME, format!("cannot read the installer {shown}: {e}")),
    }
}

/// The installer's SHA-256 against the `checksum` option.
pub fn checksum(path: &Path, expected: &Checksum) -> Check {
    checksum_of(path, checksum::sha256_file(path), expected)
}

/// `actual` (the SHA-256 of the bytes that will run) against the `checksum` option.
pub fn checksum_of(path: &Path, actual: std::io::Result<String>, expected: &Checksum) -> Check {
    const NAME: &str = "checksum";
    match actual {
        Ok(actual) if actual == expected.hex() => {
            Check::pass(NAME, format!("sha256 of {} matches", path.display()))
        }
        Ok(actual) => Check::fail(
            NAME,
            format!(
                "{} has sha256 {actual}, not the expected {}: the file is damaged or is not \
                 the installer you meant; copy it again from your repository",
                path.display(),
                expected.hex()
            ),
        ),
        Err(e) => Check::fail(NAME, format!("cannot read {}: {e}", path.display())),
    }
}

/// The kernel module type decision, as a check.
pub fn kernel_module_type(decision: &Result<Decision, crate::Error>) -> Check {
    match decision {
        Ok(d) => Check::pass("kernel_module_type", d.reason.clone()),
        Err(why) => Check::fail("kernel_module_type", why.to_string()),
    }
}

/// nouveau must not be loaded, unless the module may retire it.
pub fn nouveau(loaded: bool, disable_nouveau: bool) -> Check {
    const NAME: &str = "nouveau";
    match (loaded, disable_nouveau) {
        (false, _) => Check::pass(NAME, "nouveau is not loaded"),
        (true, true) => Check::pass(
            NAME,
            format!(
                "nouveau is loaded: it will be blacklisted in {} and the node must reboot \
                 before the driver can be installed",
                crate::nouveau::BLACKLIST_PATH
            ),
        ),
        (true, false) => Check::fail(
            NAME,
            "nouveau is loaded and disable_nouveau is false: the NVIDIA installer refuses to \
             install while nouveau drives the GPU. Set disable_nouveau: true (the module \
             blacklists it and asks for a reboot), or blacklist it yourself and reboot",
        ),
    }
}

/// A tool to rebuild the initramfs, needed when nouveau is retired.
pub fn initramfs_tool(sys: &dyn System) -> Check {
    match crate::nouveau::initramfs_command(sys) {
        Some(argv) => Check::pass("initramfs_tool", format!("{} is on PATH", argv[0])),
        None => Check::fail(
            "initramfs_tool",
            "neither update-initramfs nor dracut is on PATH, so the initramfs cannot be rebuilt \
             and nouveau would load again from it at boot: install initramfs-tools or dracut, \
             or set rebuild_initramfs: false if the node's initramfs holds no nouveau",
        ),
    }
}

/// The release of the running kernel: the root's procfs, else this
/// machine's (a chroot without /proc still runs on this machine's kernel).
pub fn running_kernel_release(root: &Root) -> Option<String> {
    kernel::release(root).or_else(|| kernel::release(&Root::new("/")))
}

/// The headers (kernel-devel, linux-headers) of the running kernel, without
/// which the installer cannot build the module. The usual cause is a kernel
/// update without a reboot: headers exist for the new kernel only.
pub fn kernel_headers(
    root: &Root,
    release: Option<&str>,
    os_family: Option<&str>,
    kernel_source_path: Option<&Path>,
) -> Check {
    const NAME: &str = "kernel_headers";
    let Some(release) = release else {
        return Check::fail(
            NAME,
            "cannot tell the running kernel's release: /proc/sys/kernel/osrelease is unreadable",
        );
    };
    let node_path = match kernel_source_path {
        Some(p) => p.to_string_lossy().into_owned(),
        None => format!("/lib/modules/{release}/build"),
    };
    let path = root.path(&node_path);
    if path.join("Makefile").is_file() {
        return Check::pass(
            NAME,
            format!("the headers of kernel {release} are in {node_path}"),
        );
    }
    let problem = if path.is_dir() {
        format!("{node_path} holds no kernel build tree (no Makefile)")
    } else {
        format!("{node_path} does not exist")
    };
    if kernel_source_path.is_some() {
        return Check::fail(
            NAME,
            format!("{problem}: kernel_source_path must name the configured source tree of the running kernel {release}"),
        );
    }
    Check::fail(NAME, missing_headers(root, release, os_family, &problem))
}

/// What to install when the running kernel's headers are missing, and the
/// kernels that have them (a kernel updated without a reboot).
fn missing_headers(root: &Root, release: &str, os_family: Option<&str>, problem: &str) -> String {
    let package = match os_family {
        Some("RedHat") => format!("kernel-devel-{release}"),
        Some("Debian") => format!("linux-headers-{release}"),
        Some("Suse") => "kernel-default-devel".to_string(),
        _ => format!("the kernel headers of {release} (kernel-devel-{release} on RHEL, linux-headers-{release} on Ubuntu)"),
    };
    let others = kernels_with_headers(root, release);
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(
            "; headers are installed for {} only: if the kernel was updated, reboot into it first",
            others.join(", ")
        )
    };
    format!(
        "the headers of the running kernel {release} are missing ({problem}), so the installer \
         cannot build the kernel module: install {}{others}",
        if os_family.is_some() {
            install_hint(os_family, &package)
        } else {
            package
        }
    )
}

fn kernels_with_headers(root: &Root, running: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.path("/lib/modules")) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != running)
        .filter(|name| {
            root.path(&format!("/lib/modules/{name}/build/Makefile"))
                .is_file()
        })
        .collect();
    found.sort();
    found
}

/// A C compiler on PATH: the kernel module is built on the node.
pub fn compiler(sys: &dyn System, os_family: Option<&str>) -> Check {
    on_path(
        sys.find_program("cc").or_else(|| sys.find_program("gcc")),
        "compiler",
        || {
            format!(
                "no C compiler (cc or gcc) is on PATH, and the installer compiles the kernel \
             module: install {}",
                install_hint(os_family, "gcc")
            )
        },
    )
}

/// `make` on PATH.
pub fn make(sys: &dyn System, os_family: Option<&str>) -> Check {
    on_path(sys.find_program("make"), "make", || {
        format!(
            "make is not on PATH, and the installer needs it to build the kernel module: \
             install {}",
            install_hint(os_family, "make")
        )
    })
}

/// `dkms` on PATH, when the module is to be registered with DKMS.
pub fn dkms(sys: &dyn System, os_family: Option<&str>) -> Check {
    on_path(sys.find_program("dkms"), "dkms", || {
        format!(
            "dkms is not on PATH but dkms is true: install {}{}, or set dkms: false (the \
             module must then be rebuilt by hand after every kernel update)",
            install_hint(os_family, "dkms"),
            if os_family == Some("RedHat") {
                " (from EPEL)"
            } else {
                ""
            }
        )
    })
}

/// The check `name` of a program found at `found`, else failed with `missing()`.
fn on_path(found: Option<PathBuf>, name: &'static str, missing: impl FnOnce() -> String) -> Check {
    match found {
        Some(path) => Check::pass(name, format!("{} is on PATH", path.display())),
        None => Check::fail(name, missing()),
    }
}

/// The UEFI variable that says whether Secure Boot is on.
pub const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0c9897b4a21";
/// The same variable through the older sysfs interface, data byte only.
const SECURE_BOOT_VAR_LEGACY: &str =
    "/sys/firmware/efi/vars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0c9897b4a21/data";

/// The Secure Boot state of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecureBoot {
    Enabled,
    Disabled,
    /// No `/sys/firmware/efi`: booted by a BIOS, which has no Secure Boot.
    NotEfi,
    /// The variable exists but could not be read.
    Unknown(String),
}

/// Reads the state: efivarfs gives 4 bytes of attributes, then the data byte.
pub fn secure_boot_state(root: &Root) -> SecureBoot {
    let decode = |byte: u8| {
        if byte == 1 {
            SecureBoot::Enabled
        } else {
            SecureBoot::Disabled
        }
    };
    match std::fs::read(root.path(SECURE_BOOT_VAR)) {
        Ok(bytes) if bytes.len() >= 5 => return decode(bytes[4]),
        Ok(bytes) => {
            return SecureBoot::Unknown(format!(
                "{SECURE_BOOT_VAR} holds {} bytes, not 5",
                bytes.len()
            ))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return SecureBoot::Unknown(format!("cannot read {SECURE_BOOT_VAR}: {e}"))
        }
        Err(_) => {}
    }
    if let Ok(bytes) = std::fs::read(root.path(SECURE_BOOT_VAR_LEGACY)) {
        if let Some(&byte) = bytes.first() {
            return decode(byte);
        }
    }
    if root.path("/sys/firmware/efi").is_dir() {
        SecureBoot::Disabled
    } else {
        SecureBoot::NotEfi
    }
}

/// Secure Boot on means the module must be signed with a key the firmware
/// trusts, or the kernel refuses it ("Key was rejected by service").
/// `signing` is the key and its certificate (the module's spec requires
/// them together).
pub fn secure_boot(root: &Root, signing: Option<(&Path, &Path)>) -> Check {
    const NAME: &str = "secure_boot";
    let state = secure_boot_state(root);
    if let Some((key, cert)) = signing {
        for (option, path) in [("module_signing_key", key), ("module_signing_cert", cert)] {
            if let Err(e) = File::open(path) {
                return Check::fail(
                    NAME,
                    format!("cannot read {option} {}: {e}", path.display()),
                );
            }
        }
    }
    let signing = signing.map(|(key, _)| key);
    match (state, signing) {
        (SecureBoot::Enabled, None) => Check::fail(
            NAME,
            format!(
                "Secure Boot is enabled ({SECURE_BOOT_VAR}), so the kernel will refuse an \
                 unsigned NVIDIA module: give module_signing_key and module_signing_cert (a key \
                 pair whose certificate is enrolled with `mokutil --import`), or disable Secure \
                 Boot in the firmware"
            ),
        ),
        (SecureBoot::Enabled, Some(key)) => Check::pass(
            NAME,
            format!(
                "Secure Boot is enabled; the module will be signed with {} (its certificate \
                 must be enrolled in the firmware, e.g. with `mokutil --import`)",
                key.display()
            ),
        ),
        (SecureBoot::Disabled, _) => Check::pass(NAME, "Secure Boot is disabled"),
        (SecureBoot::NotEfi, _) => Check::pass(NAME, "not booted by UEFI: no Secure Boot"),
        (SecureBoot::Unknown(why), _) => Check::pass(
            NAME,
            format!("Secure Boot state unknown ({why}); going on as if it were disabled"),
        ),
    }
}

/// Where the installer writes: its unpack directory ($TMPDIR, else /tmp),
/// /usr for the libraries and tools, /lib/modules for the kernel modules.
pub fn space_paths(tmpdir: Option<&str>) -> Vec<String> {
    let tmp = tmpdir
        .filter(|t| t.starts_with('/'))
        .unwrap_or("/tmp")
        .to_string();
    vec![tmp, "/usr".to_string(), "/lib/modules".to_string()]
}

/// At least `min_free_mb` MiB free where the installer writes.
pub fn free_space(root: &Root, sys: &dyn System, node_paths: &[String], min_free_mb: u64) -> Check {
    const NAME: &str = "free_space";
    let mut short = Vec::new();
    let mut seen = Vec::new();
    for node_path in node_paths {
        let path = existing_ancestor(root, node_path);
        match sys.free_bytes(&path) {
            Ok(bytes) => {
                let mb = bytes >> 20;
                seen.push(format!("{node_path} {mb} MiB"));
                if mb < min_free_mb {
                    short.push(format!("{node_path} has {mb} MiB free"));
                }
            }
            Err(e) => short.push(format!(
                "cannot tell the free space of {node_path} ({}): {e}",
                path.display()
            )),
        }
    }
    if short.is_empty() {
        Check::pass(NAME, format!("free: {}", seen.join(", ")))
    } else {
        Check::fail(
            NAME,
            format!(
                "not enough free space for the installer: {}; it needs {min_free_mb} MiB \
                 (min_free_mb) on each: free some space, or point TMPDIR at a larger filesystem \
                 for the unpacking",
                short.join(", ")
            ),
        )
    }
}

/// The path itself, or its nearest existing parent (a missing /lib/modules
/// is created on the filesystem of /lib), never above the root.
fn existing_ancestor(root: &Root, node_path: &str) -> PathBuf {
    let mut path = root.path(node_path);
    while !path.exists() && path.as_path() != root.as_path() {
        if !path.pop() {
            break;
        }
    }
    path
}

/// No `nvidia-installer` started by other means is running now (the lock
/// covers runs of this module only).
pub fn no_other_installer(root: &Root) -> Check {
    const NAME: &str = "other_installer";
    let running = running_installers(root);
    if running.is_empty() {
        return Check::pass(NAME, "no other nvidia-installer is running");
    }
    let pids: Vec<String> = running.iter().map(u32::to_string).collect();
    Check::fail(
        NAME,
        format!(
            "an nvidia-installer started outside this module is running (pid {}): wait for it \
             to finish; two installers at once leave a broken driver",
            pids.join(", ")
        ),
    )
}

fn running_installers(root: &Root) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(root.path("/proc")) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // comm is cut at 15 characters: "nvidia-installe".
            root.read_trimmed(&format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| "nvidia-installer".starts_with(&comm) && comm.len() >= 14)
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::fake::FakeSystem;

    fn scratch(name: &str) -> (PathBuf, Root) {
        let dir =
            std::env::temp_dir().join(format!("nvidia-driver-pf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (dir.clone(), Root::new(dir))
    }

    fn write(dir: &Path, node_path: &str, content: &[u8]) {
        let path = dir.join(node_path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn missing_headers_name_the_package_of_each_family() {
        let (dir, root) = scratch("headers");
        let rel = "5.14.0-427.13.1.el9_4.x86_64";
        let rhel = kernel_headers(&root, Some(rel), Some("RedHat"), None);
        assert!(!rhel.ok);
        assert!(
            rhel.message
                .contains("install `dnf install kernel-devel-5.14.0-427.13.1.el9_4.x86_64`"),
            "{}",
            rhel.message
        );
        let ubuntu = kernel_headers(&root, Some("6.8.0-45-generic"), Some("Debian"), None);
        assert!(ubuntu
            .message
            .contains("`apt-get install linux-headers-6.8.0-45-generic`"));
        write(&dir, "/lib/modules/6.8.0-49-generic/build/Makefile", b"");
        let updated = kernel_headers(&root, Some("6.8.0-45-generic"), Some("Debian"), None);
        assert!(
            updated.message.ends_with(
                "headers are installed for 6.8.0-49-generic only: if the kernel was updated, \
                 reboot into it first"
            ),
            "{}",
            updated.message
        );
        write(&dir, "/lib/modules/6.8.0-45-generic/build/Makefile", b"");
        assert!(kernel_headers(&root, Some("6.8.0-45-generic"), Some("Debian"), None).ok);
    }

    #[test]
    fn secure_boot_is_read_from_the_efi_variable() {
        let (dir, root) = scratch("sb");
        assert_eq!(secure_boot_state(&root), SecureBoot::NotEfi);
        write(&dir, SECURE_BOOT_VAR, &[6, 0, 0, 0, 0]);
        assert_eq!(secure_boot_state(&root), SecureBoot::Disabled);
        write(&dir, SECURE_BOOT_VAR, &[6, 0, 0, 0, 1]);
        assert_eq!(secure_boot_state(&root), SecureBoot::Enabled);
        let refused = secure_boot(&root, None);
        assert!(!refused.ok);
        assert!(
            refused.message.starts_with("Secure Boot is enabled"),
            "{}",
            refused.message
        );
        write(&dir, "keys/mok.key", b"k");
        write(&dir, "keys/mok.der", b"c");
        assert!(
            secure_boot(
                &root,
                Some((&dir.join("keys/mok.key"), &dir.join("keys/mok.der")))
            )
            .ok
        );
    }

    #[test]
    fn every_short_filesystem_is_named() {
        let (dir, root) = scratch("space");
        for d in ["tmp", "usr", "lib/modules"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let sys = FakeSystem::new().free_mb("/tmp", 300).free_mb("/usr", 5000);
        let check = free_space(&root, &sys, &space_paths(None), 1024);
        assert!(!check.ok);
        assert!(
            check.message.contains("/tmp has 300 MiB free"),
            "{}",
            check.message
        );
        assert!(!check.message.contains("/usr has"), "{}", check.message);
        assert_eq!(
            space_paths(Some("/scratch")),
            ["/scratch", "/usr", "/lib/modules"]
        );
        assert_eq!(
            space_paths(Some("relative")),
            ["/tmp", "/usr", "/lib/modules"]
        );
    }

    #[test]
    fn build_tools_are_looked_up_on_path() {
        let none = FakeSystem::new();
        let c = compiler(&none, Some("RedHat"));
        assert_eq!(
            c.message,
            "no C compiler (cc or gcc) is on PATH, and the installer compiles the kernel module: \
             install `dnf install gcc`"
        );
        assert!(dkms(&none, Some("RedHat")).message.contains("(from EPEL)"));
        let gcc_only = FakeSystem::new().program("gcc").program("make");
        assert!(compiler(&gcc_only, None).ok && make(&gcc_only, None).ok);
    }

    #[test]
    fn installer_name_must_match_version_and_arch() {
        let (dir, _root) = scratch("installer");
        let v = DriverVersion::parse("580.95.05").unwrap();
        let wrong_version = dir.join("NVIDIA-Linux-x86_64-570.124.06.run");
        std::fs::write(&wrong_version, b"#!/bin/sh\n").unwrap();
        let check = installer(Some(&wrong_version), &v, "x86_64");
        assert!(check
            .message
            .contains("installs driver 570.124.06, not the requested 580.95.05"));
        let x86 = dir.join("NVIDIA-Linux-x86_64-580.95.05.run");
        std::fs::write(&x86, b"#!/bin/sh\n").unwrap();
        let on_grace = installer(Some(&x86), &v, "aarch64");
        assert!(
            on_grace.message.contains(
                "this node is aarch64 (Grace): give the path of NVIDIA-Linux-aarch64-580.95.05.run"
            ),
            "{}",
            on_grace.message
        );
        assert!(installer(Some(&x86), &v, "x86_64").ok);
        let missing = installer(Some(&dir.join("nope.run")), &v, "x86_64");
        assert!(missing
            .message
            .ends_with("does not exist: copy NVIDIA-Linux-x86_64-580.95.05.run to the node first"));
        assert!(installer(None, &v, "x86_64")
            .message
            .starts_with("no installer given"));
    }

    #[test]
    fn an_installer_started_by_hand_is_seen_in_proc() {
        let (dir, root) = scratch("proc");
        write(&dir, "/proc/4242/comm", b"nvidia-installe\n");
        write(&dir, "/proc/17/comm", b"sshd\n");
        let check = no_other_installer(&root);
        assert!(!check.ok);
        assert!(check.message.contains("(pid 4242)"), "{}", check.message);
    }

    #[test]
    fn the_summary_lists_every_failure() {
        let checks = [
            Check::pass("a", "fine"),
            Check::fail("make", "no make."),
            Check::fail("dkms", "no dkms."),
        ];
        assert_eq!(
            summary(&checks).unwrap(),
            "2 pre-flight checks failed, nothing was run or written: [make] no make. [dkms] no dkms."
        );
        assert_eq!(summary(&checks[..1]), None);
    }
}
