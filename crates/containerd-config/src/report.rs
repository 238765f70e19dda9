//! What a containerd configuration says about its CRI runtimes, read and
//! never changed: from `containerd config dump` output (the effective
//! configuration, as containerd itself merged the imports), or, where no
//! containerd binary can be asked, from the main file merged with the files
//! it imports the way containerd merges them.

use crate::edit::{glob_match, parse};
use crate::error::Error;
use crate::version::ConfigVersion;
use crate::{RUNC, RUNC_RUNTIME_TYPE};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};
use toml_edit::{DocumentMut, Item, Table};

/// The runtime settings of one configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `version`: 2 or 3 in a dump; 1 for a file with plugin settings and no
    /// `version`; `None` for a file that declares nothing.
    pub config_version: Option<i64>,
    /// `default_runtime_name` of the CRI plugin; `None` when not set.
    pub default_runtime: Option<String>,
    /// The CRI plugin's `runtimes`, by name.
    pub runtimes: BTreeMap<String, RuntimeReport>,
    /// Every file imported, directly or not, in the order containerd loads
    /// them; the main file is not listed.
    pub imports: Vec<String>,
    /// Whether `disabled_plugins` turns the CRI plugin off (no pod runs).
    pub cri_disabled: bool,
}

/// One entry of `runtimes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeReport {
    pub runtime_type: Option<String>,
    /// `options.BinaryName`; `None` when unset or empty (the shim runs `runc`).
    pub binary_name: Option<String>,
    /// `options.SystemdCgroup`; `None` when unset (containerd's default is false).
    pub systemd_cgroup: Option<bool>,
}

impl RuntimeReport {
    /// The program the runc shim runs for this runtime: `BinaryName`, else
    /// `runc`. `None` for runtimes of other shims (kata, gVisor), whose
    /// binary this crate does not know.
    pub fn runc_binary(&self) -> Option<&str> {
        match self.runtime_type.as_deref() {
            Some(RUNC_RUNTIME_TYPE | "io.containerd.runc.v1") => {
                Some(self.binary_name.as_deref().unwrap_or(RUNC))
            }
            _ => None,
        }
    }
}

impl Report {
    /// containerd's built-in configuration: what it runs with when no
    /// config file exists (runc as the default, no options).
    pub fn builtin_defaults() -> Report {
        let runc = RuntimeReport {
            runtime_type: Some(RUNC_RUNTIME_TYPE.to_string()),
            ..RuntimeReport::default()
        };
        Report {
            default_runtime: Some(RUNC.to_string()),
            runtimes: BTreeMap::from([(RUNC.to_string(), runc)]),
            ..Report::default()
        }
    }
}

/// Reads `containerd --config MAIN config dump` output. `main` is the path
/// the dump was made from; containerd lists it among the `imports`, this
/// report does not.
pub fn report_dump(dump: &str, main: &str) -> Result<Report, Error> {
    let doc = parse(dump, "`containerd config dump` output")?;
    let mut report = read(&doc);
    report.imports = strings(doc.get("imports"))
        .into_iter()
        .filter(|path| path != main && path != "/dev/stdin")
        .collect();
    Ok(report)
}

/// The files containerd would read, as the node has them.
pub trait ConfigFiles {
    /// The text of the file at `path`; `Ok(None)` when there is none.
    fn read(&self, path: &str) -> Result<Option<String>, String>;
    /// The names in directory `dir`, for glob imports; empty when it is missing.
    fn list(&self, dir: &str) -> Vec<String>;
}

