//! The local facts file (`/etc/ansible/facts.d/gpu.fact`): ours, or the user's.
//!
//! Ansible's `setup` runs an executable `.fact` file and parses its output,
//! and reads any other `.fact` file as JSON (or INI). The Korean guide's
//! troubleshooting installs an executable `gpu.fact` printing
//! `{"has_nvidia_gpu": true}` to set a node's mode. So two rules:
//!
//! - a file of ours is JSON, mode 0644, and says it is ours (`written_by`):
//!   JSON left executable makes `setup` fail with "Exec format error" on the
//!   node, for every play that gathers facts;
//! - a file that is not ours is the user's: never rewritten, and its
//!   `has_nvidia_gpu` is read as Ansible reads it (running it when it is
//!   executable, as `setup` does);
//! - a plain file that Ansible cannot read at all (neither JSON nor INI) is
//!   of use to no one, most likely ours cut short: it is rewritten, and the
//!   old one kept as a backup beside it.

use ansible_module::{fs, Failure};
use serde_json::{Map, Value};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The key that marks a file as written by this module, and its value.
pub const OWNER_KEY: &str = "written_by";
pub const OWNER: &str = "nvidia_gpu_facts";
/// The mode of a file of ours: readable by all, executable by none.
pub const MODE: u32 = 0o644;
/// How long a user's executable facts file may run (Ansible's `setup` gives
/// none; a hung script must not hang the play).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// A key an earlier release wrote without the marker: such a file is ours.
const EARLIER_RELEASE_KEY: &str = "nvidia_gpu_present";

/// What is at the local facts path.
#[derive(Clone, Debug, PartialEq)]
pub enum FactsFile {
    Absent,
    /// Written by this module (an earlier release wrote no marker; its mode
    /// may be the user's script's 0755 it replaced).
    Ours {
        mode: u32,
        /// What it holds, to compare with the detection.
        content: Map<String, Value>,
    },
    /// Not executable, neither JSON nor INI: unreadable to Ansible, so
    /// rewritten (with a backup).
    Unreadable {
        mode: u32,
    },
    /// The user's: its `has_nvidia_gpu`, when it gives one.
    Users {
        executable: bool,
        has_nvidia_gpu: Option<bool>,
    },
}

impl FactsFile {
    /// The user's `has_nvidia_gpu` from their file, if any.
    pub fn users_gpu_mode(&self) -> Option<bool> {
        match self {
            FactsFile::Users { has_nvidia_gpu, .. } => *has_nvidia_gpu,
            _ => None,
        }
    }
}

