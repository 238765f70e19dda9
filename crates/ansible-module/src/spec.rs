//! The argument spec: one declaration per module that says which options exist,
//! their types, defaults and choices. It is the single source of truth that
//! `params::validate` enforces, the way `AnsibleModule(argument_spec=...)` is for
//! Python modules; the module body never re-validates.

/// The option types Ansible's argument spec knows, as far as our modules need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgType {
    Str,
    Bool,
    Int,
    /// A string with a leading `~` expanded, like Ansible's `type: path`.
    Path,
    /// A list of strings; a comma-separated string is split, as Ansible does.
    List,
    /// A mapping; a JSON string or `k=v k2=v2` is parsed, as Ansible does.
    Dict,
    /// Any JSON value, unchecked.
    Raw,
}

impl ArgType {
    /// The name Ansible's documentation uses for this type.
    pub const fn name(self) -> &'static str {
        match self {
            ArgType::Str => "str",
            ArgType::Bool => "bool",
            ArgType::Int => "int",
            ArgType::Path => "path",
            ArgType::List => "list",
            ArgType::Dict => "dict",
            ArgType::Raw => "raw",
        }
    }
}

/// A default value, given when the task leaves an option out (or sets it to null).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DefaultValue {
    Bool(bool),
    Int(i64),
    Str(&'static str),
    EmptyList,
    EmptyDict,
}

impl DefaultValue {
    pub fn to_json(self) -> serde_json::Value {
        match self {
            DefaultValue::Bool(b) => b.into(),
            DefaultValue::Int(i) => i.into(),
            DefaultValue::Str(s) => s.into(),
            DefaultValue::EmptyList => serde_json::Value::Array(Vec::new()),
            DefaultValue::EmptyDict => serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

/// One option of a module.
#[derive(Clone, Copy, Debug)]
pub struct Arg {
    pub name: &'static str,
    pub ty: ArgType,
    pub required: bool,
    pub default: Option<DefaultValue>,
    pub choices: &'static [&'static str],
    /// Masked in `invocation.module_args` and never echoed back.
    pub no_log: bool,
}

impl Arg {
    pub const fn new(name: &'static str, ty: ArgType) -> Arg {
        Arg {
            name,
            ty,
            required: false,
            default: None,
            choices: &[],
            no_log: false,
        }
    }
    pub const fn str(name: &'static str) -> Arg {
        Arg::new(name, ArgType::Str)
    }
    pub const fn bool(name: &'static str) -> Arg {
        Arg::new(name, ArgType::Bool)
    }
    pub const fn int(name: &'static str) -> Arg {
        Arg::new(name, ArgType::Int)
    }
    pub const fn path(name: &'static str) -> Arg {
        Arg::new(name, ArgType::Path)
    }
    pub const fn list(name: &'static str) -> Arg {
        Arg::new(name, ArgType::List)
    }
    pub const fn dict(name: &'static str) -> Arg {
        Arg::new(name, ArgType::Dict)
    }
    pub const fn required(mut self) -> Arg {
        self.required = true;
        self
    }
    pub const fn default(mut self, value: DefaultValue) -> Arg {
        self.default = Some(value);
        self
    }
    pub const fn default_str(self, value: &'static str) -> Arg {
        self.default(DefaultValue::Str(value))
    }
    pub const fn default_bool(self, value: bool) -> Arg {
        self.default(DefaultValue::Bool(value))
    }
    pub const fn default_int(self, value: i64) -> Arg {
        self.default(DefaultValue::Int(value))
    }
    pub const fn choices(mut self, choices: &'static [&'static str]) -> Arg {
        self.choices = choices;
        self
    }
    pub const fn no_log(mut self) -> Arg {
        self.no_log = true;
        self
    }
}

/// Everything Ansible needs to know about a module before it runs.
#[derive(Clone, Copy, Debug)]
pub struct ModuleSpec {
    /// The module's name, used in messages when the controller does not send one.
    pub name: &'static str,
    /// A module that cannot honour check mode answers `skipped` instead of running.
    pub supports_check_mode: bool,
    pub args: &'static [Arg],
}

impl ModuleSpec {
    pub fn arg(&self, name: &str) -> Option<&Arg> {
        self.args.iter().find(|a| a.name == name)
    }

    /// The spec as JSON, in the shape of Ansible's `argument_spec`; used by the
    /// tests that compare it with the module's `ansible-doc` sidecar.
    pub fn to_json(&self) -> serde_json::Value {
        let mut options = serde_json::Map::new();
        for arg in self.args {
            let mut o = serde_json::Map::new();
            o.insert("type".into(), arg.ty.name().into());
            o.insert("required".into(), arg.required.into());
            if let Some(d) = arg.default {
                o.insert("default".into(), d.to_json());
            }
            if !arg.choices.is_empty() {
                o.insert("choices".into(), arg.choices.to_vec().into());
            }
            if arg.no_log {
                o.insert("no_log".into(), true.into());
            }
            options.insert(arg.name.into(), o.into());
        }
        serde_json::json!({
            "module": self.name,
            "supports_check_mode": self.supports_check_mode,
            "options": options,
        })
    }
}