/// Reads the main config `main_text` (at `main`) merged with every file it
/// imports, directly or not, as containerd loads them: each file once, in
/// order; a relative path is relative to the importing file's directory; an
/// entry with `*` is a glob (of the file name). How the files combine
/// follows the containerd release that reads the main file's version:
/// - version 2 (containerd 1.x): an imported plugin section replaces the
///   whole section (`mergeConfig`: "Replace entire sections"), and a
///   relative glob is relative to `/`, the daemon's working directory;
/// - version 3 (containerd 2.x): imported tables are merged key by key, and
///   a relative glob is relative to the importing file's directory.
///
/// Everywhere else values of later files win and lists are joined.
pub fn report_files(main_text: &str, main: &str, files: &dyn ConfigFiles) -> Result<Report, Error> {
    let mut merged = parse(main_text, main)?;
    let replace_plugins = merged.get("version").and_then(Item::as_integer) != Some(3);
    let mut loaded = vec![main.to_string()];
    // containerd's LoadConfig: a queue, each file's imports appended at its end.
    let mut pending: VecDeque<(String, String)> =
        imports_of(&merged, main, replace_plugins, files)?
            .into_iter()
            .map(|path| (path, main.to_string()))
            .collect();
    while let Some((path, importer)) = pending.pop_front() {
        if loaded.contains(&path) {
            continue;
        }
        let text = files
            .read(&path)
            .map_err(|why| {
                Error::shape(&importer, format!("cannot read its import {path}: {why}"))
            })?
            .ok_or_else(|| {
                Error::shape(
                    &importer,
                    format!("imports {path}, which does not exist: containerd refuses to start"),
                )
            })?;
        let doc = parse(&text, &path)?;
        let next = imports_of(&doc, &path, replace_plugins, files)?;
        merge_into(merged.as_table_mut(), doc.as_table(), replace_plugins);
        pending.extend(next.into_iter().map(|p| (p, path.clone())));
        loaded.push(path);
    }
    let mut report = read(&merged);
    report.imports = loaded.split_off(1);
    Ok(report)
}

