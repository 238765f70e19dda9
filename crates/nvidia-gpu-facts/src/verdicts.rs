//! verify.yml's last two checks, judged here rather than in Jinja: does
//! nvidia-smi see the GPUs detection found, and does a GPU container see
//! them. The role runs the commands and passes their registered results in
//! (`verdicts:`); these pure functions turn them into `{check, status, msg}`.
//! The messages are the ones the role's Jinja gave, word for word.

use serde::Deserialize;
use serde_json::{json, Value};

/// A registered `command`/`shell` result; every field absent when the task
/// was skipped (no `rc`: the command did not run).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Command {
    pub rc: Option<i64>,
    pub stdout_lines: Vec<String>,
    pub stderr_lines: Vec<String>,
    /// argv (a list) for `command`, a string for `shell`.
    pub cmd: Value,
}

impl Command {
    /// The first (or last) non-empty line of stderr then stdout, else "no message".
    fn line(&self, last: bool) -> String {
        let mut lines = self
            .stderr_lines
            .iter()
            .chain(&self.stdout_lines)
            .filter(|l| !l.is_empty());
        let line = if last {
            lines.next_back()
        } else {
            lines.next()
        };
        line.cloned().unwrap_or_else(|| "no message".into())
    }

    fn argv(&self) -> Vec<String> {
        match &self.cmd {
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

/// The `verdicts` option: what the role knows and ran.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub gpu_node_enabled: bool,
    /// verify_gpu_driver_expected.
    pub driver_expected: bool,
    /// inventory_hostname, named in the fix.
    pub host: String,
    /// The registered `nvidia-smi --query-gpu=pci.bus_id` run.
    #[serde(default)]
    pub nvidia_smi: Command,
    pub container: ContainerRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRequest {
    /// verify_container_image; empty or null: no container test.
    pub image: Option<String>,
    pub namespace: String,
    pub registry_config_path: String,
    /// verify_container_client: auto, nerdctl or ctr.
    pub client: String,
    /// verify_container_pull.
    pub pull_missing: bool,
    /// Whether containerd has the NVIDIA runtime with an existing binary.
    pub nvidia_runtime_usable: bool,
    #[serde(default)]
    pub images: Command,
    #[serde(default)]
    pub pull: Command,
    /// The container run: the role runs one of the two, as
    /// [`container_client`] picks.
    #[serde(default)]
    pub run_nerdctl: Command,
    #[serde(default)]
    pub run_ctr: Command,
}

impl ContainerRequest {
    /// The run of the picked client.
    fn run(&self, client: &str) -> &Command {
        if client == "nerdctl" {
            &self.run_nerdctl
        } else {
            &self.run_ctr
        }
    }
}

/// What detection says about the node, from this run of the module.
pub struct Detected<'a> {
    pub driver_loaded: bool,
    pub driver_version: Option<&'a str>,
    pub nouveau_loaded: bool,
    pub gpu_addresses: Vec<String>,
}

pub fn verdict(check: &str, status: &str, msg: String) -> Value {
    json!({"check": check, "status": status, "msg": msg})
}

/// A PCI address as both sides are compared: lowercase, with a 4-digit
/// domain (nvidia-smi prints 8 digits, 00000000:18:00.0; sysfs 4).
pub fn normalize_pci(address: &str) -> String {
    let address = address.to_lowercase();
    if let Some((domain, rest)) = address.split_once(':') {
        let short = domain.len().saturating_sub(4);
        let (zeros, hex) = domain.split_at(short);
        if domain.len() >= 4
            && zeros.chars().all(|c| c == '0')
            && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        {
            return format!("{hex}:{rest}");
        }
    }
    address
}

/// Items of `a` not in `b`, in `a`'s order, each once (Ansible's `difference`).
fn difference(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in a {
        if !b.contains(x) && !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// nvidia-smi against detection. A node without the loaded driver fails only
/// where it is a GPU node with a GPU that is expected to have the driver.
///
/// Longer than our ~60 lines on purpose: one arm per message, in the order
/// of the user-facing cases (as verify.yml's Jinja had them), so that every
/// message can be read, and compared with its table-test row, in one place.
pub fn nvidia_smi(req: &Request, d: &Detected) -> Value {
    let smi = &req.nvidia_smi;
    let gpu = req.gpu_node_enabled && !d.gpu_addresses.is_empty();
    let count = d.gpu_addresses.len();
    let seen: Vec<String> = smi
        .stdout_lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(normalize_pci)
        .collect();
    let detected: Vec<String> = d.gpu_addresses.iter().map(|a| normalize_pci(a)).collect();
    let missing = difference(&detected, &seen);
    let extra = difference(&seen, &detected);
    let driver = d
        .driver_version
        .filter(|v| !v.is_empty())
        .unwrap_or("unknown version");
    let rc = smi.rc.unwrap_or(0);
    let status = if !d.driver_loaded {
        if gpu && req.driver_expected {
            "FAIL"
        } else {
            "SKIP"
        }
    } else if rc != 0 || !missing.is_empty() || !extra.is_empty() {
        "FAIL"
    } else {
        "PASS"
    };
    let msg = if !d.driver_loaded && !gpu {
        let why = if req.gpu_node_enabled {
            "no NVIDIA GPU detected"
        } else {
            "not a GPU node"
        };
        format!("no NVIDIA driver loaded ({why})")
    } else if !d.driver_loaded && !req.driver_expected {
        "the NVIDIA driver is not loaded (not expected here: verify_gpu_driver_expected=false)"
            .into()
    } else if !d.driver_loaded {
        let why = if d.nouveau_loaded {
            "nouveau is loaded in its place: blacklist it and reboot, then install the NVIDIA driver \
             (install_gpu_driver=true, site.yml --tags driver)"
        } else {
            "install it (install_gpu_driver=true, site.yml --tags driver) or load it (modprobe nvidia)"
        };
        format!(
            "the NVIDIA driver is not loaded on this GPU node, so nvidia-smi cannot run and containers \
             get no GPU: {why}; set verify_gpu_driver_expected=false for {} if it is meant to run \
             without the driver",
            req.host
        )
    } else if rc == 127 {
        format!(
            "nvidia-smi is not installed, though the NVIDIA driver {driver} is loaded: install the \
             driver's utilities (nvidia-smi comes with the driver package or installer)"
        )
    } else if rc != 0 {
        format!(
            "nvidia-smi fails (exit {rc}: {}): the loaded driver {driver} and its user-space libraries \
             may not match (reboot after a driver update), see dmesg",
            smi.line(false)
        )
    } else if !missing.is_empty() || !extra.is_empty() {
        let mut msg = format!("nvidia-smi sees {} GPU(s), detection {count}", seen.len());
        if !missing.is_empty() {
            msg.push_str(&format!(
                " (nvidia-smi does not see {})",
                missing.join(", ")
            ));
        }
        if !extra.is_empty() {
            msg.push_str(&format!(" (only nvidia-smi sees {})", extra.join(", ")));
        }
        msg.push_str(
            ": a GPU is bound to another driver, has fallen off the bus (dmesg: Xid) or is hidden by \
             CUDA_VISIBLE_DEVICES; see nvidia-smi -q",
        );
        msg
    } else {
        format!("nvidia-smi sees the {count} GPU(s) detection found (driver {driver})")
    };
    verdict("nvidia-smi", status, msg)
}

/// Why the container test cannot run on this node; None: it can. The role's
/// `when:` on the container commands states the same conditions.
pub fn container_skip(
    c: &ContainerRequest,
    gpu_node_enabled: bool,
    driver_loaded: bool,
) -> Option<&'static str> {
    if c.image.as_deref().unwrap_or("").is_empty() {
        Some("no verify_container_image given")
    } else if !gpu_node_enabled {
        Some("not a GPU node")
    } else if !driver_loaded {
        Some("the NVIDIA driver is not loaded")
    } else if !c.nvidia_runtime_usable {
        Some("containerd has no usable NVIDIA runtime (see the containerd check)")
    } else {
        None
    }
}

/// The client the container test uses, and nerdctl's path as the images
/// command found it ("" when not found): nerdctl for `nerdctl`, and for
/// `auto` where nerdctl is on the node; else ctr.
pub fn container_client(c: &ContainerRequest) -> (&'static str, String) {
    let found = c
        .images
        .stdout_lines
        .iter()
        .find_map(|l| l.strip_prefix("nerdctl="))
        .unwrap_or("")
        .to_string();
    let ctr = c.client == "ctr" || (c.client == "auto" && found.is_empty());
    (if ctr { "ctr" } else { "nerdctl" }, found)
}

/// Whether the container sees the GPUs detection counts.
///
/// Longer than our ~60 lines on purpose, like [`nvidia_smi`]: one arm per
/// message, in the order the cases are checked, each with its table-test row.
pub fn container(req: &Request, d: &Detected, check_mode: bool) -> Value {
    let c = &req.container;
    if let Some(why) = container_skip(c, req.gpu_node_enabled, d.driver_loaded) {
        return verdict("container", "SKIP", why.into());
    }
    let image = c.image.as_deref().unwrap_or("");
    let ns = &c.namespace;
    let count = d.gpu_addresses.len();
    let (client, nerdctl_path) = container_client(c);
    let run = c.run(client);
    let seen = run.stdout_lines.iter().filter(|l| is_gpu_line(l)).count();
    let ran = run.rc.is_some();
    let pulled = c.pull.rc.is_some();
    let images_rc = c.images.rc.unwrap_or(0);
    let check_mode_skip = !ran && !pulled && check_mode && c.images.rc == Some(0) && c.pull_missing;
    let status = if check_mode_skip {
        "SKIP"
    } else if ran && run.rc == Some(0) && seen == count {
        "PASS"
    } else {
        "FAIL"
    };
    let msg = if images_rc == 127 {
        "ctr (containerd's client) is not installed: it comes with containerd's package; install it, \
         or leave verify_container_image unset"
            .to_string()
    } else if client == "nerdctl" && nerdctl_path.is_empty() {
        "verify_container_client is nerdctl, but nerdctl is not on the node's PATH: install it, or set \
         verify_container_client to auto or ctr"
            .to_string()
    } else if images_rc != 0 {
        let first = c
            .images
            .stderr_lines
            .first()
            .map(String::as_str)
            .unwrap_or("no message");
        format!(
            "ctr cannot reach containerd (exit {images_rc}: {first}): start containerd (systemctl start \
             containerd) and look at its log (journalctl -u containerd)"
        )
    } else if check_mode_skip {
        format!(
            "{image} is not on the node yet and check mode pulls nothing: run without --check, or pull \
             it first (ctr -n {ns} images pull {image})"
        )
    } else if !ran && !pulled {
        format!(
            "{image} is not on the node and verify_container_pull is false: pull it first (ctr -n {ns} \
             images pull {image})"
        )
    } else if !ran {
        format!(
            "cannot pull {image} (exit {}: {}): check its name and the registry (air-gapped: your \
             registry's copy, with hosts.toml in {}), or pull it by hand",
            c.pull.rc.unwrap_or(0),
            c.pull.line(true),
            c.registry_config_path
        )
    } else if run.rc != Some(0) {
        let rc = run.rc.unwrap_or(0);
        format!(
            "the GPU container ({client} run) failed (exit {rc}{}: {}): look at the NVIDIA runtime's log \
             (/var/log/nvidia-container-runtime.log) and run the command by hand: {}",
            if rc == 124 { ", timed out" } else { "" },
            run.line(true),
            run.argv().join(" ")
        )
    } else if seen != count {
        format!(
            "the container sees {seen} GPU(s), detection {count}: check NVIDIA_VISIBLE_DEVICES handling \
             and the NVIDIA runtime's configuration (/etc/nvidia-container-runtime/config.toml)"
        )
    } else if client == "nerdctl" {
        format!(
            "nerdctl run --rm --gpus all (the guide's command): a container of {image} sees the {count} \
             GPU(s)"
        )
    } else {
        let argv = run.argv();
        let runtime = argv
            .iter()
            .position(|a| a == "--runc-binary")
            .and_then(|i| argv.get(i + 1))
            .map(String::as_str)
            .unwrap_or("");
        format!("ctr run with the NVIDIA runtime ({runtime}): a container of {image} sees the {count} GPU(s)")
    };
    verdict("container", status, msg)
}

/// `nvidia-smi -L`'s line for a GPU: `GPU <n>: ...`.
fn is_gpu_line(line: &str) -> bool {
    line.strip_prefix("GPU ")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Both verdicts, in the order verify.yml reports them.
pub fn judge(req: &Request, d: &Detected, check_mode: bool) -> Vec<Value> {
    vec![nvidia_smi(req, d), container(req, d, check_mode)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(rc: Option<i64>, stdout: &[&str], stderr: &[&str], argv: &[&str]) -> Command {
        Command {
            rc,
            stdout_lines: stdout.iter().map(|s| s.to_string()).collect(),
            stderr_lines: stderr.iter().map(|s| s.to_string()).collect(),
            cmd: json!(argv),
        }
    }

    fn request(smi: Command, container: ContainerRequest) -> Request {
        Request {
            gpu_node_enabled: true,
            driver_expected: true,
            host: "worker2".into(),
            nvidia_smi: smi,
            container,
        }
    }

    fn container_request(image: &str) -> ContainerRequest {
        ContainerRequest {
            image: Some(image.into()),
            namespace: "k8s.io".into(),
            registry_config_path: "/etc/containerd/certs.d".into(),
            client: "auto".into(),
            pull_missing: true,
            nvidia_runtime_usable: true,
            images: cmd(Some(0), &[], &[], &[]),
            pull: Command::default(),
            run_nerdctl: Command::default(),
            run_ctr: Command::default(),
        }
    }

    fn detected(loaded: bool, nouveau: bool, gpus: &[&str]) -> Detected<'static> {
        Detected {
            driver_loaded: loaded,
            driver_version: loaded.then_some("570.124.06"),
            nouveau_loaded: nouveau,
            gpu_addresses: gpus.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn pci_addresses_compare_with_a_four_digit_domain() {
        assert_eq!(normalize_pci("00000000:18:00.0"), "0000:18:00.0");
        assert_eq!(normalize_pci("00000001:1A:00.0"), "0001:1a:00.0");
        assert_eq!(normalize_pci("0000:18:00.0"), "0000:18:00.0");
        assert_eq!(normalize_pci("00012345:18:00.0"), "00012345:18:00.0");
        assert_eq!(normalize_pci("garbage"), "garbage");
    }

    #[test]
    fn nvidia_smi_verdict_one_row_per_message() {
        const GPU: &str = "0000:18:00.0";
        const GPU2: &str = "0000:2a:00.0";
        // (gpu_node_enabled, driver_expected, loaded, nouveau, gpus, smi, status, msg)
        // (gpu_node_enabled, driver_expected, loaded, nouveau, gpus, smi, status, msg)
        type Row<'a> = (
            bool,
            bool,
            bool,
            bool,
            Vec<&'a str>,
            Command,
            &'a str,
            &'a str,
        );
        let table: Vec<Row> = vec![
            (false, true, false, false, vec![], Command::default(), "SKIP",
             "no NVIDIA driver loaded (not a GPU node)"),
            (true, true, false, false, vec![], Command::default(), "SKIP",
             "no NVIDIA driver loaded (no NVIDIA GPU detected)"),
            (true, false, false, false, vec![GPU], Command::default(), "SKIP",
             "the NVIDIA driver is not loaded (not expected here: verify_gpu_driver_expected=false)"),
            (true, true, false, true, vec![GPU], Command::default(), "FAIL",
             "the NVIDIA driver is not loaded on this GPU node, so nvidia-smi cannot run and containers get \
              no GPU: nouveau is loaded in its place: blacklist it and reboot, then install the NVIDIA driver \
              (install_gpu_driver=true, site.yml --tags driver); set verify_gpu_driver_expected=false for \
              worker2 if it is meant to run without the driver"),
            (true, true, false, false, vec![GPU], Command::default(), "FAIL",
             "the NVIDIA driver is not loaded on this GPU node, so nvidia-smi cannot run and containers get \
              no GPU: install it (install_gpu_driver=true, site.yml --tags driver) or load it (modprobe \
              nvidia); set verify_gpu_driver_expected=false for worker2 if it is meant to run without the driver"),
            (true, true, true, false, vec![GPU], cmd(Some(127), &[], &[], &[]), "FAIL",
             "nvidia-smi is not installed, though the NVIDIA driver 570.124.06 is loaded: install the driver's \
              utilities (nvidia-smi comes with the driver package or installer)"),
            (true, true, true, false, vec![GPU],
             cmd(Some(9), &["NVIDIA-SMI has failed"], &["", "Failed to initialize NVML: Driver/library version mismatch"], &[]),
             "FAIL",
             "nvidia-smi fails (exit 9: Failed to initialize NVML: Driver/library version mismatch): the loaded \
              driver 570.124.06 and its user-space libraries may not match (reboot after a driver update), see dmesg"),
            (true, true, true, false, vec![GPU], cmd(Some(9), &[], &[], &[]), "FAIL",
             "nvidia-smi fails (exit 9: no message): the loaded driver 570.124.06 and its user-space libraries \
              may not match (reboot after a driver update), see dmesg"),
            (true, true, true, false, vec![GPU, GPU2], cmd(Some(0), &["00000000:18:00.0"], &[], &[]), "FAIL",
             "nvidia-smi sees 1 GPU(s), detection 2 (nvidia-smi does not see 0000:2a:00.0): a GPU is bound to \
              another driver, has fallen off the bus (dmesg: Xid) or is hidden by CUDA_VISIBLE_DEVICES; see nvidia-smi -q"),
            (true, true, true, false, vec![GPU], cmd(Some(0), &["00000000:18:00.0", "00000000:2A:00.0"], &[], &[]), "FAIL",
             "nvidia-smi sees 2 GPU(s), detection 1 (only nvidia-smi sees 0000:2a:00.0): a GPU is bound to \
              another driver, has fallen off the bus (dmesg: Xid) or is hidden by CUDA_VISIBLE_DEVICES; see nvidia-smi -q"),
            (true, true, true, false, vec![GPU2], cmd(Some(0), &["00000000:18:00.0"], &[], &[]), "FAIL",
             "nvidia-smi sees 1 GPU(s), detection 1 (nvidia-smi does not see 0000:2a:00.0) (only nvidia-smi sees \
              0000:18:00.0): a GPU is bound to another driver, has fallen off the bus (dmesg: Xid) or is hidden \
              by CUDA_VISIBLE_DEVICES; see nvidia-smi -q"),
            (true, true, true, false, vec![GPU, GPU2], cmd(Some(0), &[" 00000000:18:00.0 ", "", "00000000:2A:00.0"], &[], &[]), "PASS",
             "nvidia-smi sees the 2 GPU(s) detection found (driver 570.124.06)"),
        ];
        for (enabled, expected, loaded, nouveau, gpus, smi, status, msg) in table {
            let mut req = request(smi, container_request(""));
            req.gpu_node_enabled = enabled;
            req.driver_expected = expected;
            let got = nvidia_smi(&req, &detected(loaded, nouveau, &gpus));
            assert_eq!(
                got,
                json!({"check": "nvidia-smi", "status": status, "msg": msg}),
                "{msg}"
            );
        }
    }

    #[test]
    fn an_unknown_driver_version_is_said_so() {
        let req = request(
            cmd(Some(0), &["00000000:18:00.0"], &[], &[]),
            container_request(""),
        );
        let mut d = detected(true, false, &["0000:18:00.0"]);
        d.driver_version = None;
        assert_eq!(
            nvidia_smi(&req, &d)["msg"],
            "nvidia-smi sees the 1 GPU(s) detection found (driver unknown version)"
        );
    }

    #[test]
    fn container_skips_one_row_per_reason() {
        let table: Vec<(&str, bool, bool, bool, &str)> = vec![
            ("", true, true, true, "no verify_container_image given"),
            ("cuda", false, true, true, "not a GPU node"),
            ("cuda", true, false, true, "the NVIDIA driver is not loaded"),
            (
                "cuda",
                true,
                true,
                false,
                "containerd has no usable NVIDIA runtime (see the containerd check)",
            ),
        ];
        for (image, enabled, loaded, usable, msg) in table {
            let mut c = container_request(image);
            c.nvidia_runtime_usable = usable;
            c.images = Command::default();
            let mut req = request(Command::default(), c);
            req.gpu_node_enabled = enabled;
            let got = container(&req, &detected(loaded, false, &["0000:18:00.0"]), false);
            assert_eq!(
                got,
                json!({"check": "container", "status": "SKIP", "msg": msg})
            );
        }
        let mut c = container_request("cuda");
        c.image = None;
        assert_eq!(
            container_skip(&c, true, true),
            Some("no verify_container_image given")
        );
    }

    #[test]
    fn container_client_is_nerdctl_where_found_or_asked() {
        let mut c = container_request("cuda");
        assert_eq!(container_client(&c), ("ctr", String::new()));
        c.images = cmd(
            Some(0),
            &["nerdctl=/usr/local/bin/nerdctl", "cuda"],
            &[],
            &[],
        );
        assert_eq!(
            container_client(&c),
            ("nerdctl", "/usr/local/bin/nerdctl".into())
        );
        c.client = "ctr".into();
        assert_eq!(container_client(&c).0, "ctr");
        c.client = "nerdctl".into();
        c.images = cmd(Some(0), &[], &[], &[]);
        assert_eq!(container_client(&c), ("nerdctl", String::new()));
    }

    #[test]
    fn container_verdict_one_row_per_message() {
        const IMG: &str = "nvcr.io/nvidia/cuda:12.4.1-base-ubi9";
        let ctr_argv = [
            "timeout",
            "300",
            "ctr",
            "--namespace",
            "k8s.io",
            "run",
            "--rm",
            "--runtime",
            "io.containerd.runc.v2",
            "--runc-binary",
            "/usr/bin/nvidia-container-runtime",
            "--env",
            "NVIDIA_VISIBLE_DEVICES=all",
            IMG,
            "gpu-node-verify-1",
            "nvidia-smi",
            "-L",
        ];
        let two = [
            "GPU 0: NVIDIA H200 (UUID: GPU-1)",
            "GPU 1: NVIDIA H200 (UUID: GPU-2)",
        ];
        let nerdctl = ["nerdctl=/usr/bin/nerdctl", IMG];
        // (client, images, pull, run, pull_missing, check_mode, status, msg)
        // (client, images, pull, run, pull_missing, check_mode, status, msg)
        type Row<'a> = (
            &'a str,
            Command,
            Command,
            Command,
            bool,
            bool,
            &'a str,
            String,
        );
        let table: Vec<Row> = vec![
            ("auto", cmd(Some(127), &[], &[], &[]), Command::default(), Command::default(), true, false, "FAIL",
             "ctr (containerd's client) is not installed: it comes with containerd's package; install it, or \
              leave verify_container_image unset".into()),
            ("nerdctl", cmd(Some(0), &[IMG], &[], &[]), Command::default(), Command::default(), true, false, "FAIL",
             "verify_container_client is nerdctl, but nerdctl is not on the node's PATH: install it, or set \
              verify_container_client to auto or ctr".into()),
            ("auto", cmd(Some(1), &[], &["ctr: failed to dial", "more"], &[]), Command::default(), Command::default(),
             true, false, "FAIL",
             "ctr cannot reach containerd (exit 1: ctr: failed to dial): start containerd (systemctl start \
              containerd) and look at its log (journalctl -u containerd)".into()),
            ("auto", cmd(Some(1), &[], &[], &[]), Command::default(), Command::default(), true, false, "FAIL",
             "ctr cannot reach containerd (exit 1: no message): start containerd (systemctl start containerd) \
              and look at its log (journalctl -u containerd)".into()),
            ("auto", cmd(Some(0), &[], &[], &[]), Command::default(), Command::default(), true, true, "SKIP",
             format!("{IMG} is not on the node yet and check mode pulls nothing: run without --check, or pull it \
                      first (ctr -n k8s.io images pull {IMG})")),
            ("auto", cmd(Some(0), &[], &[], &[]), Command::default(), Command::default(), false, false, "FAIL",
             format!("{IMG} is not on the node and verify_container_pull is false: pull it first (ctr -n k8s.io \
                      images pull {IMG})")),
            ("auto", cmd(Some(0), &[], &[], &[]), cmd(Some(1), &["resolving", ""], &["ctr: not found", ""], &[]),
             Command::default(), true, false, "FAIL",
             format!("cannot pull {IMG} (exit 1: resolving): check its name and the registry (air-gapped: your \
                      registry's copy, with hosts.toml in /etc/containerd/certs.d), or pull it by hand")),
            ("auto", cmd(Some(0), &[IMG], &[], &[]), Command::default(),
             cmd(Some(124), &[], &["", "still starting"], &ctr_argv), true, false, "FAIL",
             format!("the GPU container (ctr run) failed (exit 124, timed out: still starting): look at the \
                      NVIDIA runtime's log (/var/log/nvidia-container-runtime.log) and run the command by hand: {}",
                     ctr_argv.join(" "))),
            ("auto", cmd(Some(0), &nerdctl, &[], &[]), Command::default(),
             cmd(Some(1), &[], &[], &["nerdctl", "run"]), true, false, "FAIL",
             "the GPU container (nerdctl run) failed (exit 1: no message): look at the NVIDIA runtime's log \
              (/var/log/nvidia-container-runtime.log) and run the command by hand: nerdctl run".into()),
            ("auto", cmd(Some(0), &[IMG], &[], &[]), Command::default(),
             cmd(Some(0), &[two[0], "No devices found"], &[], &ctr_argv), true, false, "FAIL",
             "the container sees 1 GPU(s), detection 2: check NVIDIA_VISIBLE_DEVICES handling and the NVIDIA \
              runtime's configuration (/etc/nvidia-container-runtime/config.toml)".into()),
            ("auto", cmd(Some(0), &nerdctl, &[], &[]), Command::default(), cmd(Some(0), &two, &[], &[]), true, false,
             "PASS", format!("nerdctl run --rm --gpus all (the guide's command): a container of {IMG} sees the 2 GPU(s)")),
            ("auto", cmd(Some(0), &[], &[], &[]), cmd(Some(0), &[], &[], &[]), cmd(Some(0), &two, &[], &ctr_argv),
             true, false, "PASS",
             format!("ctr run with the NVIDIA runtime (/usr/bin/nvidia-container-runtime): a container of {IMG} \
                      sees the 2 GPU(s)")),
        ];
        for (client, images, pull, run, pull_missing, check_mode, status, msg) in table {
            let mut c = container_request(IMG);
            c.client = client.into();
            c.images = images;
            c.pull = pull;
            if container_client(&c).0 == "nerdctl" {
                c.run_nerdctl = run;
            } else {
                c.run_ctr = run;
            }
            c.pull_missing = pull_missing;
            let req = request(Command::default(), c);
            let got = container(
                &req,
                &detected(true, false, &["0000:18:00.0", "0000:2a:00.0"]),
                check_mode,
            );
            assert_eq!(
                got,
                json!({"check": "container", "status": status, "msg": msg}),
                "{msg}"
            );
        }
    }
}
