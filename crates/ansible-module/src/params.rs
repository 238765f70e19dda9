//! Validation of the args file against the module's spec, with the same
//! coercions and messages as Python's `AnsibleModule`, so that a task written
//! `-a nvidia_runtime=yes` (a string) works and a typo fails the same way it
//! would for any built-in module.

use crate::error::Error;
use crate::relations;
use crate::spec::{Arg, ArgType, ModuleSpec};
use serde_json::{Map, Value};

/// The `_ansible_*` keys the controller adds to every args file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Controller {
    pub check_mode: bool,
    pub diff: bool,
    pub no_log: bool,
    pub verbosity: u64,
    /// The name the task used (`nvidia_gpu_facts` or a fully qualified one).
    pub module_name: Option<String>,
    pub ignore_unknown_opts: bool,
}

/// The task's options after validation: every option of the spec is present,
/// defaults filled in, values converted to their declared types.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub options: Map<String, Value>,
    pub controller: Controller,
}

/// Validates the args object, in `AnsibleModule`'s order (unknown options,
/// mutually exclusive ones, required ones, types and choices, then the other
/// relationships on the options with their defaults filled in), so the first
/// problem reported is the one Ansible would report. The error is the message
/// for `msg`.
pub fn validate(spec: &ModuleSpec, args: Map<String, Value>) -> Result<Params, Error> {
    let (controller, mut given) = split_controller_keys(args)?;
    let name = controller.module_name.as_deref().unwrap_or(spec.name);
    if !controller.ignore_unknown_opts {
        check_unknown(spec, name, &given)?;
    }
    // Ansible checks this one before defaults are set: a default never
    // conflicts with a given option.
    relations::check_mutually_exclusive(spec, &given)?;
    check_required(spec, &given)?;

    let mut options = Map::new();
    for arg in spec.args {
        let value = match given.remove(arg.name) {
            Some(Value::Null) | None => arg.default.map_or(Value::Null, |d| d.to_json()),
            Some(v) => convert(arg, v)?,
        };
        check_choice(arg, &value)?;
        options.insert(arg.name.to_string(), value);
    }
    relations::check_after_defaults(spec, &options)?;
    Ok(Params {
        options,
        controller,
    })
}

/// Separates the controller's `_ansible_*` keys from the task's options.
fn split_controller_keys(
    args: Map<String, Value>,
) -> Result<(Controller, Map<String, Value>), Error> {
    let mut controller = Controller::default();
    let mut given = Map::new();
    for (key, value) in args {
        match key.strip_prefix("_ansible_") {
            Some(internal) => read_controller_key(&mut controller, internal, &value)?,
            None => {
                given.insert(key, value);
            }
        }
    }
    Ok((controller, given))
}

fn check_unknown(spec: &ModuleSpec, name: &str, given: &Map<String, Value>) -> Result<(), Error> {
    let mut unknown: Vec<String> = given
        .keys()
        .filter(|k| spec.arg(k).is_none())
        .cloned()
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    let mut supported: Vec<String> = spec.args.iter().map(|a| a.name.to_string()).collect();
    supported.sort_unstable();
    Err(Error::Unsupported {
        module: name.to_string(),
        unknown,
        supported,
    })
}

fn check_required(spec: &ModuleSpec, given: &Map<String, Value>) -> Result<(), Error> {
    let missing: Vec<String> = spec
        .args
        .iter()
        .filter(|a| a.required && !relations::is_set(given, a.name))
        .map(|a| a.name.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::MissingRequired(missing))
}

/// Reads one `_ansible_*` key. The flags fail closed: a value that is not a
/// boolean is an error, never "false" (a check-mode flag of `"maybe"` read as
/// false would run for real).
fn read_controller_key(c: &mut Controller, key: &str, value: &Value) -> Result<(), Error> {
    let flag = || {
        to_bool(value).map_err(|why| Error::ControllerFlag {
            key: key.to_string(),
            why,
        })
    };
    match key {
        "check_mode" => c.check_mode = flag()?,
        "diff" => c.diff = flag()?,
        "no_log" => c.no_log = flag()?,
        "ignore_unknown_opts" => c.ignore_unknown_opts = flag()?,
        "verbosity" => {
            c.verbosity = value
                .as_u64()
                .ok_or_else(|| Error::Verbosity(value.clone()))?
        }
        "module_name" => c.module_name = value.as_str().map(str::to_string),
        // The others (_ansible_tmpdir, _ansible_version, ...) mean nothing to a
        // module that runs no Python; Ansible modules accept them silently too.
        _ => {}
    }
    Ok(())
}

