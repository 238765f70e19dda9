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
mod files;
mod node;

use ansible_module::fs::read_optional;
use ansible_module::{Arg, DefaultValue, Diff, Failure, Module, ModuleSpec, Outcome};
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
        // Required with state: configure (checked in `run`: the spec has no
        // required_if).
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

/// Configures containerd's runtimes as the options ask, or (`state:
/// inspect`) reports them.
pub fn run(module: &mut Module, mut opts: Options) -> Result<Outcome, Failure> {
    if opts.state == State::Inspect {
        return inspect(module, &opts);
    }
    let Some(nvidia_runtime) = opts.nvidia_runtime else {
        return Err(Failure::new(
            "missing required arguments: nvidia_runtime (required with state: configure)",
        ));
    };
    let mut wanted = Wanted {
        nvidia_runtime,
        set_as_default: opts.set_as_default,
        runtime_name: opts.runtime_name.clone(),
        runtime_path: opts.runtime_path.clone(),
        systemd_cgroup: opts.systemd_cgroup,
        keep_default: None,
        enable_cdi: opts.enable_cdi,
    };
    wanted.check().map_err(|e| Failure::new(e.to_string()))?;
    check_paths(&opts)?;
    opts.path = follow_links("path", &opts.path)?;
    if opts.mode == Mode::DropIn {
        opts.drop_in_path = follow_links("drop_in_path", &opts.drop_in_path)?;
        if opts.drop_in_path == opts.path {
            return Err(Failure::new(format!(
                "drop_in_path and path are the same file, {}; nothing written",
                opts.path.display()
            )));
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
    let check_mode = module.check_mode();

    let containerd = locate_containerd(&opts)?;
    if wanted.nvidia_runtime && opts.require_runtime_binary {
        check_runtime_binary(module, &opts.runtime_path, check_mode)?;
    }

    let main_path = opts.path.to_string_lossy().into_owned();
    let main_before = read_file(&opts.path)?;
    let main_text = main_before
        .as_deref()
        .map(|bytes| utf8(bytes, &main_path))
        .transpose()?;
    let declared = match main_text {
        None => None,
        Some(text) => match config::declared_version(text, &main_path) {
            Ok(d) => Some(d),
            // A template replaces the file whole, a broken one included.
            Err(e) if opts.mode == Mode::Template => {
                module.warn(format!("{e}; the rendered template replaces it"));
                None
            }
            Err(e) => return Err(nothing_written(e)),
        },
    };
    let asked = match opts.config_version {
        VersionChoice::Auto => None,
        VersionChoice::V2 => Some(ConfigVersion::V2),
        VersionChoice::V3 => Some(ConfigVersion::V3),
    };
    // containerd itself (`--version`, `config dump`: a Go binary of tens of
    // MB, 20 to 40 ms each) is asked only when the file's own version does not
    // decide, or to validate what is to be written: a second run with nothing
    // to change runs none of it.
    let version_known = asked.is_some()
        || matches!(declared, Some(Declared::Version(n)) if ConfigVersion::from_number(n).is_some());
    // drop_in also needs it to know where a relative `imports` entry points.
    let mut containerd_version = match &containerd {
        Some(bin)
            if !version_known || opts.mode == Mode::DropIn || opts.enable_cdi == Some(true) =>
        {
            containerd_release(module, bin)
        }
        _ => None,
    };
    let chosen = config::choose_version(
        asked,
        declared.map(|d| (d, main_path.as_str())),
        opts.mode != Mode::Template && declared != Some(Declared::Unversioned),
        containerd_version.as_ref(),
    );
    let nothing_to_go_by = containerd.is_none() && declared.is_none() && asked.is_none();
    let (version, note) = settle_version(chosen, check_mode && nothing_to_go_by)?;
    if let Some(note) = note {
        module.warn(note);
    }

    if let (Some(true), Some(cv)) = (opts.enable_cdi, &containerd_version) {
        if (cv.major, cv.minor) < (1, 7) {
            return Err(Failure::new(format!(
                "enable_cdi: containerd {} has no CDI support (it came in 1.7); nothing written",
                cv.text
            )));
        }
    }
    // merge and drop_in leave a default runtime of the user's (crun, kata)
    // alone unless the NVIDIA runtime is to be the default.
    if opts.mode != Mode::Template {
        wanted.keep_default = main_text.and_then(|t| config::configured_default(t, version));
    }
    let mut notes = Vec::new();
    let main_dir = opts.path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let plan = plan(
        &opts,
        &wanted,
        version,
        main_text,
        main_before.as_deref(),
        RelativeImports::of(containerd_version.as_ref(), &main_dir),
        &mut notes,
    )?;
    let changed = plan.iter().any(Planned::changed);
    if let (Some(bin), true, None) = (&containerd, changed, &containerd_version) {
        containerd_version = containerd_release(module, bin);
    }
    // Before anything is written, so that it says what the run found. From
    // the files: a `containerd config dump` of the old file here would be a
    // third containerd run on a change (state: inspect asks containerd).
    let current = current::inspect(&opts.path, None, containerd_version.as_ref());
    if let Some(cv) = &containerd_version {
        if !version.read_by(cv) {
            return Err(Failure::new(format!(
                "config version {version} needs containerd {}.0 or later, and {} is {}: it \
                 would not find the CRI runtime settings (set config_version: 2)",
                version.min_containerd_major(),
                containerd
                    .as_deref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                cv.text
            )));
        }
    }

    let validate = opts.validate.unwrap_or(containerd.is_some());
    let validator = match (&containerd, validate) {
        (Some(bin), true) => Some(bin.as_path()),
        (None, true) if changed && check_mode => {
            module.warn(
                "validate: true, but no containerd binary was found; the real run fails \
                 unless containerd is installed by then",
            );
            None
        }
        (None, true) if changed => {
            return Err(Failure::new(
                "validate: true, but no containerd binary was found on PATH or in /usr/bin, \
                 /usr/local/bin, /bin (set containerd_path, or validate: false); nothing written",
            ))
        }
        _ => None,
    };

    if !check_mode {
        // Temporaries of runs that were killed (SIGKILL, a dropped SSH
        // session), on every real run, changed or not.
        let mut removed = files::clean_stale(&main_dir, &stale_names(&opts));
        if opts.mode == Mode::DropIn {
            if let Some(conf_d) = opts.drop_in_path.parent() {
                removed.extend(files::clean_stale(conf_d, &stale_names(&opts)));
            }
        }
        if !removed.is_empty() {
            notes.push(format!(
                "removed {} temporary file(s) that killed runs left behind",
                removed.len()
            ));
        }
    }
    let mut outcome = Outcome::new(changed);
    let mut backups: Vec<Option<PathBuf>> = vec![None; plan.len()];
    let relative = RelativeImports::of(containerd_version.as_ref(), &main_dir);
    if changed {
        if let Some(bin) = validator {
            check_with_containerd(bin, &opts, &wanted, &plan, relative)?;
        }
        if !check_mode {
            backups = commit(&opts, &plan, &main_dir)?;
        }
        for file in plan.iter().filter(|f| f.changed()) {
            outcome = outcome.diff(Diff::of_file(
                &file.path.to_string_lossy(),
                file.before.as_deref(),
                file.after.as_bytes(),
            ));
        }
    }

    let shown = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or(Value::Null, |p| p.to_string_lossy().into_owned().into())
    };
    let main_index = plan.len() - 1;
    outcome = outcome
        .msg(message(&opts, &plan, version, &wanted, check_mode, &notes))
        .value("restart_required", changed)
        .value("config_version", version.number())
        .value("default_runtime", wanted.default_runtime())
        .value("backup_file", shown(&backups[main_index]))
        .value("validated", changed && validator.is_some())
        .value(
            "containerd_version",
            containerd_version.map_or(Value::Null, |v| v.text.into()),
        )
        .value("current", current.to_json());
    if opts.mode == Mode::DropIn {
        outcome = outcome
            .value(
                "drop_in_path",
                opts.drop_in_path.to_string_lossy().into_owned(),
            )
            .value("drop_in_backup_file", shown(&backups[0]));
    }
    Ok(outcome)
}

/// `state: inspect`: the current configuration and nothing else; nothing is
/// written, in check mode or not.
fn inspect(module: &mut Module, opts: &Options) -> Result<Outcome, Failure> {
    if !opts.path.is_absolute() {
        return Err(Failure::new(format!(
            "path must be absolute, got {}",
            opts.path.display()
        )));
    }
    let (containerd, containerd_version) = find_containerd(module, opts)?;
    let current = current::inspect(
        &opts.path,
        containerd.as_deref(),
        containerd_version.as_ref(),
    );
    Ok(Outcome::new(false)
        .msg(current.summary())
        .value("current", current.to_json())
        .value(
            "containerd_version",
            containerd_version.map_or(Value::Null, |v| v.text.into()),
        ))
}

/// The containerd binary (`containerd_path`, else the first one found) and
/// its release; a release that cannot be read is a warning.
/// The version to write. In check mode on a fresh node, containerd is not
/// installed yet (the role's package task did not really run) and no file
/// says: the plan is shown for version 2, the one distributions ship today,
/// with a warning, rather than failing the whole check.
fn settle_version(
    chosen: Result<ConfigVersion, config::Error>,
    check_mode_without_clues: bool,
) -> Result<(ConfigVersion, Option<String>), Failure> {
    match chosen {
        Ok(version) => Ok((version, None)),
        Err(config::Error::Version(why)) if check_mode_without_clues => Ok((
            ConfigVersion::V2,
            Some(format!(
                "{why}; check mode shows config version 2 (containerd 1.x), the real run asks \
                 the containerd installed by then"
            )),
        )),
        Err(e) => Err(nothing_written(e)),
    }
}

fn find_containerd(
    module: &mut Module,
    opts: &Options,
) -> Result<(Option<PathBuf>, Option<config::ContainerdVersion>), Failure> {
    let containerd = locate_containerd(opts)?;
    let version = containerd
        .as_ref()
        .and_then(|bin| containerd_release(module, bin));
    Ok((containerd, version))
}

/// The containerd binary: `containerd_path`, else the first one found.
fn locate_containerd(opts: &Options) -> Result<Option<PathBuf>, Failure> {
    match &opts.containerd_path {
        Some(path) => match node::not_executable(path) {
            None => Ok(Some(path.clone())),
            Some(why) => Err(Failure::new(format!(
                "containerd_path {} {why}",
                path.display()
            ))),
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

fn check_paths(opts: &Options) -> Result<(), Failure> {
    let mut named = vec![("path", &opts.path)];
    if opts.mode == Mode::DropIn {
        named.push(("drop_in_path", &opts.drop_in_path));
    }
    for (name, path) in named {
        if !path.is_absolute() {
            return Err(Failure::new(format!(
                "{name} must be absolute, got {}",
                path.display()
            )));
        }
        if path.to_string_lossy().chars().any(char::is_control) {
            return Err(Failure::new(format!(
                "{name} {:?} holds a control character (NUL, newline...); nothing written",
                path.to_string_lossy()
            )));
        }
        if path.file_name().is_none() || lexical(path).parent().is_none() {
            return Err(Failure::new(format!(
                "{name} {} names no file",
                path.display()
            )));
        }
    }
    if opts.mode == Mode::DropIn && lexical(&opts.drop_in_path) == lexical(&opts.path) {
        return Err(Failure::new(format!(
            "drop_in_path {} is the main config's path {}; nothing written",
            opts.drop_in_path.display(),
            opts.path.display()
        )));
    }
    Ok(())
}

/// An absolute path with `.` and `..` resolved as text (`/etc/x/../c` is
/// `/etc/c`), to compare two paths the options give.
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

/// Where a write to `path` goes: a symlink is followed to the file it names
/// (as Ansible's `follow: true`; the link stays a link and its target gets
/// the new content, which is what a node that links config.toml to a
/// managed copy means). Up to 40 links, as the kernel allows; a link loop
/// or a link to something other than a file is an error.
fn follow_links(name: &str, path: &Path) -> Result<PathBuf, Failure> {
    let mut at = lexical(path);
    for _ in 0..40 {
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&at).map_err(|e| {
                    Failure::new(format!("cannot read the symlink {}: {e}", at.display()))
                })?;
                let parent = at.parent().unwrap_or(Path::new("/")).to_path_buf();
                at = lexical(&parent.join(target));
            }
            Ok(meta) if !meta.is_file() => {
                return Err(Failure::new(format!(
                    "{name} {} is not a regular file; nothing written",
                    at.display()
                )))
            }
            _ => return Ok(at),
        }
    }
    Err(Failure::new(format!(
        "{name} {}: too many levels of symbolic links; nothing written",
        path.display()
    )))
}

/// The NVIDIA runtime must exist before containerd is told to use it: a
/// default runtime that cannot start fails every pod on the node.
fn check_runtime_binary(
    module: &mut Module,
    runtime_path: &str,
    check_mode: bool,
) -> Result<(), Failure> {
    let path = Path::new(runtime_path);
    let why = if path.is_absolute() {
        node::not_executable(path)
    } else {
        Some("is not an absolute path, so its existence cannot be checked")
    };
    let Some(why) = why else { return Ok(()) };
    let msg = format!(
        "the NVIDIA runtime binary {runtime_path} {why}: install the NVIDIA Container Toolkit \
         (nvidia-container-toolkit) first, or set runtime_path to where it is. containerd \
         would fail every pod that uses a runtime it cannot start; set \
         require_runtime_binary: false to configure it anyway"
    );
    if check_mode {
        // In check mode an earlier task that installs it has not run.
        module.warn(format!(
            "{msg} (check mode: the real run fails unless it is installed by then)"
        ));
        Ok(())
    } else {
        Err(Failure::new(msg))
    }
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>, Failure> {
    read_optional(path).map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))
}

