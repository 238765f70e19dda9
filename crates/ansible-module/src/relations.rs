//! The argument relationships of a [`ModuleSpec`] (`mutually_exclusive`,
//! `required_together`, `required_one_of`, `required_if`, `required_by`),
//! checked with the messages of ansible-core's
//! `module_utils/common/validation.py`, so a module declares a rule once and
//! never re-checks it in its body.
//!
//! One difference from ansible-core, on purpose: an option given as `null`
//! counts as not set everywhere (ansible-core's `count_terms` counts a key that
//! is present even when its value is None, except in `required_by`). A task
//! that templates an option to null means "not set", and treating it so keeps
//! `required` and the relationships consistent.

use crate::error::Error;
use crate::spec::ModuleSpec;
use serde_json::{Map, Value};

/// True when the option is present with a value other than null.
pub(crate) fn is_set(options: &Map<String, Value>, name: &str) -> bool {
    options.get(name).is_some_and(|v| !v.is_null())
}

fn count_set(options: &Map<String, Value>, names: &[&str]) -> usize {
    names.iter().filter(|n| is_set(options, n)).count()
}

/// Checked on the options as given, before defaults: a default value never
/// conflicts with an option the task sets.
pub(crate) fn check_mutually_exclusive(
    spec: &ModuleSpec,
    given: &Map<String, Value>,
) -> Result<(), Error> {
    let clashes: Vec<String> = spec
        .mutually_exclusive
        .iter()
        .filter(|group| count_set(given, group) > 1)
        .map(|group| group.join("|"))
        .collect();
    if clashes.is_empty() {
        return Ok(());
    }
    Err(Error::MutuallyExclusive(clashes))
}

/// The relationships ansible-core checks after filling in defaults, in its
/// order; the first one that fails is the message.
pub(crate) fn check_after_defaults(
    spec: &ModuleSpec,
    options: &Map<String, Value>,
) -> Result<(), Error> {
    check_required_together(spec, options)?;
    check_required_one_of(spec, options)?;
    check_required_if(spec, options)?;
    check_required_by(spec, options)
}

fn check_required_together(spec: &ModuleSpec, options: &Map<String, Value>) -> Result<(), Error> {
    match spec.required_together.iter().find(|group| {
        let set = count_set(options, group);
        set > 0 && set < group.len()
    }) {
        Some(group) => Err(Error::RequiredTogether(group)),
        None => Ok(()),
    }
}

fn check_required_one_of(spec: &ModuleSpec, options: &Map<String, Value>) -> Result<(), Error> {
    match spec
        .required_one_of
        .iter()
        .find(|group| count_set(options, group) == 0)
    {
        Some(group) => Err(Error::RequiredOneOf(group)),
        None => Ok(()),
    }
}

fn check_required_if(spec: &ModuleSpec, options: &Map<String, Value>) -> Result<(), Error> {
    for rule in spec.required_if {
        if options.get(rule.option) != Some(&rule.value.to_json()) {
            continue;
        }
        let missing: Vec<&str> = rule
            .requires
            .iter()
            .copied()
            .filter(|name| !is_set(options, name))
            .collect();
        // With `any`, the rule holds unless every one of them is missing.
        let fails = if rule.any {
            !missing.is_empty() && missing.len() == rule.requires.len()
        } else {
            !missing.is_empty()
        };
        if fails {
            return Err(Error::RequiredIf {
                option: rule.option,
                value: rule.value_text(),
                any: rule.any,
                missing,
            });
        }
    }
    Ok(())
}

