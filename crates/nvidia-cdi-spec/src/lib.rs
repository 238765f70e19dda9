//! The `nvidia_cdi_spec` module: writes the Container Device Interface spec
//! of the node's NVIDIA GPUs (`/etc/cdi/nvidia.yaml`, kind `nvidia.com/gpu`)
//! from the node itself, as `nvidia-ctk cdi generate` does but without the
//! NVIDIA container toolkit: containerd 1.7+/2.x, CRI-O and Podman then give
//! a container a GPU (`nvidia.com/gpu=0`, `=GPU-<uuid>`, `=all`) with plain
//! runc.
//!
//! A module of its own, not a state of `nvidia_gpu_facts`: that one only
//! reads (and is run on every node, CPU nodes too), this one writes a file
//! that the container runtimes read, with its own options and its own
//! failure modes (no driver loaded, no device files, libraries not found).

pub mod discover;
pub mod spec;

use ansible_module::{fs, Arg, Diff, Failure, Module, ModuleSpec, Outcome};
use node_probe::Root;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const SPEC: ModuleSpec = ModuleSpec {
    name: "nvidia_cdi_spec",
    supports_check_mode: true,
    args: &[
        Arg::path("path").default_str("/etc/cdi/nvidia.yaml"),
        Arg::str("state")
            .default_str("present")
            .choices(&["present", "absent"]),
        Arg::list("library_dirs"),
        Arg::path("root").default_str("/"),
    ],
    ..ModuleSpec::BASE
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Where the spec is written (containerd and CRI-O read /etc/cdi and /var/run/cdi).
    pub path: PathBuf,
    /// `absent` removes the spec.
    pub state: String,
    /// More folders to search for the driver's libraries.
    pub library_dirs: Option<Vec<String>>,
    /// The filesystem to inspect: `/` on a node, a chroot or a test tree
    /// otherwise. The spec names node paths, never root's.
    pub root: PathBuf,
}

/// Why no spec can be written; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no NVIDIA driver is loaded on this node{0}: a CDI spec lists the running driver's \
         device files and libraries, so there is nothing to write. Load the driver first \
         (site.yml -e install_gpu_driver=true), or leave this node out"
    )]
    NoDriver(String),
    #[error("the NVIDIA driver is loaded but reports no version (/sys/module/nvidia/version)")]
    NoDriverVersion,
    #[error(
        "the NVIDIA driver is loaded but /proc/driver/nvidia/gpus gives no GPU ({0}): \
         nothing to put in a CDI spec"
    )]
    NoGpuList(String),
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("GPU {0}: the driver's information file gives no Device Minor")]
    NoMinor(String),
    #[error(
        "the NVIDIA driver is loaded but its device files {} do not exist: they are made \
         by nvidia-modprobe (run `nvidia-smi` once, or `nvidia-modprobe -c <minor>`), by \
         nvidia-persistenced or by udev rules; a spec naming them would make every GPU \
         container fail to start",
        .0.join(", ")
    )]
    NoDeviceFiles(Vec<String>),
    #[error(
        "no library of the running driver {version} (lib*.so.{version}) in {}: set \
         library_dirs to the folder where the driver's user-space libraries are installed \
         (after a driver upgrade whose kernel module is not loaded yet, reboot first)",
        dirs.join(", ")
    )]
    NoLibraries { version: String, dirs: Vec<String> },
    #[error("root {0} is not a directory: it must be the filesystem to inspect, / on a node")]
    RootNotADirectory(PathBuf),
    #[error("cannot write the CDI spec {0}: {1}; the file was left as it was")]
    Write(PathBuf, std::io::Error),
    #[error("cannot remove {0}: {1}")]
    Remove(PathBuf, std::io::Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::new(error.to_string())
    }
}

/// Writes (or removes) the spec; `changed` only when the file changed.
pub fn run(module: &mut Module, opts: Options) -> Result<Outcome, Failure> {
    if opts.state == "absent" {
        return remove(&opts.path, module.check_mode());
    }
    let found = discover_node(&opts)?;
    for warning in &found.warnings {
        module.warn(warning.clone());
    }
    let spec = spec::build(&found);
    let text = spec::to_yaml(&spec, &found);
    let written = fs::converge_file(
        &opts.path,
        text.as_bytes(),
        0o644,
        false,
        module.check_mode(),
    )
    .map_err(|e| Error::Write(opts.path.clone(), e))?;
    let mut outcome = report(&opts.path, &found, spec, written.changed);
    if let Some(diff) = written.diff {
        outcome = outcome.diff(diff);
    }
    Ok(outcome)
}

/// The GPUs and driver files under `root`, or why there is no spec to write.
fn discover_node(opts: &Options) -> Result<discover::Discovery, Error> {
    if !opts.root.is_dir() {
        return Err(Error::RootNotADirectory(opts.root.clone()));
    }
    let root = Root::new(&opts.root);
    discover::discover(&root, opts.library_dirs.as_deref().unwrap_or(&[]))
}

/// The result: a one-line summary, the CDI device names and the spec itself.
fn report(path: &Path, found: &discover::Discovery, spec: Value, changed: bool) -> Outcome {
    let devices: Vec<String> = spec["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["name"].as_str())
        .map(|name| format!("{}={name}", spec::KIND))
        .collect();
    let mounts = spec["containerEdits"]["mounts"]
        .as_array()
        .map_or(0, Vec::len);
    Outcome::new(changed)
        .msg(format!(
            "{} {}: {} GPU(s), driver {}, {} device files, {mounts} files mounted",
            if changed { "wrote" } else { "unchanged" },
            path.display(),
            found.gpus.len(),
            found.driver_version,
            found.control_devices.len() + found.gpus.len(),
        ))
        .value("path", path.to_string_lossy().into_owned())
        .value("cdi_version", spec::CDI_VERSION)
        .value("driver_version", found.driver_version.clone())
        .value("devices", devices)
        .value("spec", spec)
}

fn remove(path: &Path, check_mode: bool) -> Result<Outcome, Failure> {
    let before = fs::read_optional(path).map_err(|e| Error::Read(path.display().to_string(), e))?;
    let Some(before) = before else {
        return Ok(Outcome::new(false).msg(format!("{} is absent", path.display())));
    };
    if !check_mode {
        std::fs::remove_file(path).map_err(|e| Error::Remove(path.to_path_buf(), e))?;
    }
    let name = path.to_string_lossy();
    Ok(Outcome::new(true)
        .msg(format!("removed {name}"))
        .value("path", name.as_ref())
        .diff(Diff {
            before: String::from_utf8_lossy(&before).into_owned(),
            after: String::new(),
            before_header: name.to_string(),
            after_header: format!("{name} (absent)"),
        }))
}