fn utf8<'a>(bytes: &'a [u8], origin: &str) -> Result<&'a str, Failure> {
    std::str::from_utf8(bytes).map_err(|e| {
        Failure::new(format!(
            "{origin} is not UTF-8 text ({e}), so it is not a containerd config; nothing written"
        ))
    })
}

fn nothing_written(e: config::Error) -> Failure {
    Failure::new(format!("{e}; nothing written"))
}

/// The files to produce: for drop_in the drop-in, then the main config
/// (committed in that order, so the main file never imports a drop-in that
/// was not written); for the other modes the main config alone.
fn plan(
    opts: &Options,
    wanted: &Wanted,
    version: ConfigVersion,
    main_text: Option<&str>,
    main_before: Option<&[u8]>,
    relative: RelativeImports<'_>,
    notes: &mut Vec<String>,
) -> Result<Vec<Planned>, Failure> {
    let main_path = opts.path.to_string_lossy().into_owned();
    let main = |after: String| Planned {
        path: opts.path.clone(),
        before: main_before.map(<[u8]>::to_vec),
        after,
    };
    match opts.mode {
        Mode::Template => {
            let (name, source) = match &opts.template {
                Some(text) => ("given in `template`", text.as_str()),
                None => config::builtin_template(wanted.nvidia_runtime),
            };
            let text = config::render(name, source, wanted, version, &opts.template_vars)
                .map_err(nothing_written)?;
            config::verify(
                &text,
                &format!("the rendered template {name}"),
                wanted,
                version,
            )
            .map_err(nothing_written)?;
            Ok(vec![main(text)])
        }
        Mode::Merge => {
            let edit =
                config::merge(main_text, &main_path, wanted, version).map_err(nothing_written)?;
            config::verify(&edit.text, &main_path, wanted, version).map_err(nothing_written)?;
            notes.extend(edit.notes);
            Ok(vec![main(edit.text)])
        }
        Mode::DropIn => {
            let drop_in_path = opts.drop_in_path.to_string_lossy().into_owned();
            let drop_in_before = read_file(&opts.drop_in_path)?;
            let drop_in =
                config::drop_in(main_text, &main_path, wanted, version).map_err(nothing_written)?;
            config::verify(&drop_in, &drop_in_path, wanted, version).map_err(nothing_written)?;
            let edit = config::add_import(main_text, &main_path, &drop_in_path, version, relative)
                .map_err(nothing_written)?;
            notes.extend(edit.notes);
            Ok(vec![
                Planned {
                    path: opts.drop_in_path.clone(),
                    before: drop_in_before,
                    after: drop_in,
                },
                main(edit.text),
            ])
        }
    }
}

