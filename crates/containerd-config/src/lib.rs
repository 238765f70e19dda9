//! containerd's `config.toml`, edited for one purpose: the CRI runtimes that
//! Kubernetes pods run with (the NVIDIA runtime, or runc alone).
//!
//! Three ways to get there, all pure functions over text:
//! - [`render`]: a whole config from a Jinja template (the role's
//!   `containerd_nvidia.j2` / `containerd_config.toml.j2`, embedded here).
//! - [`merge`]: the existing file edited in place with a format-preserving
//!   TOML editor, so that every comment, the key order and every unrelated
//!   setting survive byte for byte; editing an already-correct file gives
//!   back the same bytes.
//! - [`drop_in`] + [`add_import`]: a separate file that the main one imports.
//!
//! [`verify`] then checks that a candidate really sets what was asked, and
//! [`verify_effective`] checks the same on `containerd config dump` output,
//! and [`unrelated_changes`] that nothing else changed there.
//! [`report_dump`] and [`report_files`] only read: what the current
//! configuration says about the runtimes, as containerd merged it or as the
//! files would merge.
//! Everything that differs between config version 2 (containerd 1.x) and 3
//! (containerd 2.x) lives in [`ConfigVersion`].
//!
//! Unlike `nvidia-ctk runtime configure`, which this replaces, nothing here
//! drops comments, and `SystemdCgroup` is always written on every runtime
//! configured, never left to be copied from a runc entry that may not exist.

mod check;
mod edit;
mod error;
mod render;
mod report;
mod version;

pub use check::{configured_default, unrelated_changes, verify, verify_effective};
pub use edit::{add_import, drop_in, import_covers, merge, validation_copy, Edit, RelativeImports};
pub use error::Error;
pub use render::{builtin_template, render, TemplateVars, MODULE_VARIABLES};
pub use report::{report_dump, report_files, ConfigFiles, Report, RuntimeReport};
pub use version::{
    choose_version, declared_version, parse_containerd_version, ConfigVersion, ContainerdVersion,
    Declared,
};

/// The standard runtime's name in containerd's `runtimes` table.
pub const RUNC: &str = "runc";

/// The shim both runc and the NVIDIA runtime run under: the NVIDIA runtime is
/// a runc wrapper, so only `BinaryName` tells them apart.
pub const RUNC_RUNTIME_TYPE: &str = "io.containerd.runc.v2";

/// What the config must say about runtimes: the module's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Configure the NVIDIA runtime, or the standard runc runtime only.
    pub nvidia_runtime: bool,
    /// Make the NVIDIA runtime `default_runtime_name`; otherwise runc is.
    pub set_as_default: bool,
    /// The NVIDIA runtime's key under `runtimes`, and the RuntimeClass
    /// handler name.
    pub runtime_name: String,
    /// The NVIDIA runtime's `BinaryName`: nvidia-container-runtime.
    pub runtime_path: String,
    /// `SystemdCgroup` on every runtime configured; it must match the
    /// kubelet's cgroup driver.
    pub systemd_cgroup: bool,
    /// The default runtime to leave in place when the NVIDIA runtime is not
    /// to be the default: a user's `crun` or `kata` (read from the existing
    /// file by the caller; never the NVIDIA runtime's own name). `None`: runc.
    pub keep_default: Option<String>,
    /// The CRI plugin's `enable_cdi` (containerd 1.7 needs it for CDI
    /// devices, 2.x has it on by default); `None` leaves it as it is.
    pub enable_cdi: Option<bool>,
}

impl Wanted {
    /// The NVIDIA runtime at the path NVIDIA's packages install it, made the
    /// default, with `SystemdCgroup`: what the module does with its defaults.
    pub fn nvidia() -> Wanted {
        Wanted {
            nvidia_runtime: true,
            set_as_default: true,
            runtime_name: "nvidia".into(),
            runtime_path: "/usr/bin/nvidia-container-runtime".into(),
            systemd_cgroup: true,
            keep_default: None,
            enable_cdi: None,
        }
    }

    /// runc alone, with `SystemdCgroup`: a CPU node.
    pub fn runc_only() -> Wanted {
        Wanted {
            nvidia_runtime: false,
            ..Wanted::nvidia()
        }
    }
}

/// RFC 1123 label: what Kubernetes accepts as a RuntimeClass `handler`, so
/// the only names a pod can select.
fn is_dns_label(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&name.len())
        && name.chars().all(|c| ok(c) || c == '-')
        && name.starts_with(ok)
        && name.ends_with(ok)
}

/// One runtime entry to configure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RuntimeEntry<'a> {
    pub name: &'a str,
    /// `BinaryName`, where it must be set; runc's is left as it is.
    pub binary: Option<&'a str>,
}

impl Wanted {
    /// Checks what cannot be expressed in a config: a runtime name that is
    /// not a plain TOML key, or one that would replace runc.
    pub fn check(&self) -> Result<(), Error> {
        if !self.nvidia_runtime {
            return Ok(());
        }
        if !is_dns_label(&self.runtime_name) {
            let shown: String = self.runtime_name.chars().take(80).collect();
            return Err(Error::Invalid(format!(
                "runtime_name {shown:?}{} must be a DNS label, as Kubernetes requires of a \
                 RuntimeClass handler: 1 to 63 lowercase letters, digits and '-', starting and \
                 ending with a letter or digit",
                if shown.len() < self.runtime_name.len() {
                    " (cut)"
                } else {
                    ""
                }
            )));
        }
        if self.runtime_name == RUNC {
            return Err(Error::Invalid(
                "runtime_name must not be \"runc\": that is the standard runtime, which the \
                 NVIDIA runtime must not replace"
                    .into(),
            ));
        }
        if self.runtime_path.is_empty() {
            return Err(Error::Invalid("runtime_path must not be empty".into()));
        }
        if self.runtime_path.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "runtime_path {:?} holds a control character (NUL, newline...): no program has \
                 such a path",
                self.runtime_path
            )));
        }
        Ok(())
    }

    /// `default_runtime_name`: the NVIDIA runtime when asked to be the
    /// default, otherwise the user's own default (`keep_default`) or runc.
    pub fn default_runtime(&self) -> &str {
        if self.nvidia_runtime && self.set_as_default {
            &self.runtime_name
        } else {
            self.keep_default
                .as_deref()
                .filter(|d| !d.is_empty() && *d != self.runtime_name)
                .unwrap_or(RUNC)
        }
    }

    /// Every runtime this module configures. runc always is, with the same
    /// `SystemdCgroup`: containerd's CRI docs ask for the same setting on all
    /// runc-based runtimes, and runc still runs the pods that ask for it by
    /// RuntimeClass.
    pub(crate) fn runtimes(&self) -> Vec<RuntimeEntry<'_>> {
        let mut all = vec![RuntimeEntry {
            name: RUNC,
            binary: None,
        }];
        if self.nvidia_runtime {
            all.push(RuntimeEntry {
                name: &self.runtime_name,
                binary: Some(&self.runtime_path),
            });
        }
        all
    }
}
