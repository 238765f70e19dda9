//! The `containerd_runtime_config` module: containerd's CRI runtimes for
//! Kubernetes (the NVIDIA runtime, or runc alone), configured so that
//! containerd is never left broken.
//!
//! The config logic is `containerd_config`'s; this crate adds the node: which
//! containerd is installed (it picks the config version and validates the
//! candidate), whether the runtime binary exists, and the atomic write with a
//! backup. Nothing is committed until containerd itself has parsed the
//! candidate (`containerd --config CANDIDATE config dump`) and its effective
//! configuration says what was asked.
//!
//! Every run also reports the configuration as it was before the run
//! (`current`, see [`current`]); `state: inspect` only reports it.

mod current;
mod error;
mod node;
mod paths;
pub mod problems;

pub use error::Error;

use ansible_module::fs::{read_optional, StagedFile};
use ansible_module::{Arg, DefaultValue, Diff, Failure, Module, ModuleSpec, Outcome, RequiredIf};
use containerd_config::{self as config, ConfigVersion, Declared, RelativeImports, Wanted};
use node::Candidate;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub const SPEC: ModuleSpec = ModuleSpec {
    name: "containerd_runtime_config",
    supports_check_mode: true,
    args: &[
        Arg::path("path").default_str("/etc/containerd/config.toml"),
        Arg::str("state")
            .default_str("configure")
            .choices(&["configure", "inspect"]),
        Arg::str("mode")
            .default_str("template")
            .choices(&["template", "merge", "drop_in"]),
        // Required with state: configure (required_if below); optional with
        // inspect, which judges only when it is given.
        Arg::bool("nvidia_runtime"),
        Arg::bool("set_as_default").default_bool(true),
        Arg::str("runtime_name").default_str("nvidia"),
        Arg::path("runtime_path").default_str("/usr/bin/nvidia-container-runtime"),
        Arg::bool("systemd_cgroup").default_bool(true),
        Arg::bool("enable_cdi"),
        Arg::str("config_version")
            .default_str("auto")
            .choices(&["auto", "2", "3"]),
        Arg::str("template"),
        Arg::dict("template_vars").default(DefaultValue::EmptyDict),
        Arg::path("drop_in_path").default_str("/etc/containerd/conf.d/99-nvidia.toml"),
        Arg::bool("require_runtime_binary").default_bool(true),
        Arg::bool("validate"),
        Arg::path("containerd_path"),
        Arg::bool("backup").default_bool(true),
    ],
    // template and template_vars are only warned about outside mode:
    // template (Ansible's relationships cannot say "only with"), in
    // settle_options.
    required_if: &[RequiredIf::str("state", "configure", &["nvidia_runtime"])],
    ..ModuleSpec::BASE
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Write the configuration the options describe.
    Configure,
    /// Report the current configuration (`current`); write nothing.
    Inspect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A whole config rendered from a Jinja template.
    Template,
    /// The existing config edited in place, comments and all.
    Merge,
    /// A separate file, imported by the main config.
    DropIn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum VersionChoice {
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "2")]
    V2,
    #[serde(rename = "3")]
    V3,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// containerd's main config file.
    pub path: PathBuf,
    pub state: State,
    pub mode: Mode,
    /// Configure the NVIDIA runtime (true) or the standard runc runtime
    /// only; required with `state: configure`.
    pub nvidia_runtime: Option<bool>,
    /// Make the NVIDIA runtime containerd's default (otherwise runc is).
    pub set_as_default: bool,
    pub runtime_name: String,
    pub runtime_path: String,
    /// `SystemdCgroup` on every runtime configured.
    pub systemd_cgroup: bool,
    /// The CRI plugin's `enable_cdi`; `None` leaves it as it is.
    pub enable_cdi: Option<bool>,
    pub config_version: VersionChoice,
    /// Template mode: the template's text; `None` for the built-in one.
    pub template: Option<String>,
    /// Template mode: extra template variables.
    pub template_vars: Map<String, Value>,
    /// Drop-in mode: the file the main config imports.
    pub drop_in_path: PathBuf,
    /// Refuse to configure an NVIDIA runtime whose binary is missing.
    pub require_runtime_binary: bool,
    /// Check the candidate with `containerd config dump` before it replaces
    /// the real file; `None` (auto) when a containerd binary is found.
    pub validate: Option<bool>,
    /// The containerd binary; `None` to search `$PATH` and the usual places.
    pub containerd_path: Option<PathBuf>,
    /// Keep the previous file as `<path>.<pid>.<date>@<time>~`.
    pub backup: bool,
}