/// containerd's own check of what is to be written, before anything is:
/// `containerd config dump` of in-memory copies (node::Candidate::Text), in
/// check mode and for real alike. The copy of the main config is its
/// committed text with relative imports made absolute (as that containerd
/// resolves them); in drop_in mode it imports the new drop-in instead of
/// the old one, and containerd's effective configuration with it must differ
/// from the one without it only in the runtime settings.
fn check_with_containerd(
    containerd: &Path,
    opts: &Options,
    wanted: &Wanted,
    plan: &[Planned],
    relative: RelativeImports<'_>,
) -> Result<(), Failure> {
    let main_path = opts.path.to_string_lossy().into_owned();
    let main_after = &plan
        .last()
        .expect("the main config is always planned")
        .after;
    if opts.mode != Mode::DropIn {
        let copy = config::validation_copy(main_after, &main_path, None, None, relative)
            .map_err(nothing_written)?;
        let dump = node::config_dump(containerd, Candidate::Text(&copy))
            .map_err(|e| rejected(&main_path, e))?;
        return config::verify_effective(&dump, wanted).map_err(|e| overridden(&main_path, e));
    }
    let drop_in_path = opts.drop_in_path.to_string_lossy().into_owned();
    let staged_drop_in = node::UnnamedFile::new(&plan[0].after).map_err(|e| {
        Failure::new(format!(
            "cannot stage the drop-in in memory: {e}; nothing written"
        ))
    })?;
    let copy = config::validation_copy(
        main_after,
        &main_path,
        Some(&drop_in_path),
        Some(staged_drop_in.path()),
        relative,
    )
    .map_err(nothing_written)?;
    let dump = node::config_dump(containerd, Candidate::Text(&copy))
        .map_err(|e| rejected(&main_path, e))?;
    config::verify_effective(&dump, wanted).map_err(|e| overridden(&main_path, e))?;
    // Everything else must be as it is without the drop-in.
    let without =
        config::validation_copy(main_after, &main_path, Some(&drop_in_path), None, relative)
            .map_err(nothing_written)?;
    let baseline = node::config_dump(containerd, Candidate::Text(&without))
        .map_err(|e| rejected(&main_path, e))?;
    let lost = config::unrelated_changes(&baseline, &dump, wanted).map_err(nothing_written)?;
    if !lost.is_empty() {
        return Err(Failure::new(format!(
            "importing {drop_in_path} would change more than the runtimes in containerd's \
             effective configuration: {}; nothing written",
            lost.join("; ")
        )));
    }
    Ok(())
}