fn check_choice(arg: &Arg, value: &Value) -> Result<(), Error> {
    if arg.choices.is_empty() || value.is_null() {
        return Ok(());
    }
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if arg.choices.contains(&text.as_str()) {
        return Ok(());
    }
    Err(Error::NotAChoice {
        option: arg.name.to_string(),
        choices: arg.choices,
        got: text,
    })
}

/// Converts one given value to the option's type, or says why it cannot.
fn convert(arg: &Arg, value: Value) -> Result<Value, Error> {
    let converted = match arg.ty {
        ArgType::Str => to_str(&value).map(Value::String),
        ArgType::Path => to_str(&value).map(|s| Value::String(expand_home(&s))),
        ArgType::Bool => to_bool(&value).map(Value::Bool),
        ArgType::Int => to_int(&value).map(Value::from),
        ArgType::List => to_list(value.clone()),
        ArgType::Dict => to_dict(value.clone()),
        ArgType::Raw => Ok(value.clone()),
    };
    converted.map_err(|why| Error::Conversion {
        option: arg.name.to_string(),
        given: json_type_name(&value),
        wanted: arg.ty.name(),
        why,
    })
}

/// The Python type name Ansible would print for this JSON value.
fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn to_str(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(if *b { "True" } else { "False" }.to_string()),
        other => Err(format!("'{other}' is not a string")),
    }
}

const TRUE_WORDS: [&str; 6] = ["y", "yes", "on", "1", "true", "t"];
const FALSE_WORDS: [&str; 6] = ["n", "no", "off", "0", "false", "f"];

