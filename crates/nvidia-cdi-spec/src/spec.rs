//! The CDI spec made of a [`Discovery`], and its YAML text.
//!
//! cdiVersion 0.5.0: the lowest version that allows what the spec uses
//! (device names that start with a digit, "0", came with 0.5.0; everything
//! else is 0.3.0). containerd 1.7 and 2.x, CRI-O, Podman 4+ and the NVIDIA
//! device plugin all read it; it is also the version `nvidia-ctk cdi
//! generate` computes for such a spec.

use crate::discover::Discovery;
use serde_json::{json, Value};

pub const CDI_VERSION: &str = "0.5.0";
pub const KIND: &str = "nvidia.com/gpu";

/// Bind options of the driver's files, as `nvidia-ctk` gives them: read-only,
/// no set-id programs or device files through the mount.
const FILE_OPTIONS: &[&str] = &["ro", "nosuid", "nodev", "rbind", "rprivate"];
/// IPC sockets must stay writable (a client writes to the socket).
const IPC_OPTIONS: &[&str] = &["nosuid", "nodev", "rbind", "rprivate", "noexec"];

/// The spec as a JSON value, in the CDI field names.
pub fn build(d: &Discovery) -> Value {
    let mut devices = Vec::new();
    for (index, gpu) in d.gpus.iter().enumerate() {
        let edits = json!({ "deviceNodes": [{ "path": gpu.device_node() }] });
        devices.push(json!({ "name": index.to_string(), "containerEdits": edits }));
        if let Some(uuid) = &gpu.uuid {
            devices.push(json!({ "name": uuid, "containerEdits": edits }));
        }
    }
    let all_nodes: Vec<Value> = d
        .gpus
        .iter()
        .map(|g| json!({ "path": g.device_node() }))
        .collect();
    devices.push(json!({ "name": "all", "containerEdits": { "deviceNodes": all_nodes } }));
    let mut mounts: Vec<Value> = Vec::new();
    for path in d.libraries.iter().chain(&d.binaries).chain(&d.firmware) {
        mounts.push(mount(path, FILE_OPTIONS));
    }
    for path in &d.ipc {
        mounts.push(mount(path, IPC_OPTIONS));
    }
    let control: Vec<Value> = d
        .control_devices
        .iter()
        .map(|p| json!({ "path": p }))
        .collect();
    json!({
        "cdiVersion": CDI_VERSION,
        "kind": KIND,
        "devices": devices,
        "containerEdits": {
            // Tells a legacy NVIDIA runtime hook, if the container also
            // goes through one, that CDI already did its work.
            "env": ["NVIDIA_VISIBLE_DEVICES=void"],
            "deviceNodes": control,
            "mounts": mounts,
        },
    })
}

fn mount(path: &str, options: &[&str]) -> Value {
    json!({ "hostPath": path, "containerPath": path, "options": options })
}

/// The spec as YAML, block style, every string double-quoted (a JSON string
/// is a valid YAML double-quoted scalar, so no escaping rule of our own).
/// The header names the driver, so the file says what it was made from.
pub fn to_yaml(spec: &Value, d: &Discovery) -> String {
    let mut out = format!(
        "# Written by the nvidia_cdi_spec Ansible module for NVIDIA driver {}, {} GPU(s).\n\
         # Made from this node's files; a later run replaces it: do not edit.\n",
        d.driver_version,
        d.gpus.len()
    );
    write_value(&mut out, spec, 0, false);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

/// Writes `v` at `indent`; `inline` when the first line continues a "- ".
fn write_value(out: &mut String, v: &Value, indent: usize, inline: bool) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (i, (key, value)) in map.iter().enumerate() {
                if !(inline && i == 0) {
                    out.push_str(&pad);
                }
                match value {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{key}:\n"));
                        write_value(out, value, indent + 2, false);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{key}:\n"));
                        write_value(out, value, indent + 2, false);
                    }
                    Value::Array(_) => out.push_str(&format!("{key}: []\n")),
                    Value::Object(_) => out.push_str(&format!("{key}: {{}}\n")),
                    _ => out.push_str(&format!("{key}: {}\n", scalar(value))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    Value::Object(m) if !m.is_empty() => write_value(out, item, indent + 2, true),
                    _ => out.push_str(&format!("{}\n", scalar(item))),
                }
            }
        }
        _ => out.push_str(&format!("{pad}{}\n", scalar(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::Gpu;

    fn one_gpu() -> Discovery {
        Discovery {
            driver_version: "580.159.04".into(),
            gpus: vec![Gpu {
                pci_address: "0000:00:06.0".into(),
                uuid: Some("GPU-1".into()),
                minor: 0,
                model: None,
            }],
            control_devices: vec!["/dev/nvidiactl".into()],
            libraries: vec!["/usr/lib64/libcuda.so.580.159.04".into()],
            ipc: vec!["/run/nvidia-persistenced/socket".into()],
            ..Discovery::default()
        }
    }

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let d = one_gpu();
        let yaml = to_yaml(&build(&d), &d);
        let body: Vec<&str> = yaml.lines().skip(2).collect();
        assert_eq!(
            body.join("\n"),
            r#"cdiVersion: "0.5.0"
containerEdits:
  deviceNodes:
    - path: "/dev/nvidiactl"
  env:
    - "NVIDIA_VISIBLE_DEVICES=void"
  mounts:
    - containerPath: "/usr/lib64/libcuda.so.580.159.04"
      hostPath: "/usr/lib64/libcuda.so.580.159.04"
      options:
        - "ro"
        - "nosuid"
        - "nodev"
        - "rbind"
        - "rprivate"
    - containerPath: "/run/nvidia-persistenced/socket"
      hostPath: "/run/nvidia-persistenced/socket"
      options:
        - "nosuid"
        - "nodev"
        - "rbind"
        - "rprivate"
        - "noexec"
devices:
  - containerEdits:
      deviceNodes:
        - path: "/dev/nvidia0"
    name: "0"
  - containerEdits:
      deviceNodes:
        - path: "/dev/nvidia0"
    name: "GPU-1"
  - containerEdits:
      deviceNodes:
        - path: "/dev/nvidia0"
    name: "all"
kind: "nvidia.com/gpu""#
        );
    }
}