/// The tag of this module's temporaries (`.containerd-runtime-config.<pid>.
/// <unique>.tmp`). containerd globs its imports with Go's `filepath.Match`,
/// where `*` also matches names that start with a dot: with `imports =
/// ["conf.d/*"]`, a temporary or a backup beside the drop-in is loaded as
/// configuration. So every temporary and backup lives in the main config's
/// folder (`/etc/containerd`, which no import glob sensibly covers: it would
/// import config.toml itself), on the same file system as its target.
const TMP_TAG: &str = "containerd-runtime-config";

/// One file the run produces, in the order they are committed.
struct Planned {
    path: PathBuf,
    before: Option<Vec<u8>>,
    after: String,
}

impl Planned {
    fn changed(&self) -> bool {
        self.before.as_deref() != Some(self.after.as_bytes())
    }
}

/// What the run decided before planning: the runtime setup, the containerd
/// on the node, the main file as it is, and the config version to write.
struct Decided {
    wanted: Wanted,
    containerd: Option<PathBuf>,
    containerd_version: Option<config::ContainerdVersion>,
    version: ConfigVersion,
    main_before: Option<Vec<u8>>,
    /// `main_before` as text (checked to be UTF-8).
    main_text: Option<String>,
    /// The main config's folder: temporaries and backups go there.
    main_dir: PathBuf,
}

impl Decided {
    fn relative_imports(&self) -> RelativeImports<'_> {
        RelativeImports::of(self.containerd_version.as_ref(), &self.main_dir)
    }
}

/// What the run did, for the report.
struct Done {
    plan: Vec<Planned>,
    backups: Vec<Option<PathBuf>>,
    validated: bool,
    current: current::Current,
    notes: Vec<String>,
}

/// Configures containerd's runtimes as the options ask, or (`state:
/// inspect`) reports them.
pub fn run(module: &mut Module, opts: Options) -> Result<Outcome, Failure> {
    match opts.state {
        State::Inspect => inspect(module, &opts).map_err(Failure::from),
        State::Configure => configure(module, opts).map_err(Failure::from),
    }
}

/// decide → plan → validate → commit → report; nothing is written before
/// the validation passed, and nothing at all in check mode.
fn configure(module: &mut Module, mut opts: Options) -> Result<Outcome, Error> {
    let wanted = settle_options(module, &mut opts)?;
    let mut decided = decide(module, &opts, wanted)?;
    let mut notes = Vec::new();
    let plan = plan(&opts, &decided, &mut notes)?;
    let changed = plan.iter().any(Planned::changed);
    if let (Some(bin), true, None) = (&decided.containerd, changed, &decided.containerd_version) {
        decided.containerd_version = containerd_release(module, bin);
    }
    // Before anything is written, so that it says what the run found. From
    // the files: a `containerd config dump` of the old file here would be a
    // third containerd run on a change (state: inspect asks containerd).
    let current = current::inspect(&opts.path, None, decided.containerd_version.as_ref());
    check_version_is_read(&decided)?;
    let validator = pick_validator(module, &opts, &decided, changed)?;
    if !module.check_mode() {
        notes.extend(clean_stale(&opts, &decided.main_dir));
    }
    let mut backups = vec![None; plan.len()];
    if changed {
        if let Some(bin) = validator {
            check_with_containerd(bin, &opts, &decided, &plan)?;
        }
        if !module.check_mode() {
            backups = commit(&opts, &plan, &decided.main_dir)?;
        }
    }
    let done = Done {
        plan,
        backups,
        validated: changed && validator.is_some(),
        current,
        notes,
    };
    Ok(report(&opts, &decided, done, module.check_mode()))
}

