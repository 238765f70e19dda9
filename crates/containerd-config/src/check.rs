//! Does a config say what was asked? Run on every candidate before it is
//! written (a user's template may not), and on `containerd config dump`
//! output, where imports may have overridden it.

use crate::edit::{describe, parse};
use crate::error::Error;
use crate::version::ConfigVersion;
use crate::{Wanted, RUNC_RUNTIME_TYPE};
use std::collections::{BTreeMap, BTreeSet};
use toml_edit::{DocumentMut, Item};

/// Checks a candidate config: `version`, `default_runtime_name`, and for
/// each runtime configured `runtime_type`, `SystemdCgroup` and (NVIDIA)
/// `BinaryName`; and that the CRI plugin is not disabled. The error lists
/// everything missing or different.
pub fn verify(
    text: &str,
    origin: &str,
    wanted: &Wanted,
    version: ConfigVersion,
) -> Result<(), Error> {
    let doc = parse(text, origin)?;
    let mut problems = Vec::new();
    match doc.get("version") {
        Some(item) if item.as_integer() == Some(version.number()) => {}
        Some(item) => problems.push(format!("`version` is {}, expected {version}", shown(item))),
        None => problems.push(format!("`version = {version}` is missing")),
    }
    runtime_problems(&doc, wanted, version, &mut problems);
    done(origin, problems)
}

/// The `default_runtime_name` a config of `version` sets, if it is TOML and
/// sets one.
pub fn configured_default(text: &str, version: ConfigVersion) -> Option<String> {
    let doc: DocumentMut = text.parse().ok()?;
    lookup(
        doc.as_item(),
        &["plugins", version.cri_runtime_plugin(), "containerd"],
    )?
    .get("default_runtime_name")?
    .as_str()
    .map(str::to_string)
}

/// Checks `containerd config dump` output, containerd's effective
/// configuration with every import merged, in whichever version that
/// containerd prints (1.x prints 2, 2.x prints 3).
pub fn verify_effective(dump: &str, wanted: &Wanted) -> Result<(), Error> {
    let origin = "containerd's effective configuration (`containerd config dump`, imports merged)";
    let doc = parse(dump, origin)?;
    let version = doc
        .get("version")
        .and_then(Item::as_integer)
        .and_then(ConfigVersion::from_number)
        .unwrap_or(ConfigVersion::V2);
    let mut problems = Vec::new();
    runtime_problems(&doc, wanted, version, &mut problems);
    done(origin, problems)
}

/// What, besides the runtime settings, differs between two `containerd
/// config dump` outputs: `before` without the module's change, `after` with
/// it. For a drop-in this catches settings of the main file that an import
/// would wipe (containerd 1.x replaces whole plugin sections with imported
/// ones). A key present on one side only is a difference unless its value
/// is a zero value, which is what containerd prints for unset fields.
pub fn unrelated_changes(before: &str, after: &str, wanted: &Wanted) -> Result<Vec<String>, Error> {
    let origin = "`containerd config dump` output";
    let before_doc = parse(before, origin)?;
    let after_doc = parse(after, origin)?;
    let version = after_doc
        .get("version")
        .and_then(Item::as_integer)
        .and_then(ConfigVersion::from_number)
        .unwrap_or(ConfigVersion::V2);
    let (mut old, mut new) = (BTreeMap::new(), BTreeMap::new());
    flatten(before_doc.as_item(), &mut Vec::new(), &mut old);
    flatten(after_doc.as_item(), &mut Vec::new(), &mut new);
    let plugin = version.cri_runtime_plugin();
    let ours = |path: &[String]| -> bool {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        match p.as_slice() {
            ["imports", ..] => true,
            ["plugins", pl, "containerd", "default_runtime_name"] => *pl == plugin,
            ["plugins", pl, "enable_cdi"] => *pl == plugin && wanted.enable_cdi.is_some(),
            ["plugins", pl, "containerd", "runtimes", name, rest @ ..] if *pl == plugin => {
                (wanted.nvidia_runtime && *name == wanted.runtime_name)
                    || (*name == crate::RUNC
                        && matches!(rest, ["runtime_type"] | ["options", "SystemdCgroup"]))
            }
            _ => false,
        }
    };
    let keys: BTreeSet<&Vec<String>> = old.keys().chain(new.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        if ours(key) {
            continue;
        }
        let shown = dotted(key);
        match (old.get(key), new.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => changes.push(format!("`{shown}` would change from {a} to {b}")),
            (Some(a), None) if !is_zero(a) => {
                changes.push(format!("`{shown}` ({a}) would be lost"))
            }
            (None, Some(b)) if !is_zero(b) => changes.push(format!("`{shown}` would become {b}")),
            _ => {}
        }
    }
    Ok(changes)
}

fn flatten(item: &Item, path: &mut Vec<String>, out: &mut BTreeMap<Vec<String>, String>) {
    if let Some(table) = item.as_table_like() {
        for (key, child) in table.iter() {
            path.push(key.to_string());
            flatten(child, path, out);
            path.pop();
        }
    } else if let Some(tables) = item.as_array_of_tables() {
        for (i, table) in tables.iter().enumerate() {
            path.push(i.to_string());
            for (key, child) in table.iter() {
                path.push(key.to_string());
                flatten(child, path, out);
                path.pop();
            }
            path.pop();
        }
    } else if let Some(value) = item.as_value() {
        let mut value = value.clone();
        value.decor_mut().clear();
        out.insert(path.clone(), value.to_string());
    }
}

fn is_zero(value: &str) -> bool {
    matches!(value, "\"\"" | "''" | "0" | "0.0" | "false" | "[]" | "{}")
}