/// Finds out whose file `path` is, and what the user's says.
pub fn inspect(path: &Path) -> Result<FactsFile, Failure> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FactsFile::Absent),
        Err(e) => return Err(cannot_read(path, &e.to_string())),
    };
    if !meta.is_file() {
        return Err(cannot_read(path, "it is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    let text = std::fs::read(path).map_err(|e| cannot_read(path, &e.to_string()))?;
    if let Ok(Value::Object(content)) = serde_json::from_slice::<Value>(&text) {
        if is_ours(&content) {
            return Ok(FactsFile::Ours { mode, content });
        }
        if mode & 0o111 == 0 {
            return users_file(path, false, &content);
        }
    }
    if mode & 0o111 == 0 {
        if !looks_like_ini(&String::from_utf8_lossy(&text)) {
            return Ok(FactsFile::Unreadable { mode });
        }
        // INI, as Ansible reads it: every key is under a section, so it
        // cannot set a top-level has_nvidia_gpu.
        return Ok(FactsFile::Users {
            executable: false,
            has_nvidia_gpu: None,
        });
    }
    let output = run_script(path)?;
    match serde_json::from_str::<Value>(&output) {
        Ok(Value::Object(content)) => users_file(path, true, &content),
        _ => Err(Failure::new(format!(
            "{} is executable, so Ansible runs it for local facts, but it did not print a JSON object \
             (it printed {:?}). It is not ours, so it is left as it is: make it print JSON such as \
             {{\"has_nvidia_gpu\": true}}, or remove it to let nvidia_gpu_facts write the detection there.",
            path.display(),
            first_line(&output)
        ))),
    }
}

/// Whether Python's configparser, which Ansible's `setup` falls back to,
/// could read it: its first line that is not blank or a comment is a
/// `[section]` header.
fn looks_like_ini(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with(';'))
        .is_some_and(|line| line.starts_with('[') && line.ends_with(']'))
}

fn is_ours(content: &Map<String, Value>) -> bool {
    content.get(OWNER_KEY).and_then(Value::as_str) == Some(OWNER)
        || (content.contains_key(EARLIER_RELEASE_KEY) && !content.contains_key("has_nvidia_gpu"))
}

fn users_file(
    path: &Path,
    executable: bool,
    content: &Map<String, Value>,
) -> Result<FactsFile, Failure> {
    let has_nvidia_gpu = match content.get("has_nvidia_gpu") {
        None | Some(Value::Null) => None,
        Some(value) => Some(ansible_bool(value).ok_or_else(|| {
            Failure::new(format!(
                "{} sets has_nvidia_gpu to {value}, which is not a boolean: use true or false",
                path.display()
            ))
        })?),
    };
    Ok(FactsFile::Users {
        executable,
        has_nvidia_gpu,
    })
}

/// A boolean as Ansible's `bool` filter reads one.
fn ansible_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => Some(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Some(false),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "y" | "t" => Some(true),
            "false" | "no" | "off" | "0" | "n" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Runs the user's facts script as Ansible's `setup` does (no arguments, no
/// stdin), and returns what it printed.
fn run_script(path: &Path) -> Result<String, Failure> {
    let mut child = Command::new(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| cannot_read(path, &format!("it is executable but cannot be run: {e}")))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < SCRIPT_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(cannot_read(
                    path,
                    &format!(
                        "it ran longer than {}s and was stopped",
                        SCRIPT_TIMEOUT.as_secs()
                    ),
                ));
            }
            Err(e) => return Err(cannot_read(path, &e.to_string())),
        }
    };
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut output)
            .map_err(|e| cannot_read(path, &format!("its output is not text: {e}")))?;
    }
    if !status.success() {
        return Err(cannot_read(path, &format!("running it failed ({status})")));
    }
    Ok(output)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn cannot_read(path: &Path, why: &str) -> Failure {
    Failure::new(format!(
        "cannot read the local facts file {}: {why}. It is not ours, so it is left as it is; \
         fix it, or remove it to let nvidia_gpu_facts write the detection there.",
        path.display()
    ))
}

/// Writes the detection to a file of ours (or where there is none): JSON
/// with our marker, mode 0644, replaced atomically and only when it differs.
/// A file of ours left executable by an earlier release is made 0644 first;
/// an unreadable one is kept as a backup. Never called for a user's file.
pub fn write(
    path: &Path,
    current: &FactsFile,
    detection: Map<String, Value>,
    check_mode: bool,
) -> Result<fs::FileOutcome, Failure> {
    let failure = |e: std::io::Error| {
        Failure::new(format!(
            "cannot write the local facts file {}: {e}",
            path.display()
        ))
    };
    let mode_fixed = match current {
        FactsFile::Ours { mode, .. } | FactsFile::Unreadable { mode } if *mode != MODE => {
            if !check_mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE))
                    .map_err(failure)?;
            }
            true
        }
        FactsFile::Ours { .. } | FactsFile::Unreadable { .. } | FactsFile::Absent => false,
        FactsFile::Users { .. } => unreachable!("a user's facts file is never written"),
    };
    let mut content = detection;
    content.insert(OWNER_KEY.into(), OWNER.into());
    let mut text =
        serde_json::to_string_pretty(&content).map_err(|e| Failure::new(e.to_string()))?;
    text.push('\n');
    let backup = matches!(current, FactsFile::Unreadable { .. });
    let mut outcome =
        fs::converge_file(path, text.as_bytes(), MODE, backup, check_mode).map_err(failure)?;
    outcome.changed |= mode_fixed;
    Ok(outcome)
}