/// The options as the run uses them: the runtime setup checked, the paths
/// checked and their symlinks followed; warnings for options the mode
/// ignores.
fn settle_options(module: &mut Module, opts: &mut Options) -> Result<Wanted, Error> {
    // Set: the spec's required_if (state: configure) refuses a task without it.
    let nvidia_runtime = opts.nvidia_runtime.unwrap_or_default();
    let wanted = Wanted {
        nvidia_runtime,
        set_as_default: opts.set_as_default,
        runtime_name: opts.runtime_name.clone(),
        runtime_path: opts.runtime_path.clone(),
        systemd_cgroup: opts.systemd_cgroup,
        keep_default: None,
        enable_cdi: opts.enable_cdi,
    };
    wanted.check()?;
    paths::check(opts)?;
    opts.path = paths::follow_links("path", &opts.path)?;
    if opts.mode == Mode::DropIn {
        opts.drop_in_path = paths::follow_links("drop_in_path", &opts.drop_in_path)?;
        if opts.drop_in_path == opts.path {
            return Err(Error::DropInIsMainThroughLinks(opts.path.clone()));
        }
    }
    if opts.mode != Mode::Template {
        if opts.template.is_some() {
            module.warn("template is used only with mode: template; it is ignored");
        }
        if !opts.template_vars.is_empty() {
            module.warn("template_vars is used only with mode: template; it is ignored");
        }
    }
    Ok(wanted)
}

/// The containerd on the node, the main file as it is, and the version to
/// write; refuses a runtime binary that is missing and CDI on a containerd
/// without it.
fn decide(module: &mut Module, opts: &Options, mut wanted: Wanted) -> Result<Decided, Error> {
    let containerd = locate_containerd(opts)?;
    if wanted.nvidia_runtime && opts.require_runtime_binary {
        check_runtime_binary(module, &opts.runtime_path)?;
    }
    let main_path = opts.path.to_string_lossy().into_owned();
    let main_before = read_file(&opts.path)?;
    let main_text = match main_before.as_deref() {
        Some(bytes) => Some(
            std::str::from_utf8(bytes)
                .map_err(|source| Error::NotUtf8 {
                    path: main_path.clone(),
                    source,
                })?
                .to_string(),
        ),
        None => None,
    };
    let declared = declared_version(module, opts, main_text.as_deref(), &main_path)?;
    let (containerd_version, version) =
        decide_version(module, opts, containerd.as_deref(), declared, &main_path)?;
    if let (Some(true), Some(cv)) = (opts.enable_cdi, &containerd_version) {
        if (cv.major, cv.minor) < (1, 7) {
            return Err(Error::NoCdi(cv.text.clone()));
        }
    }
    // merge and drop_in leave a default runtime of the user's (crun, kata)
    // alone unless the NVIDIA runtime is to be the default.
    if opts.mode != Mode::Template {
        wanted.keep_default = main_text
            .as_deref()
            .and_then(|t| config::configured_default(t, version));
    }
    Ok(Decided {
        wanted,
        containerd,
        containerd_version,
        version,
        main_before,
        main_text,
        main_dir: opts.path.parent().unwrap_or(Path::new("/")).to_path_buf(),
    })
}