fn dotted(path: &[String]) -> String {
    path.iter()
        .map(|k| {
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                k.clone()
            } else {
                format!("{k:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn done(origin: &str, problems: Vec<String>) -> Result<(), Error> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::NotAsAsked {
            origin: origin.to_string(),
            problems,
        })
    }
}

/// The CRI plugin's settings `wanted` names: `enable_cdi`, the default
/// runtime, each runtime's entry, and the plugin not disabled.
fn runtime_problems(
    doc: &DocumentMut,
    wanted: &Wanted,
    version: ConfigVersion,
    problems: &mut Vec<String>,
) {
    let plugin = version.cri_runtime_plugin();
    let base = format!("plugins.\"{plugin}\".containerd");
    if let Some(cdi) = wanted.enable_cdi {
        expect(
            lookup(doc.as_item(), &["plugins", plugin]),
            &format!("plugins.\"{plugin}\""),
            "enable_cdi",
            &cdi.to_string(),
            |item| item.as_bool() == Some(cdi),
            problems,
        );
    }
    let containerd = lookup(doc.as_item(), &["plugins", plugin, "containerd"]);
    expect(
        containerd,
        &base,
        "default_runtime_name",
        &format!("{:?}", wanted.default_runtime()),
        |item| item.as_str() == Some(wanted.default_runtime()),
        problems,
    );
    for runtime in wanted.runtimes() {
        let path = format!("{base}.runtimes.{}", runtime.name);
        match containerd.and_then(|c| lookup(c, &["runtimes", runtime.name])) {
            Some(entry) => runtime_entry_problems(entry, &path, runtime.binary, wanted, problems),
            None => problems.push(format!("the runtime `{path}` is missing")),
        }
    }
    cri_disabled_problems(doc, version, problems);
}

/// One runtime's entry (at `path`): the runc shim, the `binary` when one is
/// wanted (the NVIDIA runtime's), and SystemdCgroup.
fn runtime_entry_problems(
    entry: &Item,
    path: &str,
    binary: Option<&str>,
    wanted: &Wanted,
    problems: &mut Vec<String>,
) {
    expect(
        Some(entry),
        path,
        "runtime_type",
        &format!("{RUNC_RUNTIME_TYPE:?}"),
        |item| item.as_str() == Some(RUNC_RUNTIME_TYPE),
        problems,
    );
    let options = lookup(entry, &["options"]);
    let options_path = format!("{path}.options");
    if let Some(binary) = binary {
        expect(
            options,
            &options_path,
            "BinaryName",
            &format!("{binary:?}"),
            |item| item.as_str() == Some(binary),
            problems,
        );
    }
    expect(
        options,
        &options_path,
        "SystemdCgroup",
        &wanted.systemd_cgroup.to_string(),
        |item| item.as_bool() == Some(wanted.systemd_cgroup),
        problems,
    );
}

/// `disabled_plugins` must not list the CRI plugin: Kubernetes needs it.
fn cri_disabled_problems(doc: &DocumentMut, version: ConfigVersion, problems: &mut Vec<String>) {
    let Some(disabled) = doc.get("disabled_plugins").and_then(Item::as_array) else {
        return;
    };
    let ids = version.cri_plugin_ids();
    for id in disabled.iter().filter_map(|v| v.as_str()) {
        if ids.contains(&id) {
            problems.push(format!(
                "`disabled_plugins` lists {id:?}: Kubernetes needs the CRI plugin"
            ));
        }
    }
}

fn lookup<'d>(mut item: &'d Item, keys: &[&str]) -> Option<&'d Item> {
    for key in keys {
        item = item.get(*key)?;
    }
    item.is_table_like().then_some(item)
}

fn expect(
    table: Option<&Item>,
    path: &str,
    key: &str,
    wanted: &str,
    ok: impl Fn(&Item) -> bool,
    problems: &mut Vec<String>,
) {
    match table.and_then(|t| t.get(key)) {
        Some(item) if ok(item) => {}
        Some(item) => problems.push(format!(
            "`{path}.{key}` is {}, expected {wanted}",
            shown(item)
        )),
        None => problems.push(format!("`{path}.{key}` is missing (expected {wanted})")),
    }
}

/// A found value as the message shows it: the value itself when short.
fn shown(item: &Item) -> String {
    match item.as_value() {
        Some(v) if !v.is_array() && !v.is_inline_table() => v.to_string().trim().to_string(),
        _ => describe(item).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_or_wrong_setting_is_named() {
        let text = "version = 2\n\
            [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n\
            default_runtime_name = \"runc\"\n\
            [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
            runtime_type = \"io.containerd.runc.v2\"\n\
            [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
            SystemdCgroup = false\n";
        let err = verify(text, "rendered", &Wanted::nvidia(), ConfigVersion::V2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rendered does not configure what the task asks: \
             `plugins.\"io.containerd.grpc.v1.cri\".containerd.default_runtime_name` is \"runc\", expected \"nvidia\"; \
             `plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options.SystemdCgroup` is false, expected true; \
             the runtime `plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia` is missing"
        );
    }

    #[test]
    fn a_config_of_the_other_version_is_refused() {
        let text = "version = 3\n";
        let err = verify(text, "t", &Wanted::nvidia(), ConfigVersion::V2).unwrap_err();
        assert!(
            err.to_string().contains("`version` is 3, expected 2"),
            "{err}"
        );
    }

    #[test]
    fn a_disabled_cri_plugin_is_a_problem() {
        let text = "version = 2\ndisabled_plugins = [\"cri\"]\n";
        let err = verify(text, "t", &Wanted::nvidia(), ConfigVersion::V2).unwrap_err();
        assert!(
            err.to_string().contains("`disabled_plugins` lists \"cri\""),
            "{err}"
        );
    }
}
