//! The `nvidia_driver_install` module: installs the NVIDIA driver from
//! NVIDIA's `.run` installer kept on the node, the way air-gapped sites do.
//!
//! One run does one of four things, decided in this order:
//! 1. the requested version is installed already: nothing (not even the
//!    checksum), `changed: false`;
//! 2. a pre-flight check fails: nothing is written or run, and every failed
//!    check is reported with its fix;
//! 3. nouveau is loaded: it is blacklisted and the initramfs rebuilt, and the
//!    result asks for a reboot; the installer runs on the next run;
//! 4. otherwise the installer runs, and the loaded driver is verified.
//!
//! Steps 2 to 4 hold a per-node lock, so two runs never start two installers;
//! the second waits, then finds the version installed and does nothing. The
//! installer inherits the lock and runs in a process group of its own, so a
//! killed module (a dropped SSH session) leaves the lock held until the
//! installer ends; `installer_timeout` kills the group of a hung installer.
//!
//! The installer that runs is a private copy, hashed as it is made
//! ([`nvidia_driver::stage`]): the bytes checked against `checksum` are the
//! bytes that run.

use ansible_module::{
    fs, Arg, DefaultValue, Failure, Module, ModuleSpec, Outcome, RequiredBy, RequiredIf,
};
use node_probe::gpu::{self, Detection};
use node_probe::kernel::ModuleType;
use node_probe::{os, Root};
use nvidia_driver::checksum::Checksum;
use nvidia_driver::installer::{self, Invocation};
use nvidia_driver::module_type::{self, Decision, GpuModel, Requested};
use nvidia_driver::preflight::{self, Check};
use nvidia_driver::version::{self, DriverVersion, Installed};
use nvidia_driver::{lock, nouveau, stage, Host, System};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const SPEC: ModuleSpec = ModuleSpec {
    name: "nvidia_driver_install",
    supports_check_mode: true,
    args: &[
        Arg::str("version").required(),
        Arg::path("installer"),
        Arg::str("checksum"),
        Arg::str("kernel_module_type")
            .default_str("auto")
            .choices(&["auto", "open", "proprietary"]),
        Arg::bool("dkms").default_bool(true),
        Arg::bool("disable_nouveau").default_bool(true),
        Arg::bool("rebuild_initramfs").default_bool(true),
        Arg::path("module_signing_key"),
        Arg::path("module_signing_cert"),
        Arg::path("kernel_source_path"),
        Arg::list("extra_args").default(DefaultValue::EmptyList),
        Arg::bool("force").default_bool(false),
        Arg::path("root").default_str("/"),
        Arg::path("log_file").default_str(installer::DEFAULT_LOG_FILE),
        Arg::int("min_free_mb").default_int(1024),
        Arg::path("lock_path").default_str(lock::DEFAULT_LOCK_PATH),
        Arg::int("lock_timeout").default_int(600),
        Arg::int("installer_timeout").default_int(DEFAULT_INSTALLER_TIMEOUT),
        Arg::str("state")
            .default_str("installed")
            .choices(&["installed", "planned"]),
        Arg::str("installer_url"),
        Arg::str("installer_src"),
        Arg::bool("checksum_required").default_bool(false),
        Arg::str("play_host"),
        Arg::bool("reboot_by_play").default_bool(false),
        Arg::bool("rebooted").default_bool(false),
    ],
    // One source of the installer: a URL or a file on the controller.
    mutually_exclusive: &[&["installer_url", "installer_src"]],
    // A module signed with a key needs its certificate, and the reverse.
    required_together: &[&["module_signing_key", "module_signing_cert"]],
    // Planning says where the installer goes and whether it must be fetched.
    required_if: &[RequiredIf::str("state", "planned", &["installer"])],
    // Where the installer is fetched from says nothing without where it goes.
    required_by: &[
        RequiredBy {
            option: "installer_url",
            requires: &["installer"],
        },
        RequiredBy {
            option: "installer_src",
            requires: &["installer"],
        },
    ],
    ..ModuleSpec::BASE
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The full driver version, `580.95.05`.
    pub version: String,
    /// The `.run` installer on the node; needed unless the version is installed.
    pub installer: Option<PathBuf>,
    /// `sha256:<hex>` of the installer.
    pub checksum: Option<String>,
    pub kernel_module_type: String,
    pub dkms: bool,
    pub disable_nouveau: bool,
    pub rebuild_initramfs: bool,
    pub module_signing_key: Option<PathBuf>,
    pub module_signing_cert: Option<PathBuf>,
    /// Passed as `--kernel-source-path`; the headers check looks there.
    pub kernel_source_path: Option<PathBuf>,
    /// Appended to the installer's command line as they are.
    pub extra_args: Vec<String>,
    /// Install even when the version is installed already.
    pub force: bool,
    /// Where the node's files are read: `/` on a node.
    pub root: PathBuf,
    /// The installer's log (a node path), read back when it fails.
    pub log_file: PathBuf,
    pub min_free_mb: i64,
    /// A node path, under `root`.
    pub lock_path: PathBuf,
    /// Seconds to wait for another run; 0 refuses at once.
    pub lock_timeout: i64,
    /// Seconds the installer may run before its process group is killed.
    pub installer_timeout: i64,
    /// `installed` (install, the default) or `planned` (only decide whether
    /// the installer is needed: [`play::plan_fetch`]).
    pub state: String,
    /// Where the play fetches the installer from before this module runs: a
    /// URL, or a file on the controller. In check mode the installer is not
    /// there yet: its absence then is no failure, and `planned` says it
    /// would be fetched.
    pub installer_url: Option<String>,
    pub installer_src: Option<String>,
    /// `state: planned` fails when the installer is needed and no checksum is set.
    pub checksum_required: bool,
    /// The node's name in the play: a result asking for a reboot then carries
    /// `stop_msg` ([`play::with_stop_message`]).
    pub play_host: Option<String>,
    /// The play reboots the node when the result asks for it.
    pub reboot_by_play: bool,
    /// This run follows the play's reboot of the node.
    pub rebooted: bool,
}