/// The version the main file declares, if any. A template replaces the
/// file whole, a broken one included (with a warning).
fn declared_version(
    module: &mut Module,
    opts: &Options,
    main_text: Option<&str>,
    main_path: &str,
) -> Result<Option<Declared>, Error> {
    let Some(text) = main_text else {
        return Ok(None);
    };
    match config::declared_version(text, main_path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if opts.mode == Mode::Template => {
            module.warn(format!("{e}; the rendered template replaces it"));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The config version to write, and the containerd release when it was
/// asked. containerd itself (`--version`, `config dump`: a Go binary of
/// tens of MB, 20 to 40 ms each) is asked only when the file's own version
/// does not decide, or to validate what is to be written: a second run with
/// nothing to change runs none of it. drop_in also needs the release to
/// know where a relative `imports` entry points.
fn decide_version(
    module: &mut Module,
    opts: &Options,
    containerd: Option<&Path>,
    declared: Option<Declared>,
    main_path: &str,
) -> Result<(Option<config::ContainerdVersion>, ConfigVersion), Error> {
    let asked = match opts.config_version {
        VersionChoice::Auto => None,
        VersionChoice::V2 => Some(ConfigVersion::V2),
        VersionChoice::V3 => Some(ConfigVersion::V3),
    };
    let version_known = asked.is_some()
        || matches!(declared, Some(Declared::Version(n)) if ConfigVersion::from_number(n).is_some());
    let containerd_version = match containerd {
        Some(bin)
            if !version_known || opts.mode == Mode::DropIn || opts.enable_cdi == Some(true) =>
        {
            containerd_release(module, bin)
        }
        _ => None,
    };
    let chosen = config::choose_version(
        asked,
        declared.map(|d| (d, main_path)),
        opts.mode != Mode::Template && declared != Some(Declared::Unversioned),
        containerd_version.as_ref(),
    );
    let nothing_to_go_by = containerd.is_none() && declared.is_none() && asked.is_none();
    let (version, note) = settle_version(chosen, module.check_mode() && nothing_to_go_by)?;
    if let Some(note) = note {
        module.warn(note);
    }
    Ok((containerd_version, version))
}

/// A version 3 config is not read by containerd 1.x.
fn check_version_is_read(decided: &Decided) -> Result<(), Error> {
    match &decided.containerd_version {
        Some(cv) if !decided.version.read_by(cv) => Err(Error::VersionTooNew {
            version: decided.version,
            containerd: decided.containerd.clone().unwrap_or_default(),
            release: cv.text.clone(),
        }),
        _ => Ok(()),
    }
}

/// The containerd that validates the change: by default whenever one is
/// found; `validate: true` without one fails a real run that changes
/// something (check mode warns: an earlier task may install it).
fn pick_validator<'d>(
    module: &mut Module,
    opts: &Options,
    decided: &'d Decided,
    changed: bool,
) -> Result<Option<&'d Path>, Error> {
    let validate = opts.validate.unwrap_or(decided.containerd.is_some());
    match (&decided.containerd, validate) {
        (Some(bin), true) => Ok(Some(bin.as_path())),
        (None, true) if changed && module.check_mode() => {
            module.warn(
                "validate: true, but no containerd binary was found; the real run fails \
                 unless containerd is installed by then",
            );
            Ok(None)
        }
        (None, true) if changed => Err(Error::NoValidator),
        _ => Ok(None),
    }
}

/// Removes the temporaries of runs that were killed (SIGKILL, a dropped SSH
/// session), on every real run, changed or not; returns a note saying so.
fn clean_stale(opts: &Options, main_dir: &Path) -> Option<String> {
    let names = stale_names(opts);
    let mut removed = ansible_module::fs::clean_stale(main_dir, TMP_TAG, &names);
    if opts.mode == Mode::DropIn {
        if let Some(conf_d) = opts.drop_in_path.parent() {
            removed.extend(ansible_module::fs::clean_stale(conf_d, TMP_TAG, &names));
        }
    }
    (!removed.is_empty()).then(|| {
        format!(
            "removed {} temporary file(s) that killed runs left behind",
            removed.len()
        )
    })
}

/// The module's result: the message, the diffs, and the return values.
fn report(opts: &Options, decided: &Decided, done: Done, check_mode: bool) -> Outcome {
    let changed = done.plan.iter().any(Planned::changed);
    let mut outcome = Outcome::new(changed);
    for file in done.plan.iter().filter(|f| f.changed()) {
        outcome = outcome.diff(Diff::of_file(
            &file.path.to_string_lossy(),
            file.before.as_deref(),
            file.after.as_bytes(),
        ));
    }
    let shown = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or(Value::Null, |p| p.to_string_lossy().into_owned().into())
    };
    let wanted = &decided.wanted;
    let main_index = done.plan.len() - 1;
    let msg = message(
        opts,
        &done.plan,
        decided.version,
        wanted,
        check_mode,
        &done.notes,
    );
    outcome = outcome
        .msg(msg)
        .value("restart_required", changed)
        .value("config_version", decided.version.number())
        .value("default_runtime", wanted.default_runtime())
        .value("backup_file", shown(&done.backups[main_index]))
        .value("validated", done.validated)
        .value(
            "containerd_version",
            decided
                .containerd_version
                .as_ref()
                .map_or(Value::Null, |v| v.text.clone().into()),
        )
        .value("current", done.current.to_json())
        // The guide's name for "this node's containerd has the NVIDIA
        // runtime": set where that is decided and written, in the same task.
        .fact("nvidia_runtime_enabled", wanted.nvidia_runtime);
    if opts.mode == Mode::DropIn {
        outcome = outcome
            .value(
                "drop_in_path",
                opts.drop_in_path.to_string_lossy().into_owned(),
            )
            .value("drop_in_backup_file", shown(&done.backups[0]));
    }
    outcome
}