/// The file names whose temporaries older versions of this module left.
fn stale_names(opts: &Options) -> Vec<&str> {
    [opts.path.file_name(), opts.drop_in_path.file_name()]
        .into_iter()
        .flatten()
        .filter_map(|n| n.to_str())
        .collect()
}

/// Writes the validated plan: each changed file staged under a temporary
/// name in the main config's folder (where no `imports` glob looks), then
/// renamed over its target, drop-in first, main config last. Backups go to
/// that folder too. Returns each planned file's backup; a failure says what
/// was written before it.
fn commit(
    opts: &Options,
    plan: &[Planned],
    main_dir: &Path,
) -> Result<Vec<Option<PathBuf>>, Failure> {
    let mut backups = Vec::with_capacity(plan.len());
    let mut written: Vec<String> = Vec::new();
    let backup_dir = opts.backup.then_some(main_dir);
    for file in plan {
        if !file.changed() {
            backups.push(None);
            continue;
        }
        let fail = |what: String, written: &[String]| {
            let done = if written.is_empty() {
                "nothing written".to_string()
            } else {
                format!("already written: {}", written.join(", "))
            };
            Failure::new(format!("{what}; {done}"))
        };
        let created_dirs = create_dirs(main_dir)
            .and_then(|mut a| {
                let parent = file.path.parent().unwrap_or(Path::new("/"));
                a.extend(create_dirs(parent)?);
                Ok(a)
            })
            .map_err(|e| {
                fail(
                    format!("cannot create the folder of {}: {e}", file.path.display()),
                    &written,
                )
            })?;
        let result = files::Staged::new(&file.path, main_dir, file.after.as_bytes(), 0o644)
            .map_err(|e| {
                format!(
                    "cannot write a temporary file in {}: {e}",
                    main_dir.display()
                )
            })
            .and_then(|staged| {
                staged
                    .commit(backup_dir)
                    .map_err(|e| format!("cannot replace {}: {e}", file.path.display()))
            });
        match result {
            Ok(backup) => {
                written.extend(created_dirs.iter().map(|d| d.display().to_string()));
                written.push(file.path.display().to_string());
                if let Some(b) = &backup {
                    written.push(b.display().to_string());
                }
                backups.push(backup);
            }
            Err(why) => {
                for dir in created_dirs.iter().rev() {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(fail(why, &written));
            }
        }
    }
    Ok(backups)
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

fn rejected(path: &str, why: String) -> Failure {
    Failure::new(format!(
        "containerd rejects the new configuration for {path}, so it was not written: {why}"
    ))
}

fn overridden(path: &str, e: config::Error) -> Failure {
    Failure::new(format!(
        "{e}. containerd accepts the new {path}, but another file it imports overrides these \
         settings; nothing written"
    ))
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
            failure.msg.contains("cannot tell which config version"),
            "{}",
            failure.msg
        );
        assert_eq!(
            settle_version(Ok(ConfigVersion::V3), true).unwrap(),
            (ConfigVersion::V3, None)
        );
    }
}
