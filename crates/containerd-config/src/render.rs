//! Whole configs from Jinja templates, rendered the way Ansible's `template`
//! module does (`trim_blocks` on, the trailing newline kept), but strict: an
//! undefined variable is an error naming the line, never an empty string in
//! a config.

use crate::error::Error;
use crate::version::ConfigVersion;
use crate::Wanted;
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use std::collections::BTreeMap;

/// The task's extra template variables (`template_vars`).
pub type TemplateVars = serde_json::Map<String, serde_json::Value>;

/// The variables the module gives every template; `template_vars` may not
/// redefine them.
pub const MODULE_VARIABLES: &[&str] = &[
    "nvidia_runtime",
    "set_as_default",
    "runtime_name",
    "runtime_path",
    "systemd_cgroup",
    "config_version",
    "cri_plugin",
];

/// The role's templates, compiled in so that the module and the role can
/// never disagree on the default config.
const NVIDIA_TEMPLATE: (&str, &str) = (
    "containerd_nvidia.j2",
    include_str!("../../../roles/install_containerd/templates/containerd_nvidia.j2"),
);
const STANDARD_TEMPLATE: (&str, &str) = (
    "containerd_config.toml.j2",
    include_str!("../../../roles/install_containerd/templates/containerd_config.toml.j2"),
);

/// The built-in template for a node, as (name, text): `containerd_nvidia.j2`
/// for GPU nodes, `containerd_config.toml.j2` for the others.
pub fn builtin_template(nvidia_runtime: bool) -> (&'static str, &'static str) {
    if nvidia_runtime {
        NVIDIA_TEMPLATE
    } else {
        STANDARD_TEMPLATE
    }
}

/// Renders `source` with the module's variables and `vars`.
///
/// Besides minijinja's built-in filters, templates get a `toml` filter that
/// writes any value as a TOML value (quoted and escaped string, list, inline
/// table), and a `fail(message)` function for combinations a template
/// cannot express.
pub fn render(
    name: &str,
    source: &str,
    wanted: &Wanted,
    version: ConfigVersion,
    vars: &TemplateVars,
) -> Result<String, Error> {
    if let Some(clash) = vars.keys().find(|k| MODULE_VARIABLES.contains(&k.as_str())) {
        return Err(Error::Invalid(format!(
            "template_vars must not set {clash}: the module sets it from its own option"
        )));
    }
    let mut context: BTreeMap<String, Value> = vars
        .iter()
        .map(|(k, v)| (k.clone(), from_json(v)))
        .collect();
    context.insert("nvidia_runtime".into(), wanted.nvidia_runtime.into());
    context.insert("set_as_default".into(), wanted.set_as_default.into());
    context.insert("runtime_name".into(), wanted.runtime_name.as_str().into());
    context.insert("runtime_path".into(), wanted.runtime_path.as_str().into());
    context.insert("systemd_cgroup".into(), wanted.systemd_cgroup.into());
    context.insert("config_version".into(), version.number().into());
    context.insert("cri_plugin".into(), version.cri_runtime_plugin().into());
    if let Some(cdi) = wanted.enable_cdi {
        if vars.contains_key("enable_cdi") {
            return Err(Error::Invalid(
                "enable_cdi is both an option and in template_vars: set it once".into(),
            ));
        }
        context.insert("enable_cdi".into(), cdi.into());
    }

    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.add_filter("toml", toml_filter);
    env.add_function("fail", fail);
    let failed = |e: minijinja::Error| template_error(name, source, &e);
    let template = env.template_from_named_str(name, source).map_err(failed)?;
    template.render(Value::from(context)).map_err(failed)
}

