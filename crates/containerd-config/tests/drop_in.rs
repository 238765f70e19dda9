//! `drop_in` and `add_import`: the runtimes in a file of their own, which the
//! main config imports once.

mod common;

use containerd_config::{
    add_import, drop_in, unrelated_changes, validation_copy, verify, verify_effective,
    ConfigVersion, RelativeImports, Wanted,
};
use std::path::Path;

/// 1.7 and 2.x: relative imports against the main config's folder.
fn at_main() -> RelativeImports<'static> {
    RelativeImports::Against(Path::new("/etc/containerd"))
}

const MAIN: &str = "/etc/containerd/config.toml";
const DROP_IN: &str = "/etc/containerd/conf.d/99-nvidia.toml";
const HAND_WRITTEN_V2: &str = include_str!("fixtures/hand-written-v2.toml");

#[test]
fn the_drop_in_holds_only_the_version_and_the_runtimes() {
    let text = drop_in(None, MAIN, &Wanted::nvidia(), ConfigVersion::V3).unwrap();
    assert_eq!(
        text,
        r#"# The CRI runtimes for Kubernetes pods, imported by /etc/containerd/config.toml.
# Written by Ansible (containerd_runtime_config, mode drop_in): changes here
# are overwritten.
version = 3

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "nvidia"

  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      SystemdCgroup = true

  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]
    runtime_type = "io.containerd.runc.v2"

    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia.options]
      BinaryName = "/usr/bin/nvidia-container-runtime"
      SystemdCgroup = true
"#
    );
    verify(&text, DROP_IN, &Wanted::nvidia(), ConfigVersion::V3).unwrap();
}

#[test]
fn the_import_is_added_after_the_version_and_nothing_else_changes() {
    let edit = add_import(
        Some(HAND_WRITTEN_V2),
        MAIN,
        DROP_IN,
        ConfigVersion::V2,
        at_main(),
    )
    .unwrap();
    assert_eq!(
        edit.text,
        HAND_WRITTEN_V2.replace(
            "version = 2\n",
            "version = 2\nimports = [\"/etc/containerd/conf.d/99-nvidia.toml\"]\n"
        )
    );
    let again = add_import(
        Some(&edit.text),
        MAIN,
        DROP_IN,
        ConfigVersion::V2,
        at_main(),
    )
    .unwrap();
    assert_eq!(again.text, edit.text, "imported once");
}

#[test]
fn an_existing_import_list_gets_one_more_entry_in_its_own_style() {
    let text = "version = 2\nimports = [\n  \"/etc/containerd/registry.toml\",\n]\n";
    let edit = add_import(Some(text), MAIN, DROP_IN, ConfigVersion::V2, at_main()).unwrap();
    assert_eq!(
        edit.text,
        "version = 2\nimports = [\n  \"/etc/containerd/registry.toml\",\n  \"/etc/containerd/conf.d/99-nvidia.toml\",\n]\n"
    );
}

#[test]
fn a_glob_or_relative_import_that_loads_the_drop_in_is_enough() {
    for text in [
        "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
        "version = 2\nimports = [\"conf.d/99-nvidia.toml\"]\n",
    ] {
        let edit = add_import(Some(text), MAIN, DROP_IN, ConfigVersion::V2, at_main()).unwrap();
        assert_eq!(edit.text, text);
    }
}

/// containerd 1.6 resolves a relative entry against its working directory
/// (`/`): `conf.d/*.toml` loads nothing there, so the absolute path is added;
/// with no containerd to ask, only an absolute entry counts.
#[test]
fn a_relative_import_counts_only_where_that_containerd_resolves_it() {
    let text = "version = 2\nimports = [\"conf.d/*.toml\"]\n";
    let with_abs =
        "version = 2\nimports = [\"conf.d/*.toml\", \"/etc/containerd/conf.d/99-nvidia.toml\"]\n";
    for relative in [
        RelativeImports::Against(Path::new("/")),
        RelativeImports::Unknown,
    ] {
        let edit = add_import(Some(text), MAIN, DROP_IN, ConfigVersion::V2, relative).unwrap();
        assert_eq!(edit.text, with_abs, "{relative:?}");
    }
    let copy = validation_copy(
        text,
        MAIN,
        None,
        None,
        RelativeImports::Against(Path::new("/")),
    )
    .unwrap();
    assert_eq!(copy, "version = 2\nimports = [\"/conf.d/*.toml\"]\n");
}

/// The copy containerd checks is the committed text: an `imports` entry that
/// is not a path is refused, not left out of the copy (it was, and the
/// module reported `validated: true` for a file containerd rejects).
#[test]
fn the_validation_copy_refuses_an_import_that_is_not_a_path() {
    let err =
        validation_copy("version = 2\nimports = [1]\n", MAIN, None, None, at_main()).unwrap_err();
    assert!(
        err.to_string()
            .contains("`imports` holds 1, which is not a path"),
        "{err}"
    );
}

