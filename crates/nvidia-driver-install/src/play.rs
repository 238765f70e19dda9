//! What the role `install_os_package` shows and decides around the install,
//! computed here so that its task files only look up variables and map
//! results to messages:
//!
//! - `state: planned`, before anything is fetched: whether the installer is
//!   needed at all (the same rule as the install's first step), the settings
//!   that stop the node first (no checksum where one is required), and the
//!   line that says what will happen;
//! - `stop_msg`, on a result of a real run that asks for a reboot the play
//!   will not make: why this node stops and how to go on.
//!
//! The messages name the role's variables (`gpu_driver_*`): they are the
//! role's messages, and the options that produce them exist for the role.

use super::{installed_version, Options, Request};
use ansible_module::{Failure, Outcome};
use node_probe::Root;
use nvidia_driver::version::{self, Installed};
use nvidia_driver::System;
use std::path::Path;

/// `state: planned`: whether this node needs the installer, and what will
/// happen; fails when a checksum is required and none is set.
pub(crate) fn plan_fetch(opts: &Options, sys: &dyn System) -> Result<Outcome, Failure> {
    let req = Request::new(opts)?;
    let before = version::installed(&Root::new(&opts.root), sys);
    let needed = opts.force || !req.is_satisfied_by(before.as_ref());
    let installer = opts
        .installer
        .as_deref()
        .unwrap_or(Path::new("the installer"));
    let file = installer
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    if needed && req.checksum.is_none() && opts.checksum_required {
        return Err(Failure::new(format!(
            "No checksum is set for {file}, which would run as root: set gpu_driver_checksum: \
             \"sha256:<its sha256sum>\" (or gpu_driver_checksums: {{{file}: \"sha256:...\"}}), or \
             set gpu_driver_checksum_required: false to install it unverified."
        )));
    }
    let msg = if needed {
        install_line(opts, &req, before.as_ref(), installer)
    } else {
        format!(
            "NVIDIA driver {} is loaded already: nothing to download or install.",
            req.version
        )
    };
    Ok(Outcome::new(false).msg(msg).value("needed", needed).value(
        "installed_version_before",
        installed_version(before.as_ref()),
    ))
}

/// "…; installing V with PATH, <where it comes from>." and a warning when
/// nothing verifies it.
fn install_line(
    opts: &Options,
    req: &Request,
    before: Option<&Installed>,
    installer: &Path,
) -> String {
    let loaded = match before {
        Some(b) => format!("NVIDIA driver {} is loaded", b.version),
        None => "No NVIDIA driver is loaded".to_string(),
    };
    let source = match (&opts.installer_url, &opts.installer_src) {
        (Some(url), _) => format!("downloaded from {url}"),
        (None, Some(src)) => format!("copied from {src} on the controller"),
        (None, None) => "which must be on the node already (no gpu_driver_repo_url, \
                         _installer_url or _installer_src is set)"
            .to_string(),
    };
    let verified = if req.checksum.is_some() {
        "."
    } else {
        ". WARNING: no checksum is set for it (gpu_driver_checksum or gpu_driver_checksums), so \
         the installer, which runs as root, is NOT verified (gpu_driver_checksum_required: false)."
    };
    format!(
        "{loaded}; installing {} with {}, {source}{verified}",
        req.version,
        installer.display()
    )
}

/// Adds `stop_msg` to a result that asks for a reboot the play does not
/// make now: the play was not allowed to reboot (`reboot_by_play` false),
/// or this run follows its reboot (`rebooted`) and still asks. Check mode
/// stops no node: it changed nothing, and its result already says that a
/// real run would ask for the reboot.
pub(crate) fn with_stop_message(outcome: Outcome, opts: &Options, check_mode: bool) -> Outcome {
    let asks = outcome.values.get("reboot_required") == Some(&true.into()) && !check_mode;
    let (Some(host), true) = (&opts.play_host, asks) else {
        return outcome;
    };
    let msg = outcome
        .msg
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_string();
    let stop = if opts.rebooted {
        format!(
            "{host} was rebooted, but the driver still asks for a reboot: {msg}. Look at the node \
             (lsmod | grep -e nouveau -e nvidia; is nouveau in its initramfs?), then run the \
             playbook again."
        )
    } else if !opts.reboot_by_play {
        format!(
            "{msg}. {host} stops here (gpu_driver_reboot is false); the other nodes go on. After \
             the reboot, run the playbook for it again (-l {host} -e install_gpu_driver=true), or \
             let Ansible reboot it: -e gpu_driver_reboot=true."
        )
    } else {
        return outcome;
    };
    outcome.value("stop_msg", stop)
}