fn check_required_by(spec: &ModuleSpec, options: &Map<String, Value>) -> Result<(), Error> {
    for rule in spec.required_by {
        if !is_set(options, rule.option) {
            continue;
        }
        let missing: Vec<&str> = rule
            .requires
            .iter()
            .copied()
            .filter(|name| !is_set(options, name))
            .collect();
        if !missing.is_empty() {
            return Err(Error::RequiredBy {
                option: rule.option,
                missing,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::params::validate;
    use crate::spec::{Arg, DefaultValue, ModuleSpec, RequiredBy, RequiredIf};
    use serde_json::{json, Map, Value};

    const SPEC: ModuleSpec = ModuleSpec {
        name: "demo",
        args: &[
            Arg::str("state")
                .default_str("configure")
                .choices(&["configure", "inspect", "absent"]),
            Arg::bool("nvidia_runtime"),
            Arg::str("template"),
            Arg::str("template_src"),
            Arg::path("signing_key"),
            Arg::path("signing_cert"),
            Arg::bool("backup").default_bool(true),
            Arg::path("backup_dir"),
            Arg::str("owner"),
            Arg::str("group"),
        ],
        mutually_exclusive: &[&["template", "template_src"]],
        required_together: &[&["signing_key", "signing_cert"]],
        required_if: &[
            RequiredIf::str("state", "configure", &["nvidia_runtime"]),
            RequiredIf::str("state", "absent", &["owner", "group"]).any(),
            RequiredIf::new("nvidia_runtime", DefaultValue::Bool(false), &["template"]),
        ],
        required_by: &[RequiredBy {
            option: "backup_dir",
            requires: &["backup", "owner"],
        }],
        ..ModuleSpec::BASE
    };

    fn check(args: Value) -> Result<Map<String, Value>, String> {
        validate(&SPEC, args.as_object().unwrap().clone())
            .map(|p| p.options)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn required_if_names_the_condition_and_what_is_missing() {
        assert_eq!(
            check(json!({})).unwrap_err(),
            "state is configure but all of the following are missing: nvidia_runtime"
        );
        // null is "not set", as a templated-out option means.
        assert_eq!(
            check(json!({"nvidia_runtime": null})).unwrap_err(),
            "state is configure but all of the following are missing: nvidia_runtime"
        );
        check(json!({"nvidia_runtime": true})).unwrap();
        check(json!({"state": "inspect"})).unwrap();
    }

    #[test]
    fn required_if_compares_the_converted_value_and_prints_it_as_ansible_does() {
        // "no" is converted to false before the rule is checked.
        assert_eq!(
            check(json!({"nvidia_runtime": "no"})).unwrap_err(),
            "nvidia_runtime is False but all of the following are missing: template"
        );
        check(json!({"nvidia_runtime": "no", "template": "x"})).unwrap();
    }

    #[test]
    fn required_if_any_needs_only_one_of_them() {
        assert_eq!(
            check(json!({"state": "absent"})).unwrap_err(),
            "state is absent but any of the following are missing: owner, group"
        );
        check(json!({"state": "absent", "group": "root"})).unwrap();
    }

    #[test]
    fn mutually_exclusive_options_are_refused_together_only() {
        assert_eq!(
            check(json!({"nvidia_runtime": true, "template": "a", "template_src": "b"}))
                .unwrap_err(),
            "parameters are mutually exclusive: template|template_src"
        );
        check(json!({"nvidia_runtime": true, "template_src": "b"})).unwrap();
        check(json!({"nvidia_runtime": true, "template": "a", "template_src": null})).unwrap();
    }

    #[test]
    fn mutually_exclusive_is_reported_before_a_missing_required_option() {
        // ansible-core's order: the conflict is named first.
        let err = check(json!({"template": "a", "template_src": "b"})).unwrap_err();
        assert!(
            err.starts_with("parameters are mutually exclusive"),
            "{err}"
        );
    }

    #[test]
    fn required_together_needs_all_or_none() {
        assert_eq!(
            check(json!({"nvidia_runtime": true, "signing_key": "/k"})).unwrap_err(),
            "parameters are required together: signing_key, signing_cert"
        );
        check(json!({"nvidia_runtime": true, "signing_key": "/k", "signing_cert": "/c"})).unwrap();
    }

    #[test]
    fn required_by_names_the_option_that_needs_the_others() {
        assert_eq!(
            check(json!({"nvidia_runtime": true, "backup_dir": "/b"})).unwrap_err(),
            "missing parameter(s) required by 'backup_dir': owner"
        );
        // backup is satisfied by its default, as in ansible-core.
        check(json!({"nvidia_runtime": true, "backup_dir": "/b", "owner": "me"})).unwrap();
        let err =
            check(json!({"nvidia_runtime": true, "backup_dir": "/b", "backup": null})).unwrap_err();
        assert_eq!(err, "missing parameter(s) required by 'backup_dir': owner");
    }

    #[test]
    fn required_one_of_needs_at_least_one() {
        const ONE_OF: ModuleSpec = ModuleSpec {
            args: &[Arg::str("a"), Arg::str("b")],
            required_one_of: &[&["a", "b"]],
            ..ModuleSpec::BASE
        };
        let run =
            |v: Value| validate(&ONE_OF, v.as_object().unwrap().clone()).map_err(|e| e.to_string());
        assert_eq!(
            run(json!({})).unwrap_err(),
            "one of the following is required: a, b"
        );
        run(json!({"b": "x"})).unwrap();
    }

    #[test]
    fn argument_spec_json_carries_the_relationships_in_ansible_shape() {
        let spec = SPEC.to_json();
        assert_eq!(
            spec["mutually_exclusive"],
            json!([["template", "template_src"]])
        );
        assert_eq!(
            spec["required_together"],
            json!([["signing_key", "signing_cert"]])
        );
        assert_eq!(spec["required_one_of"], json!([]));
        assert_eq!(
            spec["required_if"],
            json!([
                ["state", "configure", ["nvidia_runtime"]],
                ["state", "absent", ["owner", "group"], true],
                ["nvidia_runtime", false, ["template"]],
            ])
        );
        assert_eq!(
            spec["required_by"],
            json!({"backup_dir": ["backup", "owner"]})
        );
    }
}
