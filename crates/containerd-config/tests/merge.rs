//! `merge`: the existing config edited in place. The fixtures are configs as
//! people write them (comments, mirrors, a pinned sandbox image, another
//! runtime); every assertion is on the exact output text.

use containerd_config::{merge, verify, ConfigVersion, Error, Wanted};

const HAND_WRITTEN_V2: &str = include_str!("fixtures/hand-written-v2.toml");
const HAND_WRITTEN_V3: &str = include_str!("fixtures/hand-written-v3.toml");

/// Splits `text` at the first line containing `marker`: (before, from there).
fn split_at_line<'t>(text: &'t str, marker: &str) -> (&'t str, &'t str) {
    let at = text.find(marker).expect("marker present");
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text.split_at(line_start)
}

#[test]
fn hand_written_v2_config_changes_only_the_runtime_settings() {
    let edit = merge(
        Some(HAND_WRITTEN_V2),
        "/etc/containerd/config.toml",
        &Wanted::nvidia(),
        ConfigVersion::V2,
    )
    .unwrap();
    let expected = HAND_WRITTEN_V2
        .replace(
            "default_runtime_name = \"runc\"",
            "default_runtime_name = \"nvidia\"",
        )
        .replace(
            "SystemdCgroup = false # kubelet still on cgroupfs here\n",
            "SystemdCgroup = true # kubelet still on cgroupfs here\n\
             \n        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\n\
             \x20         runtime_type = \"io.containerd.runc.v2\"\n\
             \n          [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia.options]\n\
             \x20           BinaryName = \"/usr/bin/nvidia-container-runtime\"\n\
             \x20           SystemdCgroup = true\n",
        );
    assert_eq!(edit.text, expected);
    assert!(edit.notes.is_empty());
    // The unrelated part after the runtimes, byte for byte.
    let (_, tail) = split_at_line(
        HAND_WRITTEN_V2,
        "[plugins.\"io.containerd.grpc.v1.cri\".registry]",
    );
    assert!(edit.text.ends_with(tail));
    let (head, _) = split_at_line(HAND_WRITTEN_V2, "default_runtime_name");
    assert!(edit.text.starts_with(head));
    verify(&edit.text, "merged", &Wanted::nvidia(), ConfigVersion::V2).unwrap();
}

#[test]
fn hand_written_v3_config_keeps_its_literal_strings_and_comments() {
    let edit = merge(
        Some(HAND_WRITTEN_V3),
        "/etc/containerd/config.toml",
        &Wanted::nvidia(),
        ConfigVersion::V3,
    )
    .unwrap();
    let expected = HAND_WRITTEN_V3.replace(
        "default_runtime_name = 'runc'",
        "default_runtime_name = 'nvidia'",
    )
        + "\n        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia]\n\
         \x20         runtime_type = \"io.containerd.runc.v2\"\n\
         \n          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia.options]\n\
         \x20           BinaryName = \"/usr/bin/nvidia-container-runtime\"\n\
         \x20           SystemdCgroup = true\n";
    assert_eq!(edit.text, expected);
    let (head, _) = split_at_line(HAND_WRITTEN_V3, "default_runtime_name");
    assert!(
        edit.text.starts_with(head),
        "everything above the runtimes is unchanged"
    );
    verify(&edit.text, "merged", &Wanted::nvidia(), ConfigVersion::V3).unwrap();
}

#[test]
fn merging_an_already_correct_file_gives_the_same_bytes() {
    for (fixture, version) in [
        (HAND_WRITTEN_V2, ConfigVersion::V2),
        (HAND_WRITTEN_V3, ConfigVersion::V3),
    ] {
        for wanted in [Wanted::nvidia(), Wanted::runc_only()] {
            let once = merge(Some(fixture), "c", &wanted, version).unwrap().text;
            let twice = merge(Some(&once), "c", &wanted, version).unwrap().text;
            assert_eq!(once, twice);
        }
        let fresh = merge(None, "c", &Wanted::nvidia(), version).unwrap().text;
        assert_eq!(
            merge(Some(&fresh), "c", &Wanted::nvidia(), version)
                .unwrap()
                .text,
            fresh
        );
    }
}