/// `state: inspect`: the current configuration, judged against the runtime
/// setup the options name when they name one (`nvidia_runtime`); nothing is
/// written, in check mode or not.
fn inspect(module: &mut Module, opts: &Options) -> Result<Outcome, Error> {
    if !opts.path.is_absolute() {
        return Err(Error::NotAbsolute {
            name: "path",
            path: opts.path.clone(),
        });
    }
    let containerd = locate_containerd(opts)?;
    let containerd_version = containerd
        .as_ref()
        .and_then(|bin| containerd_release(module, bin));
    let current = current::inspect(
        &opts.path,
        containerd.as_deref(),
        containerd_version.as_ref(),
    );
    let mut outcome = Outcome::new(false)
        .msg(current.summary())
        .value("current", current.to_json())
        .value(
            "containerd_version",
            containerd_version.map_or(Value::Null, |v| v.text.into()),
        );
    // Without nvidia_runtime there is no runtime setup to judge against:
    // inspect reports and does not judge.
    if let Some(nvidia_runtime) = opts.nvidia_runtime {
        let expected = problems::Expected {
            nvidia_runtime,
            set_as_default: opts.set_as_default,
            runtime_name: &opts.runtime_name,
            systemd_cgroup: opts.systemd_cgroup,
        };
        let (found, fine) = current.judge(&expected);
        outcome = outcome
            .value("problems", serde_json::to_value(found).unwrap_or_default())
            .value("as_expected", fine.map_or(Value::Null, Value::from));
    }
    Ok(outcome)
}