impl Options {
    /// Where the play fetches the installer from, if it does.
    fn fetch_from(&self) -> Option<&str> {
        self.installer_url
            .as_deref()
            .or(self.installer_src.as_deref())
    }
}

/// A DKMS build for one kernel takes minutes; half an hour is a hung installer.
const DEFAULT_INSTALLER_TIMEOUT: i64 = 1800;

/// The most of the installer's log that is read (its head; real logs are < 1 MiB).
const LOG_READ_LIMIT: u64 = 64 << 20;

/// How many log lines a failure carries.
const LOG_TAIL_LINES: usize = 40;

/// The module's entry point, on the real machine.
pub fn run(module: &mut Module, opts: Options) -> Result<Outcome, Failure> {
    if opts.state == "planned" {
        return play::plan_fetch(&opts, &Host);
    }
    let check_mode = module.check_mode();
    install(module, &opts, &Host).map(|outcome| play::with_stop_message(outcome, &opts, check_mode))
}

/// The options after the checks the argument spec cannot express.
struct Request {
    version: DriverVersion,
    requested: Requested,
    checksum: Option<Checksum>,
    min_free_mb: u64,
    lock_timeout: Duration,
    installer_timeout: Duration,
}

impl Request {
    fn new(opts: &Options) -> Result<Request, Failure> {
        let version = DriverVersion::parse(&opts.version).map_err(failure_of)?;
        let requested = Requested::parse(&opts.kernel_module_type).map_err(failure_of)?;
        let checksum = opts
            .checksum
            .as_deref()
            .map(Checksum::parse)
            .transpose()
            .map_err(failure_of)?;
        for (name, path) in [
            ("installer", &opts.installer),
            ("module_signing_key", &opts.module_signing_key),
            ("module_signing_cert", &opts.module_signing_cert),
            ("kernel_source_path", &opts.kernel_source_path),
        ] {
            if let Some(path) = path.as_ref().filter(|p| !p.is_absolute()) {
                return Err(Failure::new(format!(
                    "{name} must be an absolute path on the node, not {}",
                    path.display()
                )));
            }
        }
        check_node_paths(opts)?;
        let non_negative = |name: &str, value: i64| {
            u64::try_from(value)
                .map_err(|_| Failure::new(format!("{name} must be 0 or more, not {value}")))
        };
        if opts.installer_timeout < 1 {
            return Err(Failure::new(format!(
                "installer_timeout must be 1 or more seconds, not {}",
                opts.installer_timeout
            )));
        }
        Ok(Request {
            version,
            requested,
            checksum,
            min_free_mb: non_negative("min_free_mb", opts.min_free_mb)?,
            lock_timeout: Duration::from_secs(non_negative("lock_timeout", opts.lock_timeout)?),
            installer_timeout: Duration::from_secs(opts.installer_timeout as u64),
        })
    }