#[test]
fn a_new_file_holds_the_version_and_both_runtimes() {
    let text = merge(
        None,
        "/etc/containerd/config.toml",
        &Wanted::nvidia(),
        ConfigVersion::V2,
    )
    .unwrap()
    .text;
    assert_eq!(
        text,
        r#"# containerd configuration. Created by Ansible (containerd_runtime_config,
# mode merge), which manages the CRI runtimes below; other settings added
# here are kept.
version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "nvidia"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
    runtime_type = "io.containerd.runc.v2"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
      BinaryName = "/usr/bin/nvidia-container-runtime"
      SystemdCgroup = true
"#
    );
    let v3 = merge(None, "c", &Wanted::nvidia(), ConfigVersion::V3)
        .unwrap()
        .text;
    assert_eq!(
        v3,
        text.replace("version = 2", "version = 3")
            .replace("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime")
    );
}

#[test]
fn without_nvidia_runc_is_the_default_and_other_runtimes_stay() {
    let with_nvidia = merge(
        Some(HAND_WRITTEN_V2),
        "c",
        &Wanted::nvidia(),
        ConfigVersion::V2,
    )
    .unwrap()
    .text;
    let edit = merge(
        Some(&with_nvidia),
        "c",
        &Wanted::runc_only(),
        ConfigVersion::V2,
    )
    .unwrap();
    assert_eq!(
        edit.text,
        with_nvidia.replace(
            "default_runtime_name = \"nvidia\"",
            "default_runtime_name = \"runc\""
        ),
        "the nvidia runtime entry stays, it is only no longer the default"
    );
    verify(&edit.text, "c", &Wanted::runc_only(), ConfigVersion::V2).unwrap();
}

#[test]
fn not_the_default_means_runc_is() {
    let wanted = Wanted {
        set_as_default: false,
        ..Wanted::nvidia()
    };
    let text = merge(Some(HAND_WRITTEN_V2), "c", &wanted, ConfigVersion::V2)
        .unwrap()
        .text;
    assert!(text.contains("default_runtime_name = \"runc\""));
    assert!(text.contains("BinaryName = \"/usr/bin/nvidia-container-runtime\""));
    verify(&text, "c", &wanted, ConfigVersion::V2).unwrap();
}

#[test]
fn systemd_cgroup_false_is_written_too() {
    let wanted = Wanted {
        systemd_cgroup: false,
        ..Wanted::nvidia()
    };
    let text = merge(None, "c", &wanted, ConfigVersion::V2).unwrap().text;
    assert_eq!(text.matches("SystemdCgroup = false").count(), 2);
    assert!(!text.contains("SystemdCgroup = true"));
}

#[test]
fn an_unversioned_file_gets_a_version_on_top() {
    let text = "# only global settings so far\nroot = \"/data/containerd\"\n";
    let edit = merge(Some(text), "c", &Wanted::runc_only(), ConfigVersion::V2).unwrap();
    assert!(
        edit.text.starts_with(
            "version = 2\n# only global settings so far\nroot = \"/data/containerd\"\n\n"
        ),
        "{}",
        edit.text
    );
}

#[test]
fn flat_files_stay_flat_and_dotted_keys_stay_dotted() {
    let text = "version = 2\n\
        [plugins.\"io.containerd.grpc.v1.cri\"]\n\
        containerd.default_runtime_name = \"runc\"\n\
        containerd.snapshotter = \"overlayfs\"\n";
    let edit = merge(Some(text), "c", &Wanted::nvidia(), ConfigVersion::V2).unwrap();
    assert_eq!(
        edit.text,
        "version = 2\n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n\
         containerd.default_runtime_name = \"nvidia\"\n\
         containerd.snapshotter = \"overlayfs\"\n\
         \n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         runtime_type = \"io.containerd.runc.v2\"\n\
         \n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
         SystemdCgroup = true\n\
         \n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\n\
         runtime_type = \"io.containerd.runc.v2\"\n\
         \n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia.options]\n\
         BinaryName = \"/usr/bin/nvidia-container-runtime\"\n\
         SystemdCgroup = true\n"
    );
    verify(&edit.text, "c", &Wanted::nvidia(), ConfigVersion::V2).unwrap();
}

