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

fn unset(options: &Map<String, Value>, names: &[&'static str]) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|n| !is_set(options, n))
        .collect()
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
        let missing = unset(options, rule.requires);
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
        let missing = unset(options, rule.requires);
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

    /// One row per rule and outcome: what the row shows | the task's options |
    /// ansible-core's message, or `ok` when the options are accepted.
    const CASES: &str = r#"
        required_if fails | {} | state is configure but all of the following are missing: nvidia_runtime
        null is not set | {"nvidia_runtime": null} | state is configure but all of the following are missing: nvidia_runtime
        required_if holds | {"nvidia_runtime": true} | ok
        another state | {"state": "inspect"} | ok
        compared after conversion, printed as Python does | {"nvidia_runtime": "no"} | nvidia_runtime is False but all of the following are missing: template
        bool rule holds | {"nvidia_runtime": "no", "template": "x"} | ok
        required_if any fails | {"state": "absent"} | state is absent but any of the following are missing: owner, group
        one is enough | {"state": "absent", "group": "root"} | ok
        exclusive | {"nvidia_runtime": true, "template": "a", "template_src": "b"} | parameters are mutually exclusive: template|template_src
        one of the exclusive | {"nvidia_runtime": true, "template_src": "b"} | ok
        the other one null | {"nvidia_runtime": true, "template": "a", "template_src": null} | ok
        conflict named before a missing option | {"template": "a", "template_src": "b"} | parameters are mutually exclusive: template|template_src
        together, one given | {"nvidia_runtime": true, "signing_key": "/k"} | parameters are required together: signing_key, signing_cert
        together, both given | {"nvidia_runtime": true, "signing_key": "/k", "signing_cert": "/c"} | ok
        required_by (backup set by its default) | {"nvidia_runtime": true, "backup_dir": "/b"} | missing parameter(s) required by 'backup_dir': owner
        required_by holds | {"nvidia_runtime": true, "backup_dir": "/b", "owner": "me"} | ok
    "#;

    #[test]
    fn each_relationship_accepts_and_refuses_with_ansible_core_messages() {
        for row in CASES.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let [what, args, want] = row.splitn(3, " | ").collect::<Vec<_>>()[..] else {
                panic!("bad row {row}");
            };
            let got = check(serde_json::from_str(args).unwrap()).err();
            let want = (want != "ok").then_some(want);
            assert_eq!(got.as_deref(), want, "{what}: {args}");
        }
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
