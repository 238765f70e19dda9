//! Why a module could not start: the args file, the controller's keys, or the
//! task's options. The texts are ansible-core's (`AnsibleModule` and
//! `module_utils/common/validation.py`) where it has one, so a task fails
//! with the message an operator already knows from built-in modules.

use crate::result::Failure;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no arguments file given: this is an Ansible module, run by Ansible as \
         `MODULE ARGS_FILE` where ARGS_FILE holds the task's options as a JSON object"
    )]
    NoArgsFile,
    #[error("cannot read the arguments file {path}: {source}")]
    ReadArgs {
        path: String,
        source: std::io::Error,
    },
    #[error("the arguments file {path} is not valid JSON: {source}")]
    ArgsNotJson {
        path: String,
        source: serde_json::Error,
    },
    /// `found` is "a list", "a string", ...
    #[error("the arguments file {path} must hold a JSON object of options, not {found}")]
    ArgsNotObject { path: String, found: &'static str },
    /// A `_ansible_*` flag that is not a boolean (`key` without the prefix).
    #[error("_ansible_{key} must be a boolean: {why}")]
    ControllerFlag { key: String, why: String },
    #[error("_ansible_verbosity must be a whole number of 0 or more, not {0}")]
    Verbosity(Value),
    #[error(
        "Unsupported parameters for ({module}) module: {}. Supported parameters include: {}.",
        unknown.join(", "),
        supported.join(", ")
    )]
    Unsupported {
        module: String,
        unknown: Vec<String>,
        supported: Vec<String>,
    },
    #[error("missing required arguments: {}", .0.join(", "))]
    MissingRequired(Vec<String>),
    /// `given` is the Python type name Ansible prints (`str`, `list`, ...).
    #[error(
        "argument '{option}' is of type {given} and we were unable to convert to {wanted}: {why}"
    )]
    Conversion {
        option: String,
        given: &'static str,
        wanted: &'static str,
        why: String,
    },
    #[error("value of {option} must be one of: {}, got: {got}", choices.join(", "))]
    NotAChoice {
        option: String,
        choices: &'static [&'static str],
        got: String,
    },
    /// Each group as `a|b`.
    #[error("parameters are mutually exclusive: {}", .0.join(", "))]
    MutuallyExclusive(Vec<String>),
    #[error("parameters are required together: {}", .0.join(", "))]
    RequiredTogether(&'static [&'static str]),
    #[error("one of the following is required: {}", .0.join(", "))]
    RequiredOneOf(&'static [&'static str]),
    /// `value` as Ansible prints it (`True`, not `true`).
    #[error(
        "{option} is {value} but {} of the following are missing: {}",
        if *any { "any" } else { "all" },
        missing.join(", ")
    )]
    RequiredIf {
        option: &'static str,
        value: String,
        any: bool,
        missing: Vec<&'static str>,
    },
    #[error("missing parameter(s) required by '{option}': {}", missing.join(", "))]
    RequiredBy {
        option: &'static str,
        missing: Vec<&'static str>,
    },
    /// The validated options do not deserialize into the module's struct: a
    /// spec and struct out of step, a bug of the module.
    #[error("internal error: the options do not fit the module's spec: {0}")]
    OptionsDoNotFit(serde_json::Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::new(error.to_string())
    }
}