#[test]
fn inline_tables_are_edited_inline() {
    let text = "version = 2\n\
        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\n\
        runc = { runtime_type = \"io.containerd.runc.v2\", options = { SystemdCgroup = false } }\n";
    let edit = merge(Some(text), "c", &Wanted::runc_only(), ConfigVersion::V2).unwrap();
    assert!(
        edit.text.contains(
            "runc = { runtime_type = \"io.containerd.runc.v2\", options = { SystemdCgroup = true } }\n"
        ),
        "{}",
        edit.text
    );
    verify(&edit.text, "c", &Wanted::runc_only(), ConfigVersion::V2).unwrap();
}

#[test]
fn dockers_disabled_cri_plugin_is_enabled_and_said_so() {
    let text = "# Docker's containerd.io package\ndisabled_plugins = [\"cri\", \"io.containerd.snapshotter.v1.zfs\"]\n";
    let edit = merge(
        Some(text),
        "/etc/containerd/config.toml",
        &Wanted::runc_only(),
        ConfigVersion::V2,
    )
    .unwrap();
    assert!(
        edit.text.starts_with(
            "version = 2\n# Docker's containerd.io package\ndisabled_plugins = [\"io.containerd.snapshotter.v1.zfs\"]\n"
        ),
        "{}",
        edit.text
    );
    assert_eq!(
        edit.notes,
        ["enabled the CRI plugin (removed cri from disabled_plugins in /etc/containerd/config.toml)"]
    );
}

#[test]
fn invalid_toml_is_refused_with_line_and_column() {
    let text =
        "version = 2\n# comment\n[plugins.\"io.containerd.grpc.v1.cri\"\nsandbox_image = \"x\"\n";
    let err = merge(
        Some(text),
        "/etc/containerd/config.toml",
        &Wanted::nvidia(),
        ConfigVersion::V2,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/containerd/config.toml is not valid TOML: line 3, column 37: unclosed table, expected `]`"
    );
}

#[test]
fn a_key_of_the_wrong_shape_is_refused_not_overwritten() {
    let text =
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = \"none\"\n";
    let err = merge(
        Some(text),
        "/etc/c.toml",
        &Wanted::nvidia(),
        ConfigVersion::V2,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::Shape {
            origin: "/etc/c.toml".into(),
            message: "`plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes` is a string, not a table"
                .into()
        }
    );
}

#[test]
fn a_file_of_another_version_is_refused() {
    let err = merge(
        Some(HAND_WRITTEN_V3),
        "/etc/c.toml",
        &Wanted::nvidia(),
        ConfigVersion::V2,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/c.toml is a version 3 config, not version 2"
    );
}

#[test]
fn runtime_names_that_are_not_plain_keys_are_refused() {
    for name in ["", "nvidia.gpu", "runc", "a b"] {
        let wanted = Wanted {
            runtime_name: name.into(),
            ..Wanted::nvidia()
        };
        assert!(matches!(
            merge(None, "c", &wanted, ConfigVersion::V2),
            Err(Error::Invalid(_))
        ));
    }
}

/// A table header is never rewritten: with the same key quoted two ways in
/// two headers (2.x's `config default` writes `'...'`, people add `"..."`),
/// merge gave the second header the first one's quotes.
#[test]
fn headers_keep_their_own_quotes() {
    let text = "version = 3\n\
                [plugins.'io.containerd.cri.v1.images'.pinned_images]\n\
                sandbox = 'registry.k8s.io/pause:3.10'\n\
                [plugins.\"io.containerd.cri.v1.images\".registry]\n\
                config_path = \"/etc/containerd/certs.d\"\n\
                [plugins.'io.containerd.cri.v1.runtime'.containerd]\n\
                default_runtime_name = 'runc'\n";
    let edit = merge(
        Some(text),
        "/etc/containerd/config.toml",
        &Wanted::nvidia(),
        ConfigVersion::V3,
    )
    .unwrap();
    let (head, _) = split_at_line(text, "default_runtime_name");
    assert!(edit.text.starts_with(head), "{}", edit.text);
}
