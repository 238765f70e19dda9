//! The role's templates, as the module embeds them: both config versions,
//! every optional variable, and containerd's acceptance of version 2.

mod common;

use containerd_config::{
    builtin_template, render, verify, verify_effective, ConfigVersion, TemplateVars, Wanted,
};
use serde_json::json;

fn vars(v: serde_json::Value) -> TemplateVars {
    v.as_object().unwrap().clone()
}

fn every_variable() -> TemplateVars {
    vars(json!({
        "sandbox_image": "registry.internal.example/pause:3.10",
        "registry_config_path": "/etc/containerd/certs.d",
        "snapshotter": "overlayfs",
        "containerd_root": "/data/containerd",
        "containerd_state": "/run/containerd",
        "containerd_oom_score": -999,
        "containerd_imports": ["/etc/containerd/conf.d/*.toml"],
        "enable_cdi": true,
        "cni_bin_dir": "/opt/cni/bin",
        "cni_conf_dir": "/etc/cni/net.d",
    }))
}

fn render_builtin(wanted: &Wanted, version: ConfigVersion, vars: &TemplateVars) -> String {
    let (name, source) = builtin_template(wanted.nvidia_runtime);
    render(name, source, wanted, version, vars).unwrap()
}

#[test]
fn the_gpu_template_without_nvidia_renders_as_the_standard_one() {
    for version in [ConfigVersion::V2, ConfigVersion::V3] {
        for vars in [TemplateVars::new(), every_variable()] {
            let (name, gpu) = builtin_template(true);
            let from_gpu = render(name, gpu, &Wanted::runc_only(), version, &vars).unwrap();
            assert_eq!(
                from_gpu,
                render_builtin(&Wanted::runc_only(), version, &vars)
            );
        }
    }
}

#[test]
fn every_rendering_sets_what_was_asked() {
    let wanted = [
        Wanted::nvidia(),
        Wanted::runc_only(),
        Wanted {
            set_as_default: false,
            systemd_cgroup: false,
            runtime_name: "nvidia-gpu".into(),
            ..Wanted::nvidia()
        },
    ];
    for version in [ConfigVersion::V2, ConfigVersion::V3] {
        for w in &wanted {
            for vars in [TemplateVars::new(), every_variable()] {
                let text = render_builtin(w, version, &vars);
                verify(&text, "rendered", w, version).unwrap();
            }
        }
    }
}

#[test]
fn version_2_renderings_are_accepted_by_containerd() {
    let mirrors =
        vars(json!({"registry_mirrors": {"docker.io": ["https://mirror.internal.example:5000"]}}));
    for w in [Wanted::nvidia(), Wanted::runc_only()] {
        for vars in [TemplateVars::new(), every_variable(), mirrors.clone()] {
            let text = render_builtin(&w, ConfigVersion::V2, &vars);
            let dump = common::dump(&text, "template");
            verify_effective(&dump, &w).unwrap();
        }
    }
}

#[test]
fn the_default_gpu_config_for_containerd_1() {
    let text = render_builtin(&Wanted::nvidia(), ConfigVersion::V2, &TemplateVars::new());
    let body = text.split_once("version = 2\n").unwrap().1;
    assert_eq!(
        body,
        r#"root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
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
}

/// The table paths containerd 2.x documents for config version 3
/// (docs/cri/config.md): the images plugin holds the sandbox image and the
/// registry, the runtime plugin the runtimes.
#[test]
fn the_default_gpu_config_for_containerd_2_uses_the_version_3_plugins() {
    let text = render_builtin(&Wanted::nvidia(), ConfigVersion::V3, &TemplateVars::new());
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    let images = &doc["plugins"]["io.containerd.cri.v1.images"];
    assert_eq!(
        images["pinned_images"]["sandbox"].as_str(),
        Some("registry.k8s.io/pause:3.10")
    );
    assert_eq!(
        images["registry"]["config_path"].as_str(),
        Some("/etc/containerd/certs.d")
    );
    assert_eq!(images["snapshotter"].as_str(), Some("overlayfs"));
    let containerd = &doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"];
    assert_eq!(containerd["default_runtime_name"].as_str(), Some("nvidia"));
    let nvidia = &containerd["runtimes"]["nvidia"];
    assert_eq!(
        nvidia["runtime_type"].as_str(),
        Some("io.containerd.runc.v2")
    );
    assert_eq!(
        nvidia["options"]["BinaryName"].as_str(),
        Some("/usr/bin/nvidia-container-runtime")
    );
    assert_eq!(nvidia["options"]["SystemdCgroup"].as_bool(), Some(true));
    assert_eq!(
        containerd["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
        Some(true)
    );
    assert!(
        !text.contains("io.containerd.grpc.v1.cri"),
        "no version 2 plugin name in a version 3 config"
    );
    assert!(
        !text.contains("sandbox_image"),
        "version 3 has pinned_images.sandbox instead"
    );
}

#[test]
fn mirrors_go_inline_for_version_2_and_are_refused_for_version_3() {
    let mirrors = vars(
        json!({"registry_mirrors": {"docker.io": ["https://m.example", "https://registry-1.docker.io"]}}),
    );
    let text = render_builtin(&Wanted::nvidia(), ConfigVersion::V2, &mirrors);
    assert!(text.contains(
        "  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n      endpoint = [\"https://m.example\", \"https://registry-1.docker.io\"]\n"
    ), "{text}");
    assert!(
        !text.contains("config_path"),
        "containerd refuses mirrors together with config_path"
    );
    let (name, source) = builtin_template(true);
    let err = render(name, source, &Wanted::nvidia(), ConfigVersion::V3, &mirrors).unwrap_err();
    assert!(
        err.to_string()
            .contains("registry_mirrors needs config_version 2"),
        "{err}"
    );
}

#[test]
fn optional_variables_land_in_the_right_tables() {
    let v2 = render_builtin(&Wanted::nvidia(), ConfigVersion::V2, &every_variable());
    assert!(v2.contains("root = \"/data/containerd\"\n"));
    assert!(v2.contains("oom_score = -999\n"));
    assert!(v2.contains("imports = [\"/etc/containerd/conf.d/*.toml\"]\n"));
    assert!(v2.contains(
        "  sandbox_image = \"registry.internal.example/pause:3.10\"\n  enable_cdi = true\n"
    ));
    assert!(v2.ends_with("  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = \"/opt/cni/bin\"\n    conf_dir = \"/etc/cni/net.d\"\n"));
    let v3 = render_builtin(&Wanted::nvidia(), ConfigVersion::V3, &every_variable());
    assert!(v3.contains("[plugins.\"io.containerd.cri.v1.runtime\"]\n  enable_cdi = true\n"));
    assert!(v3.ends_with("  [plugins.\"io.containerd.cri.v1.runtime\".cni]\n    bin_dirs = [\"/opt/cni/bin\"]\n    conf_dir = \"/etc/cni/net.d\"\n"));
}
