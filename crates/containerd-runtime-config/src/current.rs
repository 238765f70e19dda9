//! The `current` return value: what containerd's configuration says about
//! its runtimes now, before the module changes anything. Read by containerd
//! itself (`containerd --config PATH config dump`: imports merged as the
//! daemon merges them) when a containerd binary is on the node, else from
//! the files with `containerd_config`'s own merge.

use crate::node::{self, Candidate};
use crate::problems::{self, Expected, Problem, Seen};
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
    /// Running containerd daemons that read this configuration.
    daemons: Vec<Daemon>,
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
                daemons: Vec::new(),
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
    let daemons = match &report {
        Ok(r) => daemons_of(path, &r.imports),
        Err(_) => Vec::new(),
    };
    Current {
        path: shown,
        exists,
        source,
        report,
        daemons,
    }
}

/// A running containerd daemon that reads this configuration.
#[derive(Debug)]
pub struct Daemon {
    pid: u32,
    /// When it started, in seconds since the epoch.
    started: u64,
    /// The newest modification time of the config file and its imports.
    config_changed: u64,
    /// The file that changed last.
    changed_file: String,
}

impl Daemon {
    /// Started before its configuration last changed: it runs an older one.
    fn stale(&self) -> bool {
        self.started < self.config_changed
    }
}

/// The containerd daemons running with `path` as their config (`--config`
/// / `-c`, else containerd's default /etc/containerd/config.toml), each
/// with its start time and the newest change of `path` and `imports` (the
/// files as `config dump` lists them). containerd reads its configuration
/// only when it starts, so a daemon that started before the last change runs
/// an older configuration: the "I configured it but pods still use runc"
/// case. A file touched without a change counts too (a restart clears it).
fn daemons_of(path: &Path, imports: &[String]) -> Vec<Daemon> {
    let Some((newest, changed_file)) = std::iter::once(path.to_path_buf())
        .chain(imports.iter().map(std::path::PathBuf::from))
        .filter_map(|f| {
            let mtime = std::fs::metadata(&f).ok()?.modified().ok()?;
            let secs = mtime.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
            Some((secs, f.display().to_string()))
        })
        .max()
    else {
        return Vec::new();
    };
    let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // A containerd in another mount namespace (a container's) reads another
    // file of that name.
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            if comm.trim_end() != "containerd"
                || std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() != own_ns
            {
                return None;
            }
            let config = daemon_config(pid)?;
            let config = std::fs::canonicalize(&config).unwrap_or(config);
            if config != wanted {
                return None;
            }
            Some(Daemon {
                pid,
                started: process_start(pid)?,
                config_changed: newest,
                changed_file: changed_file.clone(),
            })
        })
        .collect()
}

/// The config a containerd process was started with, from its command line
/// (relative to its working directory).
fn daemon_config(pid: u32) -> Option<std::path::PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // `containerd config dump` and friends are not daemons.
    if args
        .iter()
        .skip(1)
        .any(|a| a == "config" || a == "--version" || a == "-v")
    {
        return None;
    }
    let mut config = None;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        if arg == "--config" || arg == "-c" {
            config = iter.next().cloned();
        } else if let Some(v) = arg
            .strip_prefix("--config=")
            .or_else(|| arg.strip_prefix("-c="))
        {
            config = Some(v.to_string());
        }
    }
    let config =
        std::path::PathBuf::from(config.unwrap_or_else(|| "/etc/containerd/config.toml".into()));
    if config.is_absolute() {
        Some(config)
    } else {
        Some(
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .ok()?
                .join(config),
        )
    }
}

/// A process's start, in seconds since the epoch: its start in clock ticks
/// after boot (/proc/PID/stat, field 22) plus the boot time (/proc/stat).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and parentheses.
    let after = stat.rsplit_once(')')?.1;
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + ticks / rustix::param::clock_ticks_per_second())
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
    /// The problems of this configuration for the runtime setup `expected`,
    /// and (none found) the line that says what pods run with.
    pub fn judge(&self, expected: &Expected<'_>) -> (Vec<Problem>, Option<String>) {
        let exists = |binary: &str| node::runtime_binary_exists(binary);
        let seen = Seen {
            path: &self.path,
            source: self.source,
            exists: self.exists,
            report: self.report.as_ref().map_err(String::as_str),
            stale_daemons: self
                .daemons
                .iter()
                .filter(|d| d.stale())
                .map(|d| (d.pid, d.changed_file.as_str()))
                .collect(),
            binary_exists: &exists,
        };
        let found = problems::problems(&seen, expected);
        if !found.is_empty() {
            return (found, None);
        }
        let mut files = vec![self.path.as_str()];
        if let Ok(report) = &self.report {
            files.extend(report.imports.iter().map(String::as_str));
        }
        (
            found,
            problems::as_expected(&seen, expected, &files.join(" and ")),
        )
    }

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
        let daemons: Vec<Value> = self
            .daemons
            .iter()
            .map(|d| {
                json!({
                    "pid": d.pid,
                    "started": d.started,
                    "config_changed": d.config_changed,
                    "changed_file": d.changed_file,
                    "stale": d.stale(),
                })
            })
            .collect();
        out.insert("daemons".into(), daemons.into());
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
