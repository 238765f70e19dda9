//! The `current` return value: what containerd's configuration says about
//! its runtimes now, before the module changes anything. Read by containerd
//! itself (`containerd --config PATH config dump`: imports merged as the
//! daemon merges them) when a containerd binary is on the node, else from
//! the files with `containerd_config`'s own merge.

use crate::node::{self, Candidate};
use containerd_config::{self as config, ConfigFiles, ConfigVersion, ContainerdVersion, Report};
use serde_json::{json, Map, Value};
use std::path::Path;

pub const FROM_DUMP: &str = "containerd config dump";
pub const FROM_FILES: &str = "file";

/// The current configuration, or why it cannot be read.
#[derive(Debug)]
pub struct Current {
    path: String,
    /// Whether the main file exists (without it containerd runs on its
    /// built-in defaults).
    exists: bool,
    source: &'static str,
    report: Result<Report, String>,
}

/// Reads the configuration `path` names, as containerd would see it.
pub fn inspect(
    path: &Path,
    containerd: Option<&Path>,
    version: Option<&ContainerdVersion>,
) -> Current {
    let shown = path.to_string_lossy().into_owned();
    let text = match ansible_module::fs::read_optional(path) {
        Ok(bytes) => bytes.map(|b| String::from_utf8_lossy(&b).into_owned()),
        Err(e) => {
            return Current {
                exists: path.exists(),
                source: FROM_FILES,
                report: Err(format!("cannot read {shown}: {e}")),
                path: shown,
            }
        }
    };
    let exists = text.is_some();
    let (source, report) = match (containerd, text) {
        (Some(bin), Some(_)) => (FROM_DUMP, from_dump(bin, Candidate::File(path), &shown)),
        (Some(bin), None) => {
            // containerd starts on its built-in defaults when the file is
            // missing; an empty config of its own version dumps them.
            let native = version.map_or(ConfigVersion::V2, ConfigVersion::native_to);
            let empty = format!("version = {native}\n");
            (FROM_DUMP, from_dump(bin, Candidate::Text(&empty), &shown))
        }
        (None, Some(text)) => (
            FROM_FILES,
            config::report_files(&text, &shown, &NodeFiles).map_err(|e| e.to_string()),
        ),
        (None, None) => (FROM_FILES, Ok(Report::builtin_defaults())),
    };
    Current {
        path: shown,
        exists,
        source,
        report,
    }
}

fn from_dump(bin: &Path, candidate: Candidate<'_>, main: &str) -> Result<Report, String> {
    let dump = node::config_dump(bin, candidate)?;
    config::report_dump(&dump, main).map_err(|e| e.to_string())
}

/// The node's own files, for the merge without containerd.
struct NodeFiles;

impl ConfigFiles for NodeFiles {
    fn read(&self, path: &str) -> Result<Option<String>, String> {
        ansible_module::fs::read_optional(Path::new(path))
            .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
            .map_err(|e| e.to_string())
    }

    fn list(&self, dir: &str) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Current {
    /// The `current` return value.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("path".into(), self.path.clone().into());
        out.insert("exists".into(), self.exists.into());
        out.insert("source".into(), self.source.into());
        let report = match &self.report {
            Ok(report) => {
                out.insert("error".into(), Value::Null);
                report.clone()
            }
            Err(why) => {
                out.insert("error".into(), why.clone().into());
                Report::default()
            }
        };
        let runtimes: Map<String, Value> = report
            .runtimes
            .iter()
            .map(|(name, rt)| {
                let binary_exists = rt.runc_binary().map(node::runtime_binary_exists);
                let entry = json!({
                    "runtime_type": rt.runtime_type,
                    "binary_name": rt.binary_name,
                    "systemd_cgroup": rt.systemd_cgroup,
                    "binary_exists": binary_exists,
                });
                (name.clone(), entry)
            })
            .collect();
        out.insert("config_version".into(), report.config_version.into());
        out.insert("default_runtime".into(), report.default_runtime.into());
        out.insert("runtimes".into(), Value::Object(runtimes));
        out.insert("imports".into(), report.imports.into());
        out.insert("cri_disabled".into(), report.cri_disabled.into());
        Value::Object(out)
    }

    /// One line for `msg` (state: inspect).
    pub fn summary(&self) -> String {
        let report = match &self.report {
            Ok(report) => report,
            Err(why) => return format!("cannot read containerd's configuration: {why}"),
        };
        let mut line = format!(
            "{}{} (read with {}",
            self.path,
            if self.exists {
                ""
            } else {
                " does not exist: containerd's built-in defaults"
            },
            self.source
        );
        if !report.imports.is_empty() {
            line.push_str(&format!(", imports {}", report.imports.join(", ")));
        }
        line.push_str("): default runtime ");
        match &report.default_runtime {
            Some(name) => {
                line.push_str(name);
                if let Some(rt) = report.runtimes.get(name) {
                    let binary = rt.runc_binary().unwrap_or("its shim's");
                    line.push_str(&format!(
                        " ({binary}, SystemdCgroup {})",
                        rt.systemd_cgroup.unwrap_or(false)
                    ));
                } else {
                    line.push_str(" (not among the runtimes)");
                }
            }
            None => line.push_str("not set"),
        }
        let names: Vec<&str> = report.runtimes.keys().map(String::as_str).collect();
        line.push_str(&format!("; runtimes: {}", names.join(", ")));
        if report.cri_disabled {
            line.push_str("; the CRI plugin is disabled");
        }
        line
    }
}