fn read(doc: &DocumentMut) -> Report {
    let version = doc.get("version").and_then(Item::as_integer).or_else(|| {
        // containerd reads a file with plugin settings and no `version` as 1.
        doc.contains_key("plugins").then_some(1)
    });
    let (plugin, cri_ids) = match version.and_then(ConfigVersion::from_number) {
        Some(v) => (v.cri_runtime_plugin(), v.cri_plugin_ids()),
        // Version 1 names the CRI plugin by its short ID.
        None => ("cri", ConfigVersion::V2.cri_plugin_ids()),
    };
    let containerd = ["plugins", plugin, "containerd"]
        .iter()
        .try_fold(doc.as_item(), |item, key| item.get(key));
    let text = |item: Option<&Item>| {
        item.and_then(Item::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let runtimes = containerd
        .and_then(|c| c.get("runtimes"))
        .and_then(Item::as_table_like)
        .map(|table| {
            table
                .iter()
                .filter(|(_, entry)| entry.is_table_like())
                .map(|(name, entry)| {
                    let options = entry.get("options");
                    let runtime = RuntimeReport {
                        runtime_type: text(entry.get("runtime_type")),
                        binary_name: text(options.and_then(|o| o.get("BinaryName"))),
                        systemd_cgroup: options
                            .and_then(|o| o.get("SystemdCgroup"))
                            .and_then(Item::as_bool),
                    };
                    (name.to_string(), runtime)
                })
                .collect()
        })
        .unwrap_or_default();
    Report {
        config_version: version,
        default_runtime: text(containerd.and_then(|c| c.get("default_runtime_name"))),
        runtimes,
        imports: Vec::new(),
        cri_disabled: strings(doc.get("disabled_plugins"))
            .iter()
            .any(|id| cri_ids.contains(&id.as_str())),
    }
}

fn strings(item: Option<&Item>) -> Vec<String> {
    item.and_then(Item::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// containerd's `resolveImports`: the files one config's `imports` name.
fn imports_of(
    doc: &DocumentMut,
    origin: &str,
    containerd_1: bool,
    files: &dyn ConfigFiles,
) -> Result<Vec<String>, Error> {
    let parent = Path::new(origin).parent().unwrap_or(Path::new("/"));
    let mut out = Vec::new();
    for entry in strings(doc.get("imports")) {
        let glob = entry.contains('*');
        let base = if glob && containerd_1 {
            Path::new("/")
        } else {
            parent
        };
        let path = clean(&base.join(&entry));
        if !glob {
            out.push(path);
            continue;
        }
        let (dir, pattern) = path.rsplit_once('/').unwrap_or(("", &path));
        let dir = if dir.is_empty() { "/" } else { dir };
        if dir.contains(['*', '?', '[']) {
            return Err(Error::shape(
                origin,
                format!("imports {entry:?}: a wildcard in a directory name is not supported here"),
            ));
        }
        let names: BTreeSet<String> = files.list(dir).into_iter().collect();
        out.extend(
            names
                .iter()
                .filter(|name| glob_match(pattern, name))
                .map(|name| clean(&Path::new(dir).join(name))),
        );
    }
    Ok(out)
}

/// Go's `filepath.Clean` for the paths containerd builds: `.` and `..`
/// resolved lexically, never past `/`.
fn clean(path: &Path) -> String {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out.to_string_lossy().into_owned()
}

fn merge_into(to: &mut Table, from: &Table, replace_plugins: bool) {
    for (key, item) in from.iter() {
        if key == "imports" || key == "version" {
            continue;
        }
        match (to.get_mut(key), key == "plugins" && replace_plugins) {
            (Some(existing), true) => {
                if let (Some(to), Some(from)) = (existing.as_table_like_mut(), item.as_table_like())
                {
                    for (name, section) in from.iter() {
                        to.insert(name, section.clone());
                    }
                } else {
                    *existing = item.clone();
                }
            }
            (Some(existing), false) => deep_merge(existing, item),
            (None, _) => {
                to.insert(key, item.clone());
            }
        }
    }
}

fn deep_merge(into: &mut Item, from: &Item) {
    if let (Some(to), Some(from)) = (into.as_table_like_mut(), from.as_table_like()) {
        for (key, item) in from.iter() {
            match to.get_mut(key) {
                Some(existing) => deep_merge(existing, item),
                None => {
                    to.insert(key, item.clone());
                }
            }
        }
    } else if let (Some(to), Some(from)) = (into.as_array_mut(), from.as_array()) {
        for value in from.iter() {
            if !to
                .iter()
                .any(|v| v.to_string().trim() == value.to_string().trim())
            {
                to.push_formatted(value.clone());
            }
        }
    } else {
        *into = from.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Files(HashMap<&'static str, &'static str>);

    impl ConfigFiles for Files {
        fn read(&self, path: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(path).map(|t| t.to_string()))
        }
        fn list(&self, dir: &str) -> Vec<String> {
            self.0
                .keys()
                .filter_map(|p| p.strip_prefix(dir)?.strip_prefix('/'))
                .filter(|name| !name.contains('/'))
                .map(str::to_string)
                .collect()
        }
    }

    const V2_RUNC: &str = r#"version = 2
imports = ["/etc/containerd/conf.d/*.toml"]
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.internal/pause:3.10"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
"#;

    const V2_NVIDIA_DROP_IN: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "nvidia"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
      BinaryName = "/usr/bin/nvidia-container-runtime"
      SystemdCgroup = true
"#;

    fn runtime(kind: &str, binary: Option<&str>, systemd: Option<bool>) -> RuntimeReport {
        RuntimeReport {
            runtime_type: Some(kind.to_string()),
            binary_name: binary.map(str::to_string),
            systemd_cgroup: systemd,
        }
    }

    #[test]
    fn a_version_2_dump_gives_the_default_runtime_and_every_runtime() {
        // As containerd 1.6 prints it: zero values included, the main file
        // among the imports.
        let dump = r#"disabled_plugins = []
imports = ["/etc/containerd/config.toml", "/etc/containerd/conf.d/99-nvidia.toml"]
version = 2
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "nvidia"
      [plugins."io.containerd.grpc.v1.cri".containerd.default_runtime]
        runtime_type = ""
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
            BinaryName = "/usr/bin/nvidia-container-runtime"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            BinaryName = ""
            SystemdCgroup = false
"#;
        let report = report_dump(dump, "/etc/containerd/config.toml").unwrap();
        assert_eq!(
            report,
            Report {
                config_version: Some(2),
                default_runtime: Some("nvidia".into()),
                runtimes: BTreeMap::from([
                    (
                        "nvidia".into(),
                        runtime(
                            RUNC_RUNTIME_TYPE,
                            Some("/usr/bin/nvidia-container-runtime"),
                            None
                        )
                    ),
                    ("runc".into(), runtime(RUNC_RUNTIME_TYPE, None, Some(false))),
                ]),
                imports: vec!["/etc/containerd/conf.d/99-nvidia.toml".into()],
                cri_disabled: false,
            }
        );
        assert_eq!(
            report.runtimes["runc"].runc_binary(),
            Some("runc"),
            "an empty BinaryName runs runc"
        );
    }

    #[test]
    fn a_version_3_dump_is_read_from_the_cri_runtime_plugin() {
        let dump = r#"version = 3
disabled_plugins = ['io.containerd.cri.v1.runtime']
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]
    runtime_type = 'io.containerd.kata.v2'
"#;
        let report = report_dump(dump, "/etc/containerd/config.toml").unwrap();
        assert_eq!(report.config_version, Some(3));
        assert_eq!(report.default_runtime.as_deref(), Some("runc"));
        assert!(report.cri_disabled);
        assert_eq!(
            report.runtimes["kata"].runc_binary(),
            None,
            "not a runc shim"
        );
    }

    #[test]
    fn a_version_2_import_replaces_the_whole_plugin_section() {
        let files = Files(HashMap::from([(
            "/etc/containerd/conf.d/99-nvidia.toml",
            V2_NVIDIA_DROP_IN,
        )]));
        let report = report_files(V2_RUNC, "/etc/containerd/config.toml", &files).unwrap();
        assert_eq!(report.default_runtime.as_deref(), Some("nvidia"));
        assert_eq!(
            report.runtimes.keys().collect::<Vec<_>>(),
            ["nvidia"],
            "containerd 1.x drops the main file's runc entry: the drop-in replaced the section"
        );
        assert_eq!(
            report.runtimes["nvidia"].binary_name.as_deref(),
            Some("/usr/bin/nvidia-container-runtime")
        );
        assert_eq!(report.imports, ["/etc/containerd/conf.d/99-nvidia.toml"]);
    }

    #[test]
    fn a_version_3_import_is_merged_key_by_key() {
        let main = r#"version = 3
imports = ["conf.d/*.toml"]
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
"#;
        let drop_in = r#"version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'nvidia'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia]
    runtime_type = 'io.containerd.runc.v2'
    options = { BinaryName = '/usr/bin/nvidia-container-runtime', SystemdCgroup = true }
"#;
        let files = Files(HashMap::from([
            ("/etc/containerd/conf.d/99-nvidia.toml", drop_in),
            ("/etc/containerd/conf.d/notes.txt", "not toml ["),
        ]));
        let report = report_files(main, "/etc/containerd/config.toml", &files).unwrap();
        assert_eq!(report.default_runtime.as_deref(), Some("nvidia"));
        assert_eq!(
            report.runtimes.keys().collect::<Vec<_>>(),
            ["nvidia", "runc"]
        );
        assert_eq!(report.runtimes["nvidia"].systemd_cgroup, Some(true));
        assert_eq!(report.imports, ["/etc/containerd/conf.d/99-nvidia.toml"]);
    }

    #[test]
    fn nested_imports_load_once_each_and_in_order() {
        let main = "version = 2\nimports = [\"a.toml\", \"b.toml\"]\n";
        let files = Files(HashMap::from([
            (
                "/etc/containerd/a.toml",
                "imports = [\"sub/../c.toml\", \"config.toml\"]\n",
            ),
            (
                "/etc/containerd/b.toml",
                "imports = [\"a.toml\"]\ndisabled_plugins = [\"cri\"]\n",
            ),
            ("/etc/containerd/c.toml", "oom_score = -999\n"),
        ]));
        let report = report_files(main, "/etc/containerd/config.toml", &files).unwrap();
        assert_eq!(
            report.imports,
            [
                "/etc/containerd/a.toml",
                "/etc/containerd/b.toml",
                "/etc/containerd/c.toml"
            ],
            "breadth first, as containerd's queue"
        );
        assert!(report.cri_disabled);
    }

    #[test]
    fn a_missing_import_is_an_error_naming_both_files() {
        let main = "version = 2\nimports = [\"/etc/containerd/conf.d/99-nvidia.toml\"]\n";
        let err =
            report_files(main, "/etc/containerd/config.toml", &Files(HashMap::new())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/containerd/config.toml: imports /etc/containerd/conf.d/99-nvidia.toml, which \
             does not exist: containerd refuses to start"
        );
        let glob = "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n";
        let report =
            report_files(glob, "/etc/containerd/config.toml", &Files(HashMap::new())).unwrap();
        assert!(report.imports.is_empty(), "a glob may match nothing");
    }

    #[test]
    fn a_file_without_a_version_is_read_as_version_1() {
        let text = "[plugins.cri.containerd]\ndefault_runtime_name = \"runc\"\n";
        let report =
            report_files(text, "/etc/containerd/config.toml", &Files(HashMap::new())).unwrap();
        assert_eq!(report.config_version, Some(1));
        assert_eq!(report.default_runtime.as_deref(), Some("runc"));
        let empty =
            report_files("", "/etc/containerd/config.toml", &Files(HashMap::new())).unwrap();
        assert_eq!(empty.config_version, None);
        assert_eq!(empty.default_runtime, None);
    }
}