/// The version to write. In check mode on a fresh node, containerd is not
/// installed yet (the role's package task did not really run) and no file
/// says: the plan is shown for version 2, the one distributions ship today,
/// with a warning, rather than failing the whole check.
fn settle_version(
    chosen: Result<ConfigVersion, config::Error>,
    check_mode_without_clues: bool,
) -> Result<(ConfigVersion, Option<String>), Error> {
    match chosen {
        Ok(version) => Ok((version, None)),
        Err(config::Error::Version(why)) if check_mode_without_clues => Ok((
            ConfigVersion::V2,
            Some(format!(
                "{why}; check mode shows config version 2 (containerd 1.x), the real run asks \
                 the containerd installed by then"
            )),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The containerd binary: `containerd_path`, else the first one found.
fn locate_containerd(opts: &Options) -> Result<Option<PathBuf>, Error> {
    match &opts.containerd_path {
        Some(path) => match node::not_executable(path) {
            None => Ok(Some(path.clone())),
            Some(why) => Err(Error::ContainerdPath {
                path: path.clone(),
                why,
            }),
        },
        None => Ok(node::find_containerd()),
    }
}

/// `containerd --version`; one that cannot be read is a warning.
fn containerd_release(module: &mut Module, bin: &Path) -> Option<config::ContainerdVersion> {
    match node::containerd_version(bin) {
        Ok(v) => Some(v),
        Err(why) => {
            module.warn(why);
            None
        }
    }
}

/// The NVIDIA runtime must exist before containerd is told to use it: a
/// default runtime that cannot start fails every pod on the node. In check
/// mode an earlier task that installs it has not run: a warning.
fn check_runtime_binary(module: &mut Module, runtime_path: &str) -> Result<(), Error> {
    let path = Path::new(runtime_path);
    let why = if path.is_absolute() {
        node::not_executable(path)
    } else {
        Some("is not an absolute path, so its existence cannot be checked")
    };
    let Some(why) = why else { return Ok(()) };
    let error = Error::RuntimeBinary {
        path: runtime_path.to_string(),
        why,
    };
    if module.check_mode() {
        module.warn(format!(
            "{error} (check mode: the real run fails unless it is installed by then)"
        ));
        Ok(())
    } else {
        Err(error)
    }
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    read_optional(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The files to produce: for drop_in the drop-in, then the main config
/// (committed in that order, so the main file never imports a drop-in that
/// was not written); for the other modes the main config alone. Each is
/// checked to say what was asked before it is planned.
fn plan(opts: &Options, decided: &Decided, notes: &mut Vec<String>) -> Result<Vec<Planned>, Error> {
    let (wanted, version) = (&decided.wanted, decided.version);
    let main_path = opts.path.to_string_lossy().into_owned();
    let main_text = decided.main_text.as_deref();
    let main = |after: String| Planned {
        path: opts.path.clone(),
        before: decided.main_before.clone(),
        after,
    };
    match opts.mode {
        Mode::Template => {
            let (name, source) = match &opts.template {
                Some(text) => ("given in `template`", text.as_str()),
                None => config::builtin_template(wanted.nvidia_runtime),
            };
            let text = config::render(name, source, wanted, version, &opts.template_vars)?;
            let origin = format!("the rendered template {name}");
            config::verify(&text, &origin, wanted, version)?;
            Ok(vec![main(text)])
        }
        Mode::Merge => {
            let edit = config::merge(main_text, &main_path, wanted, version)?;
            config::verify(&edit.text, &main_path, wanted, version)?;
            notes.extend(edit.notes);
            Ok(vec![main(edit.text)])
        }
        Mode::DropIn => {
            let drop_in_path = opts.drop_in_path.to_string_lossy().into_owned();
            let drop_in_before = read_file(&opts.drop_in_path)?;
            let drop_in = config::drop_in(main_text, &main_path, wanted, version)?;
            config::verify(&drop_in, &drop_in_path, wanted, version)?;
            let relative = decided.relative_imports();
            let edit = config::add_import(main_text, &main_path, &drop_in_path, version, relative)?;
            notes.extend(edit.notes);
            let drop_in = Planned {
                path: opts.drop_in_path.clone(),
                before: drop_in_before,
                after: drop_in,
            };
            Ok(vec![drop_in, main(edit.text)])
        }
    }
}

/// containerd's own check of what is to be written, before anything is:
/// `containerd config dump` of in-memory copies (node::Candidate::Text), in
/// check mode and for real alike. The copy of the main config is its
/// committed text with relative imports made absolute (as that containerd
/// resolves them); in drop_in mode it imports the new drop-in instead of
/// the old one (see [`check_drop_in_with_containerd`]).
fn check_with_containerd(
    containerd: &Path,
    opts: &Options,
    decided: &Decided,
    plan: &[Planned],
) -> Result<(), Error> {
    let main_path = opts.path.to_string_lossy().into_owned();
    let main_after = &plan
        .last()
        .expect("the main config is always planned")
        .after;
    if opts.mode == Mode::DropIn {
        return check_drop_in_with_containerd(
            containerd,
            opts,
            decided,
            &plan[0].after,
            main_after,
        );
    }
    let relative = decided.relative_imports();
    let copy = config::validation_copy(main_after, &main_path, None, None, relative)?;
    let dump = config_dump(containerd, &copy, &main_path)?;
    config::verify_effective(&dump, &decided.wanted).map_err(|source| Error::Overridden {
        path: main_path,
        source,
    })
}

/// drop_in: containerd's effective configuration with the new drop-in must
/// say what was asked, and differ from the one without it only in the
/// runtime settings (containerd 1.x replaces a whole imported section).
fn check_drop_in_with_containerd(
    containerd: &Path,
    opts: &Options,
    decided: &Decided,
    drop_in: &str,
    main_after: &str,
) -> Result<(), Error> {
    let main_path = opts.path.to_string_lossy().into_owned();
    let drop_in_path = opts.drop_in_path.to_string_lossy().into_owned();
    let relative = decided.relative_imports();
    let staged_drop_in = node::UnnamedFile::new(drop_in).map_err(Error::StageInMemory)?;
    let copy = config::validation_copy(
        main_after,
        &main_path,
        Some(&drop_in_path),
        Some(staged_drop_in.path()),
        relative,
    )?;
    let dump = config_dump(containerd, &copy, &main_path)?;
    config::verify_effective(&dump, &decided.wanted).map_err(|source| Error::Overridden {
        path: main_path.clone(),
        source,
    })?;
    let without =
        config::validation_copy(main_after, &main_path, Some(&drop_in_path), None, relative)?;
    let baseline = config_dump(containerd, &without, &main_path)?;
    let lost = config::unrelated_changes(&baseline, &dump, &decided.wanted)?;
    if !lost.is_empty() {
        return Err(Error::ImportChangesMore {
            drop_in: drop_in_path,
            lost,
        });
    }
    Ok(())
}

/// `containerd config dump` of an in-memory copy of the main config.
fn config_dump(containerd: &Path, copy: &str, main_path: &str) -> Result<String, Error> {
    node::config_dump(containerd, Candidate::Text(copy)).map_err(|why| Error::Rejected {
        path: main_path.to_string(),
        why,
    })
}

/// The file names whose temporaries older versions of this module left
/// (`.<name>.<pid>.tmp`), found and removed with this module's own.
fn stale_names(opts: &Options) -> Vec<&str> {
    [opts.path.file_name(), opts.drop_in_path.file_name()]
        .into_iter()
        .flatten()
        .filter_map(|n| n.to_str())
        .collect()
}

/// Writes the validated plan, drop-in first, main config last (see
/// [`commit_file`]). Returns each planned file's backup; a failure says
/// what was written before it.
fn commit(
    opts: &Options,
    plan: &[Planned],
    main_dir: &Path,
) -> Result<Vec<Option<PathBuf>>, Error> {
    let mut backups = Vec::with_capacity(plan.len());
    let mut written: Vec<String> = Vec::new();
    let backup_dir = opts.backup.then_some(main_dir);
    for file in plan {
        if !file.changed() {
            backups.push(None);
            continue;
        }
        match commit_file(file, main_dir, backup_dir) {
            Ok((paths, backup)) => {
                written.extend(paths);
                backups.push(backup);
            }
            Err(what) => return Err(Error::Commit { what, written }),
        }
    }
    Ok(backups)
}

/// One file: its missing folders made, staged under a temporary name in the
/// main config's folder (where no `imports` glob looks), renamed over its
/// target, the old one kept in `backup_dir`. Returns what it wrote (folders,
/// file, backup); on failure the folders it made are removed again.
fn commit_file(
    file: &Planned,
    main_dir: &Path,
    backup_dir: Option<&Path>,
) -> Result<(Vec<String>, Option<PathBuf>), String> {
    let parent = file.path.parent().unwrap_or(Path::new("/"));
    let created = create_dirs(main_dir)
        .and_then(|mut a| {
            a.extend(create_dirs(parent)?);
            Ok(a)
        })
        .map_err(|e| format!("cannot create the folder of {}: {e}", file.path.display()))?;
    let result = StagedFile::stage_in(&file.path, main_dir, TMP_TAG, file.after.as_bytes(), 0o644)
        .map_err(|e| {
            format!(
                "cannot write a temporary file in {}: {e}",
                main_dir.display()
            )
        })
        .and_then(|staged| {
            staged
                .commit_with_backup_in(backup_dir)
                .map_err(|e| format!("cannot replace {}: {e}", file.path.display()))
        });
    match result {
        Ok(backup) => {
            let mut written: Vec<String> =
                created.iter().map(|d| d.display().to_string()).collect();
            written.push(file.path.display().to_string());
            written.extend(backup.iter().map(|b| b.display().to_string()));
            Ok((written, backup))
        }
        Err(why) => {
            for dir in created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
            Err(why)
        }
    }
}

/// Creates `dir` and its missing parents with mode 0755 whatever the umask
/// (the action plugin's is 077: /etc/containerd must be as its package makes
/// it, readable by all); returns those created, outermost first, so that a
/// failure can remove them again.
fn create_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    missing.reverse();
    for d in &missing {
        std::fs::create_dir(d)?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(missing)
}

fn message(
    opts: &Options,
    plan: &[Planned],
    version: ConfigVersion,
    wanted: &Wanted,
    check_mode: bool,
    notes: &[String],
) -> String {
    let changed: Vec<String> = plan
        .iter()
        .filter(|f| f.changed())
        .map(|f| f.path.display().to_string())
        .collect();
    let mut msg = if changed.is_empty() {
        format!(
            "{} already has the {} runtime as default (config version {version})",
            opts.path.display(),
            wanted.default_runtime()
        )
    } else {
        format!(
            "{} {}: default runtime {}, config version {version}; containerd must be restarted",
            if check_mode {
                "would update"
            } else {
                "updated"
            },
            changed.join(" and "),
            wanted.default_runtime()
        )
    };
    for note in notes {
        msg.push_str("; ");
        msg.push_str(note);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown() -> Result<ConfigVersion, config::Error> {
        Err(config::Error::Version(
            "cannot tell which config version to write".into(),
        ))
    }

    #[test]
    fn check_mode_on_a_fresh_node_plans_version_2_with_a_warning() {
        let (version, note) = settle_version(unknown(), true).unwrap();
        assert_eq!(version, ConfigVersion::V2);
        assert!(note.unwrap().contains("check mode shows config version 2"));
    }

    #[test]
    fn a_real_run_without_a_version_fails() {
        let failure = settle_version(unknown(), false).unwrap_err();
        assert!(
            failure
                .to_string()
                .contains("cannot tell which config version"),
            "{failure}"
        );
        assert_eq!(
            settle_version(Ok(ConfigVersion::V3), true).unwrap(),
            (ConfigVersion::V3, None)
        );
    }
}
