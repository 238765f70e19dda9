//! What a module returns: one JSON object on stdout, in the shape Ansible's
//! controller and callbacks expect.

use serde_json::{Map, Value};

/// A `--diff` entry: the text before and after, with a header naming each side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diff {
    pub before: String,
    pub after: String,
    pub before_header: String,
    pub after_header: String,
}

impl Diff {
    /// The diff of one file's content, with the file's path as both headers.
    pub fn of_file(path: &str, before: Option<&[u8]>, after: &[u8]) -> Diff {
        Diff {
            before: before.map(lossy).unwrap_or_default(),
            after: lossy(after),
            before_header: if before.is_some() {
                path.to_string()
            } else {
                format!("{path} (absent)")
            },
            after_header: path.to_string(),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "before": self.before,
            "after": self.after,
            "before_header": self.before_header,
            "after_header": self.after_header,
        })
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A successful run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub changed: bool,
    pub msg: Option<String>,
    /// Goes to `ansible_facts`: Ansible sets these as host facts.
    pub facts: Map<String, Value>,
    /// One entry per file the module changed (or would change, in check mode).
    pub diffs: Vec<Diff>,
    /// The module's own return values, at the top level of the result.
    pub values: Map<String, Value>,
}

impl Outcome {
    pub fn new(changed: bool) -> Outcome {
        Outcome {
            changed,
            ..Outcome::default()
        }
    }
    pub fn msg(mut self, msg: impl Into<String>) -> Outcome {
        self.msg = Some(msg.into());
        self
    }
    pub fn fact(mut self, name: &str, value: impl Into<Value>) -> Outcome {
        self.facts.insert(name.to_string(), value.into());
        self
    }
    pub fn value(mut self, name: &str, value: impl Into<Value>) -> Outcome {
        self.values.insert(name.to_string(), value.into());
        self
    }
    pub fn diff(mut self, diff: Diff) -> Outcome {
        self.diffs.push(diff);
        self
    }
}

/// A failed run: `failed: true`, the message, and whatever helps the reader
/// (an exit status, the tail of a log).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Failure {
    pub msg: String,
    pub values: Map<String, Value>,
}

impl Failure {
    pub fn new(msg: impl Into<String>) -> Failure {
        Failure {
            msg: msg.into(),
            values: Map::new(),
        }
    }
    pub fn value(mut self, name: &str, value: impl Into<Value>) -> Failure {
        self.values.insert(name.to_string(), value.into());
        self
    }
}

impl From<String> for Failure {
    fn from(msg: String) -> Failure {
        Failure::new(msg)
    }
}

impl From<&str> for Failure {
    fn from(msg: &str) -> Failure {
        Failure::new(msg)
    }
}

/// Replaces every occurrence of each secret in every string of `value`, as
/// Ansible's `remove_values` does, so a no_log option never leaks through a
/// message that happens to quote it.
pub(crate) fn scrub(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(s) => {
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                if s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), "********");
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub(v, secrets)),
        _ => {}
    }
}
