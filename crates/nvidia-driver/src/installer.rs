//! NVIDIA's `.run` installer: what its file name says, and its command line.
//!
//! The `.run` file is a makeself shell archive that unpacks itself and starts
//! `nvidia-installer` with the arguments it was given, so it runs as
//! `sh NVIDIA-Linux-x86_64-580.95.05.run --silent ...`: an argv, never a shell
//! command string. The flags are nvidia-installer's own spellings (its
//! `--advanced-options`).

use crate::module_type;
use crate::version::DriverVersion;
use node_probe::kernel::ModuleType;
use std::path::Path;

/// The installer's default log file; the module always passes it explicitly.
pub const DEFAULT_LOG_FILE: &str = "/var/log/nvidia-installer.log";

/// What `NVIDIA-Linux-<arch>-<version>[-<variant>].run` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallerName {
    pub arch: String,
    pub version: String,
}

/// Reads the architecture and version from an installer's file name; `None`
/// for a name that does not follow NVIDIA's pattern (a renamed copy).
pub fn parse_name(file_name: &str) -> Option<InstallerName> {
    let rest = file_name
        .strip_prefix("NVIDIA-Linux-")?
        .strip_suffix(".run")?;
    let (arch, rest) = rest.split_once('-')?;
    // `-grid`, `-no-compat32` and similar variants follow the version.
    let version = rest.split('-').next()?;
    node_probe::kernel::looks_like_version(version).then(|| InstallerName {
        arch: arch.to_string(),
        version: version.to_string(),
    })
}

/// The file name NVIDIA gives the installer of `version` for `arch`.
pub fn expected_name(arch: &str, version: &DriverVersion) -> String {
    format!("NVIDIA-Linux-{arch}-{version}.run")
}

/// Everything that shapes the installer's command line.
#[derive(Clone, Debug)]
pub struct Invocation<'a> {
    pub installer: &'a Path,
    pub version: &'a DriverVersion,
    pub module_type: ModuleType,
    pub dkms: bool,
    /// Private key and certificate, for Secure Boot.
    pub signing: Option<(&'a Path, &'a Path)>,
    pub kernel_source_path: Option<&'a Path>,
    pub log_file: &'a Path,
    pub extra_args: &'a [String],
}

/// The argv that runs the installer: unattended (`--silent` asks nothing and
/// prints only errors; `--no-questions --ui=none` say the same to installers
/// that read them separately), logging where the module reads the log back.
///
/// `--disable-nouveau` is never passed: the installer would write its own
/// blacklist and then stop, while the module retires nouveau itself (with an
/// initramfs rebuild) before the installer is ever started.
pub fn argv(inv: &Invocation) -> Vec<String> {
    let mut argv = vec![
        "sh".to_string(),
        inv.installer.to_string_lossy().into_owned(),
        "--silent".to_string(),
        "--no-questions".to_string(),
        "--ui=none".to_string(),
        format!("--log-file-name={}", inv.log_file.display()),
    ];
    argv.extend(module_type::installer_flags(inv.module_type, inv.version));
    if inv.dkms {
        argv.push("--dkms".to_string());
    }
    if let Some((key, cert)) = inv.signing {
        argv.push(format!("--module-signing-secret-key={}", key.display()));
        argv.push(format!("--module-signing-public-key={}", cert.display()));
    }
    if let Some(path) = inv.kernel_source_path {
        argv.push(format!("--kernel-source-path={}", path.display()));
    }
    argv.extend(inv.extra_args.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installer_names_give_arch_and_version() {
        assert_eq!(
            parse_name("NVIDIA-Linux-x86_64-580.95.05.run"),
            Some(InstallerName {
                arch: "x86_64".into(),
                version: "580.95.05".into()
            })
        );
        assert_eq!(
            parse_name("NVIDIA-Linux-aarch64-570.124.06-grid.run").map(|n| n.arch),
            Some("aarch64".into())
        );
        assert_eq!(parse_name("driver.run"), None);
        assert_eq!(parse_name("NVIDIA-Linux-x86_64-latest.run"), None);
    }

    #[test]
    fn argv_for_a_typical_open_install() {
        let version = DriverVersion::parse("580.95.05").unwrap();
        let inv = Invocation {
            installer: Path::new("/opt/nvidia/NVIDIA-Linux-x86_64-580.95.05.run"),
            version: &version,
            module_type: ModuleType::Open,
            dkms: true,
            signing: Some((Path::new("/root/mok.key"), Path::new("/root/mok.der"))),
            kernel_source_path: None,
            log_file: Path::new(DEFAULT_LOG_FILE),
            extra_args: &["--no-drm".to_string()],
        };
        assert_eq!(
            argv(&inv),
            [
                "sh",
                "/opt/nvidia/NVIDIA-Linux-x86_64-580.95.05.run",
                "--silent",
                "--no-questions",
                "--ui=none",
                "--log-file-name=/var/log/nvidia-installer.log",
                "--kernel-module-type=open",
                "--dkms",
                "--module-signing-secret-key=/root/mok.key",
                "--module-signing-public-key=/root/mok.der",
                "--no-drm",
            ]
        );
    }

    #[test]
    fn argv_for_an_older_branch_without_dkms() {
        let version = DriverVersion::parse("550.54.15").unwrap();
        let inv = Invocation {
            installer: Path::new("/tmp/NVIDIA-Linux-x86_64-550.54.15.run"),
            version: &version,
            module_type: ModuleType::Open,
            dkms: false,
            signing: None,
            kernel_source_path: Some(Path::new("/usr/src/kernels/5.14.0-427.el9.x86_64")),
            log_file: Path::new("/var/tmp/nv.log"),
            extra_args: &[],
        };
        assert_eq!(
            argv(&inv)[5..],
            [
                "--log-file-name=/var/tmp/nv.log",
                "-m=kernel-open",
                "--kernel-source-path=/usr/src/kernels/5.14.0-427.el9.x86_64",
            ]
        );
    }
}