#[test]
fn no_main_file_means_a_minimal_one_that_imports_the_drop_in() {
    let edit = add_import(None, MAIN, DROP_IN, ConfigVersion::V2, at_main()).unwrap();
    assert_eq!(
        edit.text,
        "# containerd configuration. Created by Ansible (containerd_runtime_config,\n\
         # mode drop_in): containerd's defaults plus the imported files.\n\
         version = 2\n\
         imports = [\"/etc/containerd/conf.d/99-nvidia.toml\"]\n"
    );
}

#[test]
fn the_validation_copy_imports_the_staged_drop_in_by_absolute_path() {
    let text =
        "version = 2\nimports = [\"registry.toml\", \"/etc/containerd/conf.d/99-nvidia.toml\"]\n";
    let copy = validation_copy(
        text,
        MAIN,
        Some(DROP_IN),
        Some("/etc/containerd/conf.d/.99-nvidia.toml.42.tmp"),
        at_main(),
    )
    .unwrap();
    assert_eq!(
        copy,
        "version = 2\nimports = [\"/etc/containerd/registry.toml\", \"/etc/containerd/conf.d/.99-nvidia.toml.42.tmp\"]\n"
    );
    let none = validation_copy(
        "version = 2\n",
        MAIN,
        Some(DROP_IN),
        Some("/tmp/x.toml"),
        at_main(),
    )
    .unwrap();
    assert_eq!(none, "version = 2\nimports = [\"/tmp/x.toml\"]\n");
}

/// Writes main + drop-in into a scratch directory and returns containerd's
/// dumps of the main file without and with the drop-in imported.
fn dumps_without_and_with(
    main_text: &str,
    drop_in_text: impl Fn(&str) -> String,
    name: &str,
) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("containerd-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    let main = dir.join("config.toml");
    let drop_in_path = dir.join("conf.d/99-nvidia.toml");
    let (main_s, drop_s) = (main.to_string_lossy(), drop_in_path.to_string_lossy());
    std::fs::write(&main, main_text).unwrap();
    let without = common::dump_file(&main);
    let with_import = add_import(
        Some(main_text),
        &main_s,
        &drop_s,
        ConfigVersion::V2,
        at_main(),
    )
    .unwrap()
    .text;
    std::fs::write(&main, with_import).unwrap();
    std::fs::write(&drop_in_path, drop_in_text(&main_s)).unwrap();
    let with = common::dump_file(&main);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!Path::new(&dir).exists());
    (without, with)
}

#[test]
fn containerd_keeps_the_main_files_cri_settings_under_the_drop_in() {
    let (without, with) = dumps_without_and_with(
        HAND_WRITTEN_V2,
        |main| {
            drop_in(
                Some(HAND_WRITTEN_V2),
                main,
                &Wanted::nvidia(),
                ConfigVersion::V2,
            )
            .unwrap()
        },
        "copy",
    );
    // The main file says runc with SystemdCgroup = false; the drop-in wins.
    verify_effective(&with, &Wanted::nvidia()).unwrap();
    assert_eq!(
        unrelated_changes(&without, &with, &Wanted::nvidia()).unwrap(),
        Vec::<String>::new()
    );
    assert!(with.contains("sandbox_image = \"registry.k8s.io/pause:3.9\""));
    assert!(with.contains(
        "endpoint = [\"https://mirror.internal.example:5000\", \"https://registry-1.docker.io\"]"
    ));
}

/// Why the drop-in carries the main file's CRI section: containerd 1.6
/// replaces the whole section with an imported one.
#[test]
fn a_runtimes_only_drop_in_would_wipe_the_main_files_cri_settings() {
    let (without, with) = dumps_without_and_with(
        HAND_WRITTEN_V2,
        |main| drop_in(None, main, &Wanted::nvidia(), ConfigVersion::V2).unwrap(),
        "naive",
    );
    verify_effective(&with, &Wanted::nvidia()).unwrap();
    let lost = unrelated_changes(&without, &with, &Wanted::nvidia()).unwrap();
    assert!(
        lost.contains(
            &"`plugins.\"io.containerd.grpc.v1.cri\".sandbox_image` would change from \"registry.k8s.io/pause:3.9\" to \"registry.k8s.io/pause:3.6\"".to_string()
        ),
        "{lost:#?}"
    );
    assert!(
        lost.iter()
            .any(|l| l
                .contains("runtimes.kata.runtime_type` (\"io.containerd.kata.v2\") would be lost")),
        "{lost:#?}"
    );
    assert!(
        lost.iter().any(|l| l.contains("registry.mirrors")),
        "{lost:#?}"
    );
}
