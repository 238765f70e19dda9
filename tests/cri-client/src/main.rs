//! `cri-client`: starts one container the way the kubelet does, over
//! containerd's CRI v1 API (not `ctr`, which bypasses the CRI plugin and its
//! runtime configuration), and prints what happened as one JSON object.
//!
//! ```text
//! cri-client [--socket PATH] version
//! cri-client [--socket PATH] run --image REF [--runtime-handler NAME]
//!            [--cdi-device KIND=NAME]... [--cdi-annotation KIND=NAME]...
//!            [--timeout SECONDS] -- COMMAND [ARG]...
//! ```
//!
//! `run` creates a pod sandbox (host network, so no CNI is needed), a
//! container in it running COMMAND, waits for it to exit, reads its log, and
//! removes both again, also when a step fails. CDI devices go in the
//! container config's `CDI_devices` field (CRI 1.28+, containerd 1.7.2+/2.x)
//! with `--cdi-device`, or as a `cdi.k8s.io/` annotation (the older way,
//! containerd 1.7+) with `--cdi-annotation`.
//! A test tool: errors end the process with a message on stderr and exit 2.

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{self as cri};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

#[derive(Debug, Default)]
struct RunArgs {
    image: String,
    runtime_handler: String,
    cdi_devices: Vec<String>,
    cdi_annotations: Vec<String>,
    timeout: Duration,
    command: Vec<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: cri-client [--socket PATH] version\n       \
         cri-client [--socket PATH] run --image REF [--runtime-handler NAME] \
         [--cdi-device KIND=NAME]... [--cdi-annotation KIND=NAME]... [--timeout SECONDS] -- COMMAND [ARG]..."
    );
    std::process::exit(2)
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("cri-client: {msg}");
    std::process::exit(2)
}

fn parse_run(mut args: std::vec::IntoIter<String>) -> RunArgs {
    let mut run = RunArgs {
        timeout: Duration::from_secs(60),
        ..RunArgs::default()
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--image" => run.image = value(),
            "--runtime-handler" => run.runtime_handler = value(),
            "--cdi-device" => run.cdi_devices.push(value()),
            "--cdi-annotation" => run.cdi_annotations.push(value()),
            "--timeout" => {
                let secs = value().parse().unwrap_or_else(|_| usage());
                run.timeout = Duration::from_secs(secs);
            }
            "--" => {
                run.command = args.by_ref().collect();
                break;
            }
            _ => usage(),
        }
    }
    if run.image.is_empty() || run.command.is_empty() {
        usage()
    }
    run
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut socket = DEFAULT_SOCKET.to_string();
    if args.first().map(String::as_str) == Some("--socket") && args.len() > 1 {
        socket = args.remove(1);
        args.remove(0);
    }
    let mut args = args.into_iter();
    let verb = args.next().unwrap_or_else(|| usage());
    let mut client = connect(&socket)
        .await
        .unwrap_or_else(|e| fail(format!("cannot connect to {socket}: {e}")));
    let version = client
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap_or_else(|e| fail(format!("Version: {}", e.message())))
        .into_inner();
    let mut out = json!({
        "runtime_name": version.runtime_name,
        "runtime_version": version.runtime_version,
        "runtime_api_version": version.runtime_api_version,
    });
    match verb.as_str() {
        "version" => {}
        "run" => {
            let run = parse_run(args);
            let result = run_container(&mut client, &run).await;
            let map = out.as_object_mut().expect("an object");
            map.insert("runtime_handler".into(), run.runtime_handler.clone().into());
            map.insert("cdi_devices".into(), run.cdi_devices.clone().into());
            map.insert("cdi_annotations".into(), run.cdi_annotations.clone().into());
            match result {
                Ok(done) => map.extend(done),
                Err(e) => {
                    map.insert("error".into(), e.into());
                    println!("{out}");
                    std::process::exit(1)
                }
            }
        }
        _ => usage(),
    }
    println!("{out}");
}

async fn connect(socket: &str) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
    let path = socket.to_string();
    // The URI is not used: every connection goes to the Unix socket.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(RuntimeServiceClient::new(channel))
}

fn host_namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The CDI annotations as the kubelet's device manager writes them: one key
/// per device, `cdi.k8s.io/<prefix>_<name>`, the device as the value.
fn cdi_annotations(devices: &[String]) -> HashMap<String, String> {
    devices
        .iter()
        .enumerate()
        .map(|(i, device)| (format!("cdi.k8s.io/cri-client_{i}"), device.clone()))
        .collect()
}

