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

/// `required_if`: when `option` equals `value`, the options in `requires` must
/// be set (all of them, or at least one with [`RequiredIf::any`], Ansible's
/// `is_one_of`).
#[derive(Clone, Copy, Debug)]
pub struct RequiredIf {
    pub option: &'static str,
    pub value: DefaultValue,
    pub requires: &'static [&'static str],
    pub any: bool,
}

impl RequiredIf {
    pub const fn new(
        option: &'static str,
        value: DefaultValue,
        requires: &'static [&'static str],
    ) -> RequiredIf {
        RequiredIf {
            option,
            value,
            requires,
            any: false,
        }
    }
    /// The common case: a string option (usually `state`) has a given value.
    pub const fn str(
        option: &'static str,
        value: &'static str,
        requires: &'static [&'static str],
    ) -> RequiredIf {
        RequiredIf::new(option, DefaultValue::Str(value), requires)
    }
    /// One of `requires` is enough (Ansible's fourth element, `is_one_of`).
    pub const fn any(mut self) -> RequiredIf {
        self.any = true;
        self
    }
    /// The value as Ansible prints it in its message (`True`, not `true`).
    pub fn value_text(&self) -> String {
        match self.value {
            DefaultValue::Str(s) => s.to_string(),
            DefaultValue::Bool(true) => "True".into(),
            DefaultValue::Bool(false) => "False".into(),
            other => other.to_json().to_string(),
        }
    }
}

/// `required_by`: when `option` is set, every option in `requires` must be set.
#[derive(Clone, Copy, Debug)]
pub struct RequiredBy {
    pub option: &'static str,
    pub requires: &'static [&'static str],
}

/// A group of option names, as in `mutually_exclusive=[["a", "b"]]`.
pub type Group = &'static [&'static str];

/// Everything Ansible needs to know about a module before it runs.
///
/// Write a spec as `ModuleSpec { name, args, ..ModuleSpec::BASE }` so the
/// relationships a module does not use stay out of its declaration.
#[derive(Clone, Copy, Debug)]
pub struct ModuleSpec {
    /// The module's name, used in messages when the controller does not send one.
    pub name: &'static str,
    /// A module that cannot honour check mode answers `skipped` instead of running.
    pub supports_check_mode: bool,
    pub args: &'static [Arg],
    /// At most one option of each group may be given.
    pub mutually_exclusive: &'static [Group],
    /// If one option of a group is set, all of the group must be.
    pub required_together: &'static [Group],
    /// At least one option of each group must be set.
    pub required_one_of: &'static [Group],
    pub required_if: &'static [RequiredIf],
    pub required_by: &'static [RequiredBy],
}

impl ModuleSpec {
    /// An empty spec to fill with struct-update syntax.
    pub const BASE: ModuleSpec = ModuleSpec {
        name: "",
        supports_check_mode: true,
        args: &[],
        mutually_exclusive: &[],
        required_together: &[],
        required_one_of: &[],
        required_if: &[],
        required_by: &[],
    };

    pub fn arg(&self, name: &str) -> Option<&Arg> {
        self.args.iter().find(|a| a.name == name)
    }

    /// The spec as JSON, in the shape of Ansible's `argument_spec` plus the
    /// relationship keywords `AnsibleModule` takes; used by the tests that
    /// compare it with the module's `ansible-doc` sidecar.
    pub fn to_json(&self) -> serde_json::Value {
        let mut options = serde_json::Map::new();
        for arg in self.args {
            options.insert(arg.name.into(), arg.to_json());
        }
        let required_if: Vec<serde_json::Value> = self
            .required_if
            .iter()
            .map(|r| {
                let mut rule = vec![r.option.into(), r.value.to_json(), r.requires.into()];
                if r.any {
                    rule.push(true.into());
                }
                serde_json::Value::Array(rule)
            })
            .collect();
        let required_by: serde_json::Map<String, serde_json::Value> = self
            .required_by
            .iter()
            .map(|r| (r.option.to_string(), r.requires.into()))
            .collect();
        serde_json::json!({
            "module": self.name,
            "supports_check_mode": self.supports_check_mode,
            "options": options,
            "mutually_exclusive": self.mutually_exclusive,
            "required_together": self.required_together,
            "required_one_of": self.required_one_of,
            "required_if": required_if,
            "required_by": required_by,
        })
    }
}

impl Arg {
    /// One option as an entry of Ansible's `argument_spec`.
    fn to_json(self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        o.insert("type".into(), self.ty.name().into());
        o.insert("required".into(), self.required.into());
        if let Some(d) = self.default {
            o.insert("default".into(), d.to_json());
        }
        if !self.choices.is_empty() {
            o.insert("choices".into(), self.choices.to_vec().into());
        }
        if self.no_log {
            o.insert("no_log".into(), true.into());
        }
        o.into()
    }
}