/// How a file of ours differs from what it would hold now (`detection`
/// and our marker), one phrase per fact, sorted by name: a fact a newer
/// release adds counts, and so does one the file holds that is no longer
/// written. Values too long for a phrase (lists, objects) only "differ".
pub fn differences(file: &Map<String, Value>, detection: &Map<String, Value>) -> Vec<String> {
    let mut now = detection.clone();
    now.insert(OWNER_KEY.into(), OWNER.into());
    let names: std::collections::BTreeSet<&String> = file.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter(|name| file.get(*name) != now.get(*name))
        .map(|name| match (file.get(name), now.get(name)) {
            (was, is) if was.is_none_or(is_scalar) && is.is_none_or(is_scalar) => {
                format!("{name}: {} in the file, {} now", shown(was), shown(is))
            }
            _ => format!("{name} differs"),
        })
        .collect()
}

fn is_scalar(value: &Value) -> bool {
    !value.is_array() && !value.is_object()
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "missing".to_string(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_each_fact_the_file_has_wrong() {
        let detection = json!({"nvidia_gpu_count": 8, "nvidia_gpus": [1, 2],
                               "nvidia_container_runtime_path": null, "new_fact": true});
        let table = [
            (
                json!({"nvidia_gpu_count": 8, "nvidia_gpus": [1, 2], "nvidia_container_runtime_path": null,
                    "new_fact": true, "written_by": "nvidia_gpu_facts"}),
                vec![],
            ),
            (
                json!({"nvidia_gpu_count": 4, "nvidia_gpus": [1], "nvidia_container_runtime_path": "/usr/bin/x",
                    "new_fact": true, "written_by": "nvidia_gpu_facts"}),
                vec![
                    "nvidia_container_runtime_path: \"/usr/bin/x\" in the file, null now",
                    "nvidia_gpu_count: 4 in the file, 8 now",
                    "nvidia_gpus differs",
                ],
            ),
            // An earlier release's file: no marker, no fact it did not know,
            // one it no longer writes.
            (
                json!({"nvidia_gpu_count": 8, "nvidia_gpus": [1, 2], "nvidia_container_runtime_path": null,
                    "old_fact": 1}),
                vec![
                    "new_fact: missing in the file, true now",
                    "old_fact: 1 in the file, missing now",
                    "written_by: missing in the file, \"nvidia_gpu_facts\" now",
                ],
            ),
        ];
        for (file, expected) in table {
            assert_eq!(
                differences(file.as_object().unwrap(), detection.as_object().unwrap()),
                expected,
                "{file}"
            );
        }
    }

    #[test]
    fn ansible_booleans_are_read_as_ansible_reads_them() {
        for (value, expected) in [
            (json!(true), Some(true)),
            (json!("yes"), Some(true)),
            (json!("True"), Some(true)),
            (json!(1), Some(true)),
            (json!("off"), Some(false)),
            (json!(0), Some(false)),
            (json!("maybe"), None),
            (json!([true]), None),
        ] {
            assert_eq!(ansible_bool(&value), expected, "{value}");
        }
    }

    #[test]
    fn ini_is_told_from_text_that_ansible_cannot_read() {
        assert!(looks_like_ini("# site facts\n[site]\nrack=4\n"));
        assert!(!looks_like_ini("{ not json\n"));
        assert!(!looks_like_ini(""));
    }

    #[test]
    fn a_file_with_the_marker_or_an_earlier_releases_keys_is_ours() {
        let marked = json!({"written_by": "nvidia_gpu_facts", "nvidia_gpu_count": 0});
        let earlier = json!({"nvidia_gpu_present": false, "nvidia_gpu_count": 0});
        let users = json!({"has_nvidia_gpu": true});
        let users_with_our_keys = json!({"has_nvidia_gpu": true, "nvidia_gpu_present": true});
        assert!(is_ours(marked.as_object().unwrap()));
        assert!(is_ours(earlier.as_object().unwrap()));
        assert!(!is_ours(users.as_object().unwrap()));
        assert!(!is_ours(users_with_our_keys.as_object().unwrap()));
    }
}