type Fields = serde_json::Map<String, serde_json::Value>;

async fn run_container(
    client: &mut RuntimeServiceClient<Channel>,
    run: &RunArgs,
) -> Result<Fields, String> {
    let name = format!("cri-client-{}", std::process::id());
    let log_dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: name.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        // No hostname: with the node's network the pod has the node's UTS
        // namespace too, and runc refuses to set a hostname there.
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(host_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox_id = client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: run.runtime_handler.clone(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let result = container_in(client, run, &sandbox_id, &sandbox_config, &log_dir).await;
    // Always clean up: a test run must not leave pods behind.
    let _ = client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.clone(),
        })
        .await;
    let removed = client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.clone(),
        })
        .await;
    let _ = std::fs::remove_dir_all(&log_dir);
    let mut fields = result?;
    fields.insert("pod_sandbox_id".into(), sandbox_id.into());
    fields.insert("pod_sandbox_removed".into(), removed.is_ok().into());
    Ok(fields)
}

async fn container_in(
    client: &mut RuntimeServiceClient<Channel>,
    run: &RunArgs,
    sandbox_id: &str,
    sandbox_config: &cri::PodSandboxConfig,
    log_dir: &std::path::Path,
) -> Result<Fields, String> {
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: run.image.clone(),
            ..Default::default()
        }),
        command: run.command.clone(),
        log_path: "main.log".into(),
        annotations: cdi_annotations(&run.cdi_annotations),
        cdi_devices: run
            .cdi_devices
            .iter()
            .map(|name| cri::CdiDevice { name: name.clone() })
            .collect(),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(host_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container_id = client
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .map_err(|e| format!("CreateContainer: {}", e.message()))?
        .into_inner()
        .container_id;
    client
        .start_container(cri::StartContainerRequest {
            container_id: container_id.clone(),
        })
        .await
        .map_err(|e| format!("StartContainer: {}", e.message()))?;
    let status = wait_for_exit(client, &container_id, run.timeout).await?;
    let log = std::fs::read_to_string(log_dir.join("main.log")).unwrap_or_default();
    let mut fields = Fields::new();
    fields.insert("container_id".into(), container_id.into());
    fields.insert("exit_code".into(), status.exit_code.into());
    fields.insert("reason".into(), status.reason.into());
    fields.insert("output".into(), log_content(&log).into());
    Ok(fields)
}

async fn wait_for_exit(
    client: &mut RuntimeServiceClient<Channel>,
    container_id: &str,
    timeout: Duration,
) -> Result<cri::ContainerStatus, String> {
    let start = Instant::now();
    loop {
        let status = client
            .container_status(cri::ContainerStatusRequest {
                container_id: container_id.to_string(),
                verbose: false,
            })
            .await
            .map_err(|e| format!("ContainerStatus: {}", e.message()))?
            .into_inner()
            .status
            .ok_or("ContainerStatus: no status")?;
        if status.state == cri::ContainerState::ContainerExited as i32 {
            return Ok(status);
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "the container did not exit within {}s",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of a CRI log file: each line is `TIMESTAMP STREAM TAG CONTENT`,
/// where tag `P` marks a partial line continued by the next.
fn log_content(log: &str) -> String {
    let mut text = String::new();
    for line in log.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_time, _stream, tag) = (parts.next(), parts.next(), parts.next());
        text.push_str(parts.next().unwrap_or(""));
        if tag != Some("P") {
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_joined_without_their_prefix() {
        let log = "2026-12-01T20:00:00.1Z stdout P GPU 0: NVIDIA \n\
                   2026-12-01T20:00:00.2Z stdout F H200\n\
                   2026-12-01T20:00:00.3Z stderr F done\n";
        assert_eq!(log_content(log), "GPU 0: NVIDIA H200\ndone\n");
    }

    #[test]
    fn one_annotation_per_cdi_device() {
        let a = cdi_annotations(&["nvidia.com/gpu=0".into(), "nvidia.com/gpu=1".into()]);
        assert_eq!(a["cdi.k8s.io/cri-client_0"], "nvidia.com/gpu=0");
        assert_eq!(a.len(), 2);
    }
}
