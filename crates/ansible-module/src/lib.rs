//! Ansible's binary-module protocol, doing for a Rust module what Python's
//! `AnsibleModule` does for a Python one.
//!
//! Ansible runs a binary module as `MODULE ARGS_FILE`, where `ARGS_FILE` holds
//! one flat JSON object: the task's options plus `_ansible_*` keys from the
//! controller. The module must print exactly one JSON object on stdout. This
//! crate reads and validates the arguments against a declared [`ModuleSpec`],
//! runs the module body, and prints the result; any failure on the way,
//! a panic included, still ends as one JSON object with `failed: true`.
//!
//! ```no_run
//! use ansible_module::{Arg, ModuleSpec, Outcome};
//!
//! const SPEC: ModuleSpec = ModuleSpec {
//!     name: "hello",
//!     supports_check_mode: true,
//!     args: &[Arg::str("name").required()],
//!     ..ModuleSpec::BASE
//! };
//!
//! #[derive(serde::Deserialize)]
//! struct Options { name: String }
//!
//! fn main() {
//!     ansible_module::run(&SPEC, |_module, opts: Options| {
//!         Ok(Outcome::new(false).msg(format!("hello {}", opts.name)))
//!     })
//! }
//! ```

pub mod error;
pub mod fs;
pub mod params;
mod relations;
pub mod result;
pub mod spec;

pub use error::Error;
pub use params::{Controller, Params};
pub use result::{Diff, Failure, Outcome};
pub use spec::{Arg, ArgType, DefaultValue, ModuleSpec, RequiredBy, RequiredIf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::io::Write;

/// Placed where a no_log option's value would appear, as Ansible does.
pub const NO_LOG_PLACEHOLDER: &str = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER";

/// The argument that makes a module print its spec instead of running; the
/// documentation tests use it to compare the spec with `ansible-doc`.
pub const PRINT_SPEC_ARG: &str = "--argument-spec";

/// A running module: its validated parameters and what it has to say besides
/// the result.
#[derive(Debug)]
pub struct Module {
    spec: &'static ModuleSpec,
    params: Params,
    warnings: Vec<String>,
}

impl Module {
    /// Validates raw arguments (the content of the args file) against `spec`.
    pub fn new(spec: &'static ModuleSpec, args: Map<String, Value>) -> Result<Module, Error> {
        Ok(Module {
            spec,
            params: params::validate(spec, args)?,
            warnings: Vec::new(),
        })
    }

    /// True when the task runs with `--check`: the module must change nothing.
    pub fn check_mode(&self) -> bool {
        self.params.controller.check_mode
    }

    /// True when the task runs with `--diff`.
    pub fn diff_mode(&self) -> bool {
        self.params.controller.diff
    }

    pub fn name(&self) -> &str {
        self.params
            .controller
            .module_name
            .as_deref()
            .unwrap_or(self.spec.name)
    }

    /// Adds a line to the result's `warnings`, which Ansible prints in colour.
    pub fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The validated options as the module's own typed struct.
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_value(Value::Object(self.params.options.clone()))
            .map_err(Error::OptionsDoNotFit)
    }

    /// The options as Ansible echoes them in `invocation.module_args`, with
    /// no_log values masked.
    fn invocation(&self) -> Value {
        let mut args = self.params.options.clone();
        for arg in self.spec.args.iter().filter(|a| a.no_log) {
            if let Some(v) = args.get_mut(arg.name) {
                if !v.is_null() {
                    *v = NO_LOG_PLACEHOLDER.into();
                }
            }
        }
        serde_json::json!({ "module_args": args })
    }

    fn secrets(&self) -> Vec<String> {
        self.spec
            .args
            .iter()
            .filter(|a| a.no_log)
            .filter_map(|a| {
                self.params
                    .options
                    .get(a.name)?
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    /// The JSON object for a finished run.
    pub fn result_json(&self, result: Result<Outcome, Failure>) -> Value {
        let mut out = Map::new();
        match result {
            Ok(outcome) => {
                out.insert("changed".into(), outcome.changed.into());
                out.insert("failed".into(), false.into());
                if let Some(msg) = outcome.msg {
                    out.insert("msg".into(), msg.into());
                }
                if !outcome.facts.is_empty() {
                    out.insert("ansible_facts".into(), outcome.facts.into());
                }
                if self.diff_mode() && !outcome.diffs.is_empty() {
                    let diffs: Vec<Value> = outcome.diffs.iter().map(Diff::to_json).collect();
                    out.insert("diff".into(), Value::Array(diffs));
                }
                out.extend(outcome.values);
            }
            Err(failure) => {
                out.insert("changed".into(), false.into());
                out.insert("failed".into(), true.into());
                out.insert("msg".into(), failure.msg.into());
                out.extend(failure.values);
            }
        }
        if !self.warnings.is_empty() {
            out.insert("warnings".into(), self.warnings.clone().into());
        }
        out.insert("invocation".into(), self.invocation());
        let mut value = Value::Object(out);
        result::scrub(&mut value, &self.secrets());
        value
    }
}

/// Whether the result of a run is a failure, for the exit status.
fn is_failure(result: &Value) -> bool {
    result
        .get("failed")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The whole life of a module process: read the args file named by argv[1],
/// validate, run `body`, print one JSON object, exit 0 (or 1 on failure).
pub fn run<T, F>(spec: &'static ModuleSpec, body: F) -> !
where
    T: DeserializeOwned,
    F: FnOnce(&mut Module, T) -> Result<Outcome, Failure>,
{
    install_panic_hook();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(PRINT_SPEC_ARG) {
        emit(&spec.to_json(), 0)
    }
    let module = read_args(args.first().map(String::as_str)).and_then(|raw| Module::new(spec, raw));
    let mut module = match module {
        Ok(module) => module,
        Err(error) => emit(&bare_failure(&error.to_string()), 1),
    };
    if module.check_mode() && !spec.supports_check_mode {
        let skipped = serde_json::json!({
            "changed": false,
            "skipped": true,
            "msg": format!("remote module ({}) does not support check mode", module.name()),
        });
        emit(&skipped, 0)
    }
    let result = match module.options::<T>() {
        Ok(options) => body(&mut module, options),
        Err(error) => Err(error.into()),
    };
    let json = module.result_json(result);
    let code = i32::from(is_failure(&json));
    emit(&json, code)
}

/// Reads and parses the args file; the error says which of the steps failed.
fn read_args(path: Option<&str>) -> Result<Map<String, Value>, Error> {
    let path = path.ok_or(Error::NoArgsFile)?;
    let text = std::fs::read(path).map_err(|source| Error::ReadArgs {
        path: path.to_string(),
        source,
    })?;
    let found = match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(map)) => return Ok(map),
        Ok(Value::Array(_)) => "a list",
        Ok(Value::String(_)) => "a string",
        Ok(Value::Number(_)) => "a number",
        Ok(Value::Bool(_)) => "a boolean",
        Ok(Value::Null) => "null",
        Err(source) => {
            return Err(Error::ArgsNotJson {
                path: path.to_string(),
                source,
            })
        }
    };
    Err(Error::ArgsNotObject {
        path: path.to_string(),
        found,
    })
}

fn bare_failure(msg: &str) -> Value {
    serde_json::json!({ "changed": false, "failed": true, "msg": msg })
}

/// A panic must still answer with one JSON object, never a backtrace alone:
/// with `panic = "abort"` the hook runs before the abort, so the hook prints
/// the failure and exits itself.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("internal error in the module (please report it): {info}");
        emit(&bare_failure(&msg), 1)
    }));
}