pub(crate) fn to_bool(v: &Value) -> Result<bool, String> {
    let word = match v {
        Value::Bool(b) => return Ok(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => return Ok(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => return Ok(false),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => other.to_string(),
    };
    if TRUE_WORDS.contains(&word.as_str()) {
        Ok(true)
    } else if FALSE_WORDS.contains(&word.as_str()) {
        Ok(false)
    } else {
        Err(format!(
            "The value '{word}' is not a valid boolean. Valid booleans include: {}",
            TRUE_WORDS
                .iter()
                .chain(FALSE_WORDS.iter())
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

fn to_int(v: &Value) -> Result<i64, String> {
    let parsed = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("\"{v}\" cannot be converted to an int"))
}

fn to_list(v: Value) -> Result<Value, String> {
    let items = match v {
        Value::Array(items) => items,
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => s.split(',').map(|p| Value::String(p.to_string())).collect(),
        Value::Number(n) => vec![Value::String(n.to_string())],
        other => {
            return Err(format!(
                "{} cannot be converted to a list",
                json_type_name(&other)
            ))
        }
    };
    // Our lists are lists of strings (`elements: str`), as Ansible converts them.
    items
        .into_iter()
        .map(|item| to_str(&item).map(Value::String))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn to_dict(v: Value) -> Result<Value, String> {
    match v {
        Value::Object(_) => Ok(v),
        Value::String(s) if s.trim_start().starts_with('{') => serde_json::from_str(&s)
            .map_err(|e| format!("dictionary requested, could not parse JSON: {e}")),
        Value::String(s) => {
            let mut map = Map::new();
            for pair in s.split_whitespace() {
                let (k, val) = pair.split_once('=').ok_or_else(|| {
                    "dictionary requested, could not parse JSON or key=value".to_string()
                })?;
                map.insert(k.to_string(), Value::String(val.to_string()));
            }
            Ok(Value::Object(map))
        }
        other => Err(format!(
            "{} cannot be converted to a dict",
            json_type_name(&other)
        )),
    }
}

/// Expands a leading `~` or `~/` with `$HOME`, like Ansible's `type: path`.
fn expand_home(path: &str) -> String {
    let rest = match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return path.to_string(),
    };
    match std::env::var("HOME") {
        Ok(home) => format!("{home}{rest}"),
        Err(_) => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Arg;
    use serde_json::json;

    const SPEC: ModuleSpec = ModuleSpec {
        name: "demo",
        supports_check_mode: true,
        args: &[
            Arg::path("path").default_str("/etc/x.toml"),
            Arg::bool("enabled").required(),
            Arg::int("retries").default_int(3),
            Arg::str("mode")
                .default_str("merge")
                .choices(&["merge", "template"]),
            Arg::list("extra_args"),
            Arg::dict("vars"),
            Arg::str("token").no_log(),
        ],
        ..ModuleSpec::BASE
    };

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_fill_every_option_left_out() {
        let p = validate(&SPEC, args(json!({"enabled": true}))).unwrap();
        assert_eq!(
            Value::Object(p.options),
            json!({"path": "/etc/x.toml", "enabled": true, "retries": 3, "mode": "merge",
                   "extra_args": null, "vars": null, "token": null})
        );
    }

    #[test]
    fn strings_from_ad_hoc_args_are_converted_like_ansible_does() {
        let p = validate(
            &SPEC,
            args(json!({"enabled": "yes", "retries": "5", "extra_args": "--a,--b", "vars": "k=v x=y"})),
        )
        .unwrap();
        assert_eq!(p.options["enabled"], json!(true));
        assert_eq!(p.options["retries"], json!(5));
        assert_eq!(p.options["extra_args"], json!(["--a", "--b"]));
        assert_eq!(p.options["vars"], json!({"k": "v", "x": "y"}));
    }

    #[test]
    fn unknown_option_names_the_module_and_lists_supported_ones() {
        let err = validate(
            &SPEC,
            args(json!({"enabled": true, "colour": "red", "_ansible_module_name": "demo_mod"})),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "Unsupported parameters for (demo_mod) module: colour. Supported parameters include: \
             enabled, extra_args, mode, path, retries, token, vars."
        );
    }

    #[test]
    fn ignore_unknown_opts_lets_unknown_options_through() {
        let p = validate(
            &SPEC,
            args(json!({"enabled": true, "colour": "red", "_ansible_ignore_unknown_opts": true})),
        )
        .unwrap();
        assert!(!p.options.contains_key("colour"));
    }

    #[test]
    fn missing_required_option_is_named() {
        let err = validate(&SPEC, args(json!({}))).unwrap_err().to_string();
        assert_eq!(err, "missing required arguments: enabled");
        let err = validate(&SPEC, args(json!({"enabled": null})))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "missing required arguments: enabled");
    }

    #[test]
    fn wrong_type_names_the_option_and_the_wanted_type() {
        let err = validate(&SPEC, args(json!({"enabled": "maybe"})))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "argument 'enabled' is of type str and we were unable to convert to bool: \
                 The value 'maybe' is not a valid boolean."
            ),
            "{err}"
        );
        let err = validate(&SPEC, args(json!({"enabled": true, "retries": "many"})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "argument 'retries' is of type str and we were unable to convert to int: \
             \"\"many\"\" cannot be converted to an int"
        );
        let err = validate(&SPEC, args(json!({"enabled": true, "path": ["a"]})))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("argument 'path' is of type list"), "{err}");
    }

    #[test]
    fn value_outside_choices_is_refused() {
        let err = validate(&SPEC, args(json!({"enabled": true, "mode": "replace"})))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "value of mode must be one of: merge, template, got: replace"
        );
    }

    #[test]
    fn controller_keys_are_read_and_not_treated_as_options() {
        let p = validate(
            &SPEC,
            args(json!({"enabled": true, "_ansible_check_mode": true, "_ansible_diff": "yes",
                        "_ansible_verbosity": 3, "_ansible_tmpdir": "/tmp/x", "_ansible_version": "2.19"})),
        )
        .unwrap();
        assert!(p.controller.check_mode);
        assert!(p.controller.diff);
        assert_eq!(p.controller.verbosity, 3);
        assert_eq!(p.options.len(), SPEC.args.len());
    }

    #[test]
    fn internal_flags_that_are_not_booleans_fail_closed() {
        for (key, value) in [
            ("_ansible_check_mode", json!("maybe")),
            ("_ansible_check_mode", json!(null)),
            ("_ansible_check_mode", json!([true])),
            ("_ansible_check_mode", json!(2)),
            ("_ansible_diff", json!({})),
            ("_ansible_no_log", json!("sometimes")),
            ("_ansible_ignore_unknown_opts", json!("perhaps")),
            ("_ansible_verbosity", json!("loud")),
        ] {
            let mut a = args(json!({"enabled": true}));
            a.insert(key.to_string(), value.clone());
            let err = validate(&SPEC, a)
                .expect_err(&format!("{key}={value} must be refused"))
                .to_string();
            assert!(err.starts_with(&format!("{key} must be")), "{err}");
        }
    }

    #[test]
    fn home_is_expanded_in_paths_only_at_the_start() {
        std::env::set_var("HOME", "/home/op");
        assert_eq!(expand_home("~/x"), "/home/op/x");
        assert_eq!(expand_home("~"), "/home/op");
        assert_eq!(expand_home("/a/~b"), "/a/~b");
        assert_eq!(expand_home("~other/x"), "~other/x");
    }
}