    /// Whether `installed` is what was asked for. An explicit module type
    /// must match the loaded one too; `auto` accepts either.
    fn is_satisfied_by(&self, installed: Option<&Installed>) -> bool {
        let Some(installed) = installed else {
            return false;
        };
        let wanted = match self.requested {
            Requested::Auto => None,
            Requested::Open => Some(ModuleType::Open),
            Requested::Proprietary => Some(ModuleType::Proprietary),
        };
        installed.version == self.version.as_str()
            && match (wanted, installed.module_type) {
                (Some(wanted), Some(loaded)) => wanted == loaded,
                _ => true,
            }
    }
}

/// `root` must be an existing folder (it is never created), and `lock_path`
/// and `log_file` absolute node paths that stay beneath it (no `..`).
fn check_node_paths(opts: &Options) -> Result<(), Failure> {
    if !opts.root.is_absolute() {
        return Err(Failure::new(format!(
            "root must be an absolute path, not {}",
            opts.root.display()
        )));
    }
    if !opts.root.is_dir() {
        return Err(Failure::new(format!(
            "root {} is not an existing folder: it must be the node's filesystem, / on a node \
             (it is never created)",
            opts.root.display()
        )));
    }
    for (name, path) in [("lock_path", &opts.lock_path), ("log_file", &opts.log_file)] {
        let escapes = path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if !path.is_absolute() || escapes || path.parent().is_none() {
            return Err(Failure::new(format!(
                "{name} must be an absolute path of a file on the node, without `..`, not {}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The whole run, over any machine: decide the version → lock → plan →
/// validate (pre-flight) → commit (retire nouveau, or run the installer) →
/// report. Each step is a function below; this one only orders them.
pub fn install(module: &mut Module, opts: &Options, sys: &dyn System) -> Result<Outcome, Failure> {
    let req = Request::new(opts)?;
    let root = Root::new(&opts.root);
    let check_mode = module.check_mode();

    let before = version::installed(&root, sys);
    if !opts.force && req.is_satisfied_by(before.as_ref()) {
        return Ok(already_installed(&req, before.as_ref(), None));
    }
    let mut lock = take_lock(module, opts, &req, &root, sys, before.as_ref())?;
    // Another run may have installed the version while this one waited (or
    // between the first look and the lock): look again under the lock.
    let before = match &lock {
        Some(_) => version::installed(&root, sys),
        None => before,
    };
    if !opts.force && req.is_satisfied_by(before.as_ref()) {
        let note = match &lock {
            Some(lock) if !lock.waited.is_zero() => {
                "another run installed it while this one waited for the lock"
            }
            _ => "another run installed it meanwhile",
        };
        return Ok(already_installed(&req, before.as_ref(), Some(note)));
    }

    let detection = gpu::detect(&root);
    warn_before_install(module, &detection, before.as_ref());
    let staging = (!check_mode).then(|| staging_parent(sys));
    let plan = plan(opts, &req, &root, sys, &detection, staging.as_deref());
    let values = plan.values(&req.version, before.as_ref());

    if let Some(msg) = preflight::summary(&plan.checks) {
        return Err(failure(msg, values));
    }
    if plan.retire_nouveau {
        return retire_nouveau(opts, &req, &root, sys, check_mode, values);
    }
    let argv = plan
        .command
        .clone()
        .expect("pre-flight passed, so the installer and the module type are known");
    match lock.as_mut() {
        None => Ok(would_install(opts, &req, &plan, argv, values)),
        Some(lock) => run_installer(opts, &req, &root, sys, &plan, argv, values, lock),
    }
}

/// A real run takes the per-node lock (waiting up to `lock_timeout`) and
/// clears copies left by killed runs; check mode takes nothing and only warns
/// when another run holds it. `None` in check mode.
fn take_lock(
    module: &mut Module,
    opts: &Options,
    req: &Request,
    root: &Root,
    sys: &dyn System,
    before: Option<&Installed>,
) -> Result<Option<lock::InstallLock>, Failure> {
    let lock_path = root.path(&opts.lock_path.to_string_lossy());
    if module.check_mode() {
        if let Some(holder) = lock::holder(&lock_path) {
            module.warn(format!(
                "another driver installation{} holds {} now: a real run would wait for it",
                holder
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default(),
                lock_path.display()
            ));
        }
        return Ok(None);
    }
    let held = lock::acquire(&lock_path, req.lock_timeout)
        .map_err(|e| failure_of(e).value("installed_version_before", installed_version(before)))?;
    // No installer runs now: copies left by killed runs are unused.
    stage::remove_stale(&staging_parent(sys));
    Ok(Some(held))
}

/// Warnings that concern the whole install: what detection could not read,
/// and a loaded driver the installer must unload.
fn warn_before_install(module: &mut Module, detection: &Detection, before: Option<&Installed>) {
    for warning in &detection.warnings {
        module.warn(warning.clone());
    }
    if let Some(loaded) = before.filter(|b| b.source != version::VersionSource::NvidiaSmi) {
        module.warn(format!(
            "driver {} is loaded now: the installer unloads it first, which fails while \
             programs use the GPUs (nvidia-persistenced, nvidia-fabricmanager, DCGM, pods): \
             stop them or drain the node before the upgrade",
            loaded.version
        ));
    }
}

/// Check mode's report: what a real run would run (and fetch first).
fn would_install(
    opts: &Options,
    req: &Request,
    plan: &Plan,
    argv: Vec<String>,
    values: Map<String, Value>,
) -> Outcome {
    let msg = format!(
        "check mode: would install NVIDIA driver {} ({} kernel modules) with `{}`",
        req.version,
        plan.module_type_name(),
        argv.join(" ")
    );
    let planned = match fetch_first(opts, plan) {
        Some(fetch) => vec![fetch, format!("would run: {}", argv.join(" "))],
        None => vec![msg.clone()],
    };
    with_values(Outcome::new(true).msg(msg), values)
        .value("commands", vec![argv])
        .value("planned", planned)
}

/// "would fetch …", when check mode found the installer missing and a real
/// run fetches it first (`installer_url` or `installer_src`).
fn fetch_first(opts: &Options, plan: &Plan) -> Option<String> {
    let from = plan.to_fetch.as_ref()?;
    let to = opts.installer.as_ref()?;
    Some(format!("would fetch {from} to {}", to.display()))
}

mod play;

#[cfg(test)]
mod flow_tests;

/// Where the installer's private copy is made.
fn staging_parent(sys: &dyn System) -> PathBuf {
    stage::parent_dir(sys.tmpdir().as_deref())
}

/// `changed: false`, with the facts of the installed driver.
fn already_installed(req: &Request, installed: Option<&Installed>, note: Option<&str>) -> Outcome {
    let installed = installed.expect("only called when a driver is installed");
    let mut msg = format!(
        "NVIDIA driver {} is installed already (read from {}): nothing to do",
        installed.version,
        installed.source.name()
    );
    if let Some(note) = note {
        msg.push_str("; ");
        msg.push_str(note);
    }
    Outcome::new(false)
        .msg(msg)
        .fact("nvidia_driver_version", installed.version.clone())
        .value("installed_version_before", installed.version.clone())
        .value("version", req.version.as_str())
        .value(
            "kernel_module_type",
            installed.module_type.map(|t| t.name()),
        )
        .value(
            "kernel_module_type_reason",
            "the requested version is installed already; the loaded module is kept",
        )
        .value("reboot_required", false)
        .value("preflight", Value::Array(Vec::new()))
        .value("command", Value::Null)
        .value("commands", Value::Array(Vec::new()))
}

/// What this run would do, and the checks it must pass first.
struct Plan {
    checks: Vec<Check>,
    decision: Result<Decision, nvidia_driver::Error>,
    retire_nouveau: bool,
    /// The installer's argv, when this run would start it.
    command: Option<Vec<String>>,
    /// The private copy of the installer that runs (real runs only).
    staged: Option<stage::Staged>,
    /// Check mode: where a real run fetches the missing installer from.
    to_fetch: Option<String>,
}

impl Plan {
    fn module_type_name(&self) -> &'static str {
        self.decision
            .as_ref()
            .map(|d| d.module_type.name())
            .unwrap_or("unknown")
    }

    /// The return values every result after planning carries.
    fn values(&self, version: &DriverVersion, before: Option<&Installed>) -> Map<String, Value> {
        let mut values = Map::new();
        values.insert("version".into(), version.as_str().into());
        values.insert("installed_version_before".into(), installed_version(before));
        values.insert(
            "kernel_module_type".into(),
            self.decision
                .as_ref()
                .map_or(Value::Null, |d| d.module_type.name().into()),
        );
        values.insert(
            "kernel_module_type_reason".into(),
            match &self.decision {
                Ok(d) => d.reason.clone(),
                Err(why) => why.to_string(),
            }
            .into(),
        );
        values.insert("preflight".into(), checks_json(&self.checks));
        values.insert(
            "command".into(),
            self.command.clone().map_or(Value::Null, Value::from),
        );
        values.insert("reboot_required".into(), false.into());
        if let Some(staged) = &self.staged {
            values.insert("installer_sha256".into(), staged.sha256.clone().into());
        }
        values
    }
}

/// Plans the run: the module type, the installer check (and its private
/// copy, on a real run), the node's checks, and the installer's command line.
fn plan(
    opts: &Options,
    req: &Request,
    root: &Root,
    sys: &dyn System,
    detection: &Detection,
    staging: Option<&Path>,
) -> Plan {
    let node_arch = std::env::consts::ARCH;
    let gpus: Vec<GpuModel> = detection
        .gpus
        .iter()
        .map(|g| GpuModel::new(&g.pci.address, g.pci.device))
        .collect();
    let decision = module_type::decide(req.requested, &req.version, &gpus, node_arch);
    let retire_nouveau = detection.nouveau_loaded && opts.disable_nouveau;

    let installer_check = preflight::installer(opts.installer.as_deref(), &req.version, node_arch);
    let to_fetch = opts
        .fetch_from()
        .map(str::to_string)
        .filter(|_| staging.is_none() && installer_is_missing(opts, &installer_check));
    let (mut checks, staged) = match &to_fetch {
        Some(from) => (
            vec![Check::pass(
                "installer",
                format!(
                    "{} is not on the node yet: a real run fetches it from {from} first",
                    opts.installer
                        .as_deref()
                        .unwrap_or(Path::new("the installer"))
                        .display()
                ),
            )],
            None,
        ),
        None => installer_checks(opts, req, installer_check, staging),
    };
    checks.push(preflight::kernel_module_type(&decision));
    checks.extend(node_checks(opts, req, root, sys, detection));

    let to_run = staged
        .as_ref()
        .map(stage::Staged::path)
        .or(opts.installer.as_deref());
    let command = match (to_run, &decision) {
        (Some(path), Ok(decision)) if !retire_nouveau => {
            Some(installer_argv(opts, req, path, decision.module_type))
        }
        _ => None,
    };
    Plan {
        checks,
        decision,
        retire_nouveau,
        command,
        staged,
        to_fetch,
    }
}

/// Whether the installer check failed only because the file is not there
/// (a wrong name stays a failure even when the file is to be fetched).
fn installer_is_missing(opts: &Options, check: &Check) -> bool {
    !check.ok && opts.installer.as_deref().is_some_and(|p| !p.exists())
}

/// The installer check, then its private copy (a real run, which hashes the
/// copy it will run) or the file itself (check mode) against `checksum`.
fn installer_checks(
    opts: &Options,
    req: &Request,
    installer_check: Check,
    staging: Option<&Path>,
) -> (Vec<Check>, Option<stage::Staged>) {
    let path = match (&opts.installer, installer_check.ok) {
        (Some(path), true) => path,
        _ => return (vec![installer_check], None),
    };
    let mut checks = vec![installer_check];
    let Some(parent) = staging else {
        if let Some(sum) = &req.checksum {
            checks.push(preflight::checksum(path, sum));
        }
        return (checks, None);
    };
    match stage::copy(path, parent) {
        Ok(copy) => {
            if let Some(sum) = &req.checksum {
                checks.push(preflight::checksum_of(path, Ok(copy.sha256.clone()), sum));
            }
            (checks, Some(copy))
        }
        Err(e) => {
            checks.push(Check::fail(
                "installer",
                format!(
                    "cannot copy {} into a private folder in {} to run it: {e} (set TMPDIR \
                     to a folder with room for it)",
                    path.display(),
                    parent.display()
                ),
            ));
            (checks, None)
        }
    }
}

/// The checks of the node itself: nouveau, the build tools, Secure Boot,
/// free space, and no other installer running.
fn node_checks(
    opts: &Options,
    req: &Request,
    root: &Root,
    sys: &dyn System,
    detection: &Detection,
) -> Vec<Check> {
    let family = os::os_release(root).and_then(|o| o.family());
    let mut checks = vec![preflight::nouveau(
        detection.nouveau_loaded,
        opts.disable_nouveau,
    )];
    if detection.nouveau_loaded && opts.disable_nouveau && opts.rebuild_initramfs {
        checks.push(preflight::initramfs_tool(sys));
    }
    let release = preflight::running_kernel_release(root);
    checks.push(preflight::kernel_headers(
        root,
        release.as_deref(),
        family,
        opts.kernel_source_path.as_deref(),
    ));
    checks.push(preflight::compiler(sys, family));
    checks.push(preflight::make(sys, family));
    if opts.dkms {
        checks.push(preflight::dkms(sys, family));
    }
    checks.push(preflight::secure_boot(root, signing(opts)));
    checks.push(preflight::free_space(
        root,
        sys,
        &preflight::space_paths(sys.tmpdir().as_deref()),
        req.min_free_mb,
    ));
    checks.push(preflight::no_other_installer(root));
    checks
}

/// The signing key and its certificate (the spec requires both or neither).
fn signing(opts: &Options) -> Option<(&Path, &Path)> {
    opts.module_signing_key
        .as_deref()
        .zip(opts.module_signing_cert.as_deref())
}

fn installer_argv(
    opts: &Options,
    req: &Request,
    installer: &Path,
    module_type: ModuleType,
) -> Vec<String> {
    installer::argv(&Invocation {
        installer,
        version: &req.version,
        module_type,
        dkms: opts.dkms,
        signing: signing(opts),
        kernel_source_path: opts.kernel_source_path.as_deref(),
        log_file: &opts.log_file,
        extra_args: &opts.extra_args,
    })
}

/// nouveau is loaded: blacklist it, rebuild the initramfs, ask for a reboot.
fn retire_nouveau(
    opts: &Options,
    req: &Request,
    root: &Root,
    sys: &dyn System,
    check_mode: bool,
    mut values: Map<String, Value>,
) -> Result<Outcome, Failure> {
    let path = root.path(nouveau::BLACKLIST_PATH);
    let mtime_before = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let file = fs::converge_file(
        &path,
        nouveau::BLACKLIST.as_bytes(),
        0o644,
        false,
        check_mode,
    )
    .map_err(|e| {
        failure(
            format!("cannot write {}: {e}", nouveau::BLACKLIST_PATH),
            values.clone(),
        )
    })?;
    let rebuild = opts.rebuild_initramfs
        && nouveau::initramfs_needs_rebuild(file.changed, mtime_before, nouveau::boot_time(root));
    let initramfs = rebuild.then(|| nouveau::initramfs_command(sys)).flatten();
    values.insert("reboot_required".into(), true.into());
    values.insert("blacklist_file".into(), nouveau::BLACKLIST_PATH.into());
    let commands: Vec<Vec<String>> = initramfs.iter().cloned().collect();
    values.insert("commands".into(), commands.into());
    if let (false, Some(argv)) = (check_mode, &initramfs) {
        rebuild_initramfs(sys, argv, file.changed, &values)?;
    }
    let changed = file.changed || initramfs.is_some();
    let msg = nouveau_message(req, check_mode, changed, initramfs.as_deref());
    let mut outcome = with_values(Outcome::new(changed).msg(msg.clone()), values);
    if check_mode {
        outcome = outcome.value("planned", planned_for_nouveau(opts, msg));
    }
    if let Some(diff) = file.diff {
        outcome = outcome.diff(diff);
    }
    Ok(outcome)
}

/// Runs the initramfs tool; a failure says the blacklist is written
/// (`blacklist_changed`) but nouveau would load again.
fn rebuild_initramfs(
    sys: &dyn System,
    argv: &[String],
    blacklist_changed: bool,
    values: &Map<String, Value>,
) -> Result<(), Failure> {
    let mut values = values.clone();
    let msg = match sys.run(argv) {
        Ok(out) if out.success() => return Ok(()),
        Ok(out) => {
            values.insert("rc".into(), out.status.into());
            values.insert("stdout_lines".into(), out.tail(LOG_TAIL_LINES).into());
            format!(
                "nouveau is blacklisted in {}, but `{}` failed ({}): {}; nouveau would load \
                 again from the old initramfs. Fix the initramfs tool and run this again",
                nouveau::BLACKLIST_PATH,
                argv.join(" "),
                exit_status(out.status),
                out.tail(3).join(" / ")
            )
        }
        Err(e) => format!("cannot run `{}`: {e}", argv.join(" ")),
    };
    values.insert("changed".into(), blacklist_changed.into());
    Err(failure(msg, values))
}

/// What retiring nouveau did (or would do), and what the user does next.
fn nouveau_message(
    req: &Request,
    check_mode: bool,
    changed: bool,
    initramfs: Option<&[String]>,
) -> String {
    let rebuilt = initramfs
        .map(|argv| format!(" and rebuilt the initramfs (`{}`)", argv.join(" ")))
        .unwrap_or_default();
    match (check_mode, changed) {
        (true, true) => format!(
            "check mode: nouveau is loaded; would blacklist it in {}{}; the node would then need \
             a reboot before driver {} can be installed",
            nouveau::BLACKLIST_PATH,
            rebuilt.replace("rebuilt", "rebuild"),
            req.version
        ),
        (_, true) => format!(
            "nouveau is loaded, so driver {} cannot be installed yet: blacklisted it in {}{}. \
             Reboot the node, then run this again to install the driver",
            req.version,
            nouveau::BLACKLIST_PATH,
            rebuilt
        ),
        (_, false) => format!(
            "nouveau is still loaded: it is blacklisted in {} and the initramfs was rebuilt \
             after the last boot. Reboot the node, then run this again to install driver {}",
            nouveau::BLACKLIST_PATH,
            req.version
        ),
    }
}

/// Check mode's lines for a nouveau node: the fetch a real run makes first,
/// then what happens to nouveau (the installer waits for the reboot).
fn planned_for_nouveau(opts: &Options, msg: String) -> Vec<String> {
    match (opts.fetch_from(), &opts.installer) {
        (Some(from), Some(to)) if !to.exists() => vec![
            format!("would fetch {from} to {}", to.display()),
            preflight::nouveau(true, true).message,
        ],
        _ => vec![msg],
    }
}

/// Runs the installer, then checks that the new driver is the one loaded.
#[allow(clippy::too_many_arguments)]
fn run_installer(
    opts: &Options,
    req: &Request,
    root: &Root,
    sys: &dyn System,
    plan: &Plan,
    argv: Vec<String>,
    mut values: Map<String, Value>,
    lock: &mut lock::InstallLock,
) -> Result<Outcome, Failure> {
    values.insert("commands".into(), vec![argv.clone()].into());
    let log_path = root.path(&opts.log_file.to_string_lossy());
    let log_before = log_stamp(&log_path);
    let out = start_installer(opts, req, sys, &argv, &values, lock)?;
    if !out.success() {
        let fresh = log_stamp(&log_path) != log_before;
        return Err(installer_failed(opts, root, &out, fresh, values));
    }
    let module_type = plan.module_type_name();
    if let Some(why) = not_loaded(req, root) {
        values.insert("reboot_required".into(), true.into());
        return Ok(with_values(
            Outcome::new(true).msg(format!(
                "installed NVIDIA driver {} ({module_type} kernel modules), but {why}: reboot \
                 the node to load it",
                req.version
            )),
            values,
        ));
    }
    check_nvidia_smi(req, sys, argv, &mut values)?;
    let dkms = if opts.dkms {
        ", registered with DKMS"
    } else {
        ""
    };
    Ok(with_values(
        Outcome::new(true)
            .msg(format!(
                "installed NVIDIA driver {} ({module_type} kernel modules{dkms})",
                req.version
            ))
            .fact("nvidia_driver_version", req.version.as_str()),
        values,
    ))
}

/// Runs the installer in its process group, the lock passed on to it. An
/// error that ends it (a timeout) or keeps it from starting is the failure.
fn start_installer(
    opts: &Options,
    req: &Request,
    sys: &dyn System,
    argv: &[String],
    values: &Map<String, Value>,
    lock: &mut lock::InstallLock,
) -> Result<nvidia_driver::Output, Failure> {
    let lock_file = lock.file().try_clone().map_err(|e| {
        failure(
            format!("cannot pass the install lock on: {e}"),
            values.clone(),
        )
    })?;
    let ran = sys.run_guarded(argv, &lock_file, req.installer_timeout, &mut |pid| {
        lock.record_holder(pid)
    });
    ran.map_err(|e| {
        // A killed installer may have changed the node.
        let timed_out = e.kind() == std::io::ErrorKind::TimedOut;
        let msg = if timed_out {
            format!(
                "the NVIDIA installer did not finish within installer_timeout ({} s): {e}. The \
                 driver may be half installed: read {}, then run this again (the installer \
                 replaces a partial installation) or raise installer_timeout",
                req.installer_timeout.as_secs(),
                opts.log_file.display()
            )
        } else {
            format!("cannot start the installer (`{}`): {e}", argv.join(" "))
        };
        failure(msg, values.clone()).value("changed", timed_out)
    })
}

/// Why the requested driver is not the loaded one after the install, if it is not.
fn not_loaded(req: &Request, root: &Root) -> Option<String> {
    match version::loaded(root) {
        Some(a) if a.version == req.version.as_str() => None,
        Some(a) => Some(format!(
            "the kernel still runs driver {} (the old module could not be replaced while \
             loaded)",
            a.version
        )),
        None => Some("no NVIDIA kernel module is loaded".to_string()),
    }
}

/// Asks `nvidia-smi`, when it is there, whether the loaded driver works; its
/// query joins `commands` after the installer's `argv`.
fn check_nvidia_smi(
    req: &Request,
    sys: &dyn System,
    argv: Vec<String>,
    values: &mut Map<String, Value>,
) -> Result<(), Failure> {
    let Some(smi) = sys.find_program("nvidia-smi") else {
        return Ok(());
    };
    let query = version::nvidia_smi_query(&smi.to_string_lossy());
    values.insert("commands".into(), vec![argv, query.clone()].into());
    let problem = match sys.run(&query) {
        Ok(o) if o.success() => return Ok(()),
        Ok(o) => format!("{}: {}", exit_status(o.status), o.tail(5).join(" / ")),
        Err(e) => e.to_string(),
    };
    Err(failure(
        format!(
            "NVIDIA driver {} is installed and loaded, but nvidia-smi fails ({problem}): check \
             `dmesg` for NVRM errors (a GPU that fell off the bus, or firmware that does not \
             match the driver)",
            req.version
        ),
        values.clone(),
    )
    .value("changed", true))
}

/// The failure of the installer: its exit status, the first error it logged,
/// and the tail of its log (or of its output, when it wrote no log).
fn installer_failed(
    opts: &Options,
    root: &Root,
    out: &nvidia_driver::Output,
    log_is_fresh: bool,
    mut values: Map<String, Value>,
) -> Failure {
    let log_node_path = opts.log_file.to_string_lossy().into_owned();
    let log_tail = if log_is_fresh {
        log_tail(&root.path(&log_node_path))
    } else {
        Vec::new()
    };
    let output = out.tail(LOG_TAIL_LINES);
    let first_error = log_tail
        .iter()
        .chain(output.iter())
        .find(|l| l.contains("ERROR:") || l.contains("unrecognized option"))
        .map(|l| l.trim().to_string());
    let mut msg = format!("the NVIDIA installer failed ({})", exit_status(out.status));
    if let Some(error) = &first_error {
        msg.push_str(&format!(": {}", error.trim_end_matches('.')));
    }
    if log_tail.is_empty() {
        msg.push_str(&format!(
            ". It wrote no log to {log_node_path}; its last output:\n{}",
            output.join("\n")
        ));
    } else {
        msg.push_str(&format!(
            ". Last lines of {log_node_path}:\n{}",
            log_tail.join("\n")
        ));
    }
    values.insert("rc".into(), out.status.into());
    values.insert("installer_log_tail".into(), log_tail.into());
    values.insert("installer_output".into(), output.into());
    failure(msg, values)
}

/// Size and modification time of the log, to tell whether the installer
/// wrote it: a log left by an earlier installation would mislead.
fn log_stamp(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// The last lines of the installer's log.
fn log_tail(path: &Path) -> Vec<String> {
    // Non-blocking and bounded: a FIFO in its place is no log, a huge one is cut.
    use std::io::Read;
    let mut bytes = Vec::new();
    let read =
        stage::open_regular(path).and_then(|f| f.take(LOG_READ_LIMIT).read_to_end(&mut bytes));
    if read.is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

fn exit_status(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    }
}

fn installed_version(installed: Option<&Installed>) -> Value {
    installed.map_or(Value::Null, |i| i.version.clone().into())
}

fn checks_json(checks: &[Check]) -> Value {
    checks
        .iter()
        .map(|c| json!({"name": c.name, "ok": c.ok, "message": c.message}))
        .collect()
}

/// The one place where this crate's error becomes the module's failure; a
/// lock error carries the lock's path.
fn failure_of(error: nvidia_driver::Error) -> Failure {
    let path = error.path().map(|p| p.to_string_lossy().into_owned());
    let failure = Failure::new(error.to_string());
    match path {
        Some(path) => failure.value("lock_path", path),
        None => failure,
    }
}

fn failure(msg: String, values: Map<String, Value>) -> Failure {
    let mut f = Failure::new(msg);
    f.values = values;
    f
}

fn with_values(mut outcome: Outcome, values: Map<String, Value>) -> Outcome {
    outcome.values.extend(values);
    outcome
}