/// Prints the one JSON object and exits with `code`.
fn emit(value: &Value, code: i32) -> ! {
    let mut stdout = std::io::stdout().lock();
    // Nothing can be reported if stdout itself is gone, so errors are ignored.
    let _ = serde_json::to_writer(&mut stdout, value);
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static SPEC: ModuleSpec = ModuleSpec {
        name: "demo",
        supports_check_mode: true,
        args: &[
            Arg::str("path").default_str("/x"),
            Arg::str("password").no_log(),
        ],
        ..ModuleSpec::BASE
    };

    fn module(args: Value) -> Module {
        Module::new(&SPEC, args.as_object().unwrap().clone()).unwrap()
    }

    #[test]
    fn success_carries_facts_values_and_invocation() {
        let m = module(json!({"password": "s3cret"}));
        let out = m.result_json(Ok(Outcome::new(true)
            .msg("done")
            .fact("nvidia_gpu_count", 8)
            .value("backup_file", "/x.bak")));
        assert_eq!(
            out,
            json!({
                "changed": true, "failed": false, "msg": "done",
                "ansible_facts": {"nvidia_gpu_count": 8},
                "backup_file": "/x.bak",
                "invocation": {"module_args": {"path": "/x", "password": NO_LOG_PLACEHOLDER}},
            })
        );
    }

    #[test]
    fn no_log_values_are_scrubbed_from_messages() {
        let m = module(json!({"password": "s3cret"}));
        let out = m.result_json(Err(Failure::new("login with s3cret refused")));
        assert_eq!(out["msg"], json!("login with ******** refused"));
        assert_eq!(out["failed"], json!(true));
    }

    #[test]
    fn diff_is_returned_only_when_asked_for() {
        let diff = Diff::of_file("/etc/f", None, b"new\n");
        let quiet = module(json!({})).result_json(Ok(Outcome::new(true).diff(diff.clone())));
        assert!(quiet.get("diff").is_none());
        let asked =
            module(json!({"_ansible_diff": true})).result_json(Ok(Outcome::new(true).diff(diff)));
        assert_eq!(
            asked["diff"],
            json!([{"before": "", "after": "new\n", "before_header": "/etc/f (absent)", "after_header": "/etc/f"}])
        );
    }

    #[test]
    fn warnings_are_listed() {
        let mut m = module(json!({}));
        m.warn("cannot read numa_node");
        let out = m.result_json(Ok(Outcome::new(false)));
        assert_eq!(out["warnings"], json!(["cannot read numa_node"]));
    }

    #[test]
    fn args_file_problems_name_the_file_and_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("ansible-module-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        let list = file("list.json", "[1]");
        let broken = file("broken.json", "{");
        let ok = file("ok.json", r#"{"path": "/y"}"#);
        assert!(matches!(read_args(None), Err(Error::NoArgsFile)));
        assert_eq!(
            read_args(Some(&list)).unwrap_err().to_string(),
            format!("the arguments file {list} must hold a JSON object of options, not a list")
        );
        let err = read_args(Some(&broken)).unwrap_err();
        assert!(
            matches!(&err, Error::ArgsNotJson { path, .. } if *path == broken),
            "{err}"
        );
        assert!(matches!(
            read_args(Some("/nonexistent/args")),
            Err(Error::ReadArgs { path, .. }) if path == "/nonexistent/args"
        ));
        assert_eq!(read_args(Some(&ok)).unwrap()["path"], json!("/y"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_error_becomes_a_failure_with_its_message() {
        let failure = Failure::from(Error::MissingRequired(vec!["version".into()]));
        assert_eq!(failure.msg, "missing required arguments: version");
    }

    #[test]
    fn spec_json_lists_every_option() {
        let spec = SPEC.to_json();
        assert_eq!(
            spec["options"]["path"],
            json!({"type": "str", "required": false, "default": "/x"})
        );
        assert_eq!(spec["options"]["password"]["no_log"], json!(true));
    }
}