fn template_error(name: &str, source: &str, err: &minijinja::Error) -> Error {
    let mut message = match err.detail() {
        Some(detail) if err.kind() == ErrorKind::InvalidOperation => detail.to_string(),
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    // A filter's own error is the cause of the one reported.
    let mut cause = std::error::Error::source(err);
    while let Some(inner) = cause {
        message.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    let line = err.line();
    Error::Template {
        name: name.to_string(),
        line,
        source_line: line.and_then(|n| source.lines().nth(n.checked_sub(1)?).map(str::to_string)),
        message,
    }
}

fn toml_filter(value: Value) -> Result<String, minijinja::Error> {
    Ok(to_toml(&value)?.to_string())
}

fn fail(message: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn to_toml(value: &Value) -> Result<toml_edit::Value, minijinja::Error> {
    let unsupported = |what: &str| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("the toml filter cannot write {what} as a TOML value"),
        )
    };
    Ok(match value.kind() {
        ValueKind::Bool => value.is_true().into(),
        ValueKind::Number => match value.as_i64() {
            Some(i) => i.into(),
            None => f64::try_from(value.clone())?.into(),
        },
        ValueKind::String => value.as_str().unwrap_or_default().into(),
        ValueKind::Seq | ValueKind::Iterable => {
            let mut array = toml_edit::Array::new();
            for item in value.try_iter()? {
                array.push(to_toml(&item)?);
            }
            array.into()
        }
        ValueKind::Map => {
            let mut table = toml_edit::InlineTable::new();
            for key in value.try_iter()? {
                let name = key
                    .as_str()
                    .ok_or_else(|| unsupported("a map with non-string keys"))?;
                table.insert(name, to_toml(&value.get_item(&key)?)?);
            }
            table.into()
        }
        ValueKind::Undefined => return Err(minijinja::Error::from(ErrorKind::UndefinedError)),
        ValueKind::None => return Err(unsupported("none")),
        _ => return Err(unsupported("this value")),
    })
}

fn from_json(value: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match value {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::from(items.iter().map(from_json).collect::<Vec<_>>()),
        Json::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), from_json(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: serde_json::Value) -> TemplateVars {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_toml_filter_quotes_and_escapes() {
        let out = render(
            "t",
            "a = {{ s | toml }}\nb = {{ l | toml }}\nc = {{ m | toml }}\nd = {{ systemd_cgroup | toml }}\n",
            &Wanted::nvidia(),
            ConfigVersion::V2,
            &vars(json!({"s": "say \"hi\"\\", "l": ["x", 1], "m": {"k": true}})),
        )
        .unwrap();
        assert_eq!(
            out,
            "a = 'say \"hi\"\\'\nb = [\"x\", 1]\nc = { k = true }\nd = true\n"
        );
    }

    #[test]
    fn an_undefined_variable_names_the_template_line() {
        let err = render(
            "mine.j2",
            "version = 2\nsandbox_image = {{ sandbx_image | toml }}\n",
            &Wanted::nvidia(),
            ConfigVersion::V2,
            &TemplateVars::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "template mine.j2, line 2 (`sandbox_image = {{ sandbx_image | toml }}`): undefined value"
        );
    }

    #[test]
    fn a_syntax_error_names_the_template_line() {
        let err = render(
            "mine.j2",
            "version = 2\n{% if nvidia_runtime %}\nx = 1\n",
            &Wanted::nvidia(),
            ConfigVersion::V2,
            &TemplateVars::new(),
        )
        .unwrap_err();
        let Error::Template { line, message, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(line.is_some(), "{err}");
        assert!(message.starts_with("syntax error"), "{err}");
    }

    #[test]
    fn template_vars_cannot_override_the_modules_own() {
        let err = render(
            "t",
            "",
            &Wanted::nvidia(),
            ConfigVersion::V2,
            &vars(json!({"runtime_path": "/x"})),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "template_vars must not set runtime_path: the module sets it from its own option"
        );
    }

    #[test]
    fn fail_stops_rendering_with_its_message() {
        let err = render(
            "t",
            "a\n{{ fail(\"mirrors need version 2\") }}\n",
            &Wanted::nvidia(),
            ConfigVersion::V3,
            &TemplateVars::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "template t, line 2 (`{{ fail(\"mirrors need version 2\") }}`): mirrors need version 2"
        );
    }
}
