//! The `nvidia_gpu_facts` module: NVIDIA detection as Ansible facts, and
//! optionally as a local facts file (`/etc/ansible/facts.d/gpu.fact`).
//!
//! The facts never include `has_nvidia_gpu`: that name belongs to the user,
//! who sets it in the inventory or with `-e` to override detection. A module
//! fact outranks host_vars and group_vars and stays in the fact cache, so a
//! fact of that name would silently defeat the override.
//!
//! The GPU mode rule ([`decide_gpu_mode`]): the user's `has_nvidia_gpu`
//! variable, else the `has_nvidia_gpu` of a local facts file that is the
//! user's (the Korean guide's `gpu.fact`), else detection.

pub mod local_facts;
pub mod site_plan;
pub mod verdicts;

use local_facts::FactsFile;

use ansible_module::{Arg, Failure, Module, ModuleSpec, Outcome};
use node_probe::gpu::{self, Detection};
use node_probe::{kernel, os, Root};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

pub const SPEC: ModuleSpec = ModuleSpec {
    name: "nvidia_gpu_facts",
    supports_check_mode: true,
    args: &[
        Arg::path("root").default_str("/"),
        Arg::path("local_facts_path"),
        Arg::bool("local_facts_write").default_bool(true),
        Arg::bool("decide_gpu_mode").default_bool(false),
        Arg::bool("has_nvidia_gpu"),
        Arg::list("supported_os_families"),
        Arg::dict("site_plan"),
        Arg::dict("verdicts"),
    ],
    ..ModuleSpec::BASE
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The filesystem to inspect: `/` on a node, a chroot or image otherwise.
    pub root: PathBuf,
    /// Also write the detection as JSON here, for `ansible_local`, unless
    /// the file there is the user's: then its `has_nvidia_gpu` is read.
    pub local_facts_path: Option<PathBuf>,
    /// false: only read the local facts file (for playbooks that change nothing).
    pub local_facts_write: bool,
    /// Also return the node's GPU mode (`gpu_node_enabled`,
    /// `gpu_node_mode_source`), as the gpu_node_mode role decides it: in the
    /// same call, so that a play pays no task of its own for the decision.
    pub decide_gpu_mode: bool,
    /// The user's GPU mode (the inventory's has_nvidia_gpu), which wins over
    /// detection; unset (null), detection decides. Never returned as a fact.
    pub has_nvidia_gpu: Option<bool>,
    /// Fail, writing nothing, on a node whose OS family is none of these.
    pub supported_os_families: Option<Vec<String>>,
    /// site.yml's variables that decide its optional plays: with
    /// decide_gpu_mode, `site_groups` says which of them this node needs.
    pub site_plan: Option<site_plan::SitePlanVars>,
    /// verify.yml's nvidia-smi and container checks: the commands' registered
    /// results, judged against this run's detection (returned as `verdicts`).
    pub verdicts: Option<verdicts::Request>,
}

/// Detects, writes the local facts file when asked, and returns the facts.
pub fn run(module: &mut Module, opts: Options) -> Result<Outcome, Failure> {
    if let Some(path) = opts.local_facts_path.as_ref().filter(|p| !p.is_absolute()) {
        return Err(Failure::new(format!(
            "local_facts_path must be an absolute path on the node, not {}",
            path.display()
        )));
    }
    if !opts.root.is_dir() {
        return Err(Failure::new(format!(
            "root {} is not a directory: it must be the filesystem to inspect, / on a node",
            opts.root.display()
        )));
    }
    let root = Root::new(&opts.root);
    let detection = gpu::detect(&root);
    for warning in &detection.warnings {
        module.warn(warning.clone());
    }
    let mut facts = facts(&root, &detection);
    if let Some(families) = &opts.supported_os_families {
        check_os_family(&facts, families)?;
    }
    let mut outcome = Outcome::new(false).msg(summary(&detection));
    let facts_file = match &opts.local_facts_path {
        Some(path) => {
            let file = local_facts::inspect(path)?;
            keep_local_facts(module, path, &file, &opts, &facts, &mut outcome)?;
            file
        }
        None => FactsFile::Absent,
    };
    if opts.decide_gpu_mode {
        let (enabled, source) = decide_gpu_mode(
            opts.has_nvidia_gpu,
            facts_file.users_gpu_mode(),
            !detection.gpus.is_empty(),
        );
        facts.insert("gpu_node_enabled".into(), enabled.into());
        facts.insert("gpu_node_mode_source".into(), source.name().into());
        let check = gpu_mode_check(
            enabled,
            source,
            detection.gpus.len(),
            opts.local_facts_path.as_deref(),
        );
        outcome = outcome.value("gpu_mode_check", check);
        if let Some(vars) = opts.site_plan {
            let loaded = facts["nvidia_driver_loaded"].as_bool().unwrap_or(false);
            outcome = outcome.value("site_groups", site_plan::site_groups(vars, enabled, loaded));
        }
    } else if opts.has_nvidia_gpu.is_some() || opts.site_plan.is_some() {
        module.warn("has_nvidia_gpu and site_plan are used only with decide_gpu_mode: true; they are ignored");
    }
    if let Some(request) = &opts.verdicts {
        outcome = outcome.value("verdicts", judge(request, &detection, module.check_mode()));
    }
    outcome.facts = facts;
    Ok(outcome)
}

/// verify.yml's nvidia-smi and container verdicts, against `detection`.
fn judge(request: &verdicts::Request, detection: &Detection, check_mode: bool) -> Vec<Value> {
    let detected = verdicts::Detected {
        driver_loaded: detection.driver.loaded,
        driver_version: detection.driver.version.as_deref(),
        nouveau_loaded: detection.nouveau_loaded,
        gpu_addresses: detection
            .gpus
            .iter()
            .map(|g| g.pci.address.clone())
            .collect(),
    };
    verdicts::judge(request, &detected, check_mode)
}

/// The node's OS family must be one of `families`; the message is the one
/// install_os_package's assert gave.
fn check_os_family(facts: &Map<String, Value>, families: &[String]) -> Result<(), Failure> {
    let family = facts["node_os_family"].as_str();
    if family.is_some_and(|f| families.iter().any(|x| x == f)) {
        return Ok(());
    }
    Err(Failure::new(format!(
        "This node runs {} {} (OS family {}); supported OS families: {}.",
        facts["node_os_id"].as_str().unwrap_or("an unknown OS"),
        facts["node_os_version"].as_str().unwrap_or(""),
        family.unwrap_or("unknown"),
        families.join(", ")
    )))
}

/// The facts, named as the playbooks and the documentation use them.
pub fn facts(root: &Root, d: &Detection) -> Map<String, Value> {
    let gpus: Vec<Value> = d
        .gpus
        .iter()
        .map(|g| {
            json!({
                "pci_address": g.pci.address,
                "device_id": g.pci.device.map(|id| format!("{id:04x}")),
                "subsystem_device_id": g.pci.subsystem_device.map(|id| format!("{id:04x}")),
                "class": g.pci.class_subclass().map(|c| format!("{c:04x}")),
                "name": g.name,
                "architecture": g.architecture.map(|a| a.name()),
                "driver": g.pci.driver,
                "numa_node": g.pci.numa_node,
            })
        })
        .collect();
    let nvswitches: Vec<Value> = d
        .nvswitches
        .iter()
        .map(|s| {
            json!({
                "pci_address": s.address,
                "device_id": s.device.map(|id| format!("{id:04x}")),
                "driver": s.driver,
            })
        })
        .collect();
    let os = os::os_release(root).unwrap_or_default();
    let facts = json!({
        "nvidia_gpu_present": !d.gpus.is_empty(),
        "nvidia_gpu_count": d.gpus.len(),
        "nvidia_gpus": gpus,
        "nvidia_nvswitch_count": d.nvswitches.len(),
        "nvidia_nvswitches": nvswitches,
        "nvidia_driver_loaded": d.driver.loaded,
        "nvidia_driver_version": d.driver.version,
        "nvidia_kernel_module_type": d.driver.module_type.map(|t| t.name()),
        "nouveau_loaded": d.nouveau_loaded,
        "nvidia_container_runtime_path": d.container_runtime_path,
        "node_architecture": std::env::consts::ARCH,
        "node_kernel_release": kernel::release(root),
        "node_os_family": os.family(),
        "node_os_id": os.id,
        "node_os_version": os.version_id,
        // sd_booted(3)'s test. A fact, so that the roles' handlers know how to
        // restart a service without asking the node again.
        "node_systemd": root.path("/run/systemd/system").is_dir(),
    });
    match facts {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// One line for the task output: what was found, at a glance.
fn summary(d: &Detection) -> String {
    if d.gpus.is_empty() {
        return "no NVIDIA GPU".to_string();
    }
    let mut names: Vec<&str> = d
        .gpus
        .iter()
        .map(|g| g.name.as_deref().unwrap_or("unnamed"))
        .collect();
    names.dedup();
    let mut line = format!(
        "{} NVIDIA GPU{} ({})",
        d.gpus.len(),
        if d.gpus.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    if !d.nvswitches.is_empty() {
        line.push_str(&format!(", {} NVSwitches", d.nvswitches.len()));
    }
    match (&d.driver.version, d.driver.module_type) {
        (Some(v), Some(t)) => line.push_str(&format!(", driver {v} ({})", t.name())),
        (Some(v), None) => line.push_str(&format!(", driver {v}")),
        (None, _) if d.driver.loaded => {
            line.push_str(", NVIDIA driver loaded, its version unreadable")
        }
        _ if d.nouveau_loaded => line.push_str(", nouveau loaded, no NVIDIA driver"),
        _ => line.push_str(", no NVIDIA driver loaded"),
    }
    line
}

/// Keeps the local facts file: says whose it is; leaves the user's as it is,
/// saying what it decides; writes ours unless only reading (an unreadable
/// one is replaced, saying so).
fn keep_local_facts(
    module: &mut Module,
    path: &Path,
    file: &FactsFile,
    opts: &Options,
    facts: &Map<String, Value>,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    if let FactsFile::Users { .. } = file {
        outcome
            .values
            .insert("local_facts_owner".into(), "user".into());
        module.warn(users_file_note(path, file, opts.has_nvidia_gpu));
        return Ok(());
    }
    outcome
        .values
        .insert("local_facts_owner".into(), local_facts::OWNER.into());
    // Before any write: what a reader of the file (ansible_local) sees now.
    if let FactsFile::Ours { content, .. } = file {
        let differences = local_facts::differences(content, &detection_facts(facts));
        outcome
            .values
            .insert("local_facts_differences".into(), differences.into());
    }
    if !opts.local_facts_write {
        return Ok(());
    }
    if let FactsFile::Unreadable { .. } = file {
        module.warn(format!(
            "{} is neither JSON nor INI, so Ansible cannot read it: it is replaced by the detection, \
             the old file kept beside it as a backup",
            path.display()
        ));
    }
    let written = local_facts::write(path, file, detection_facts(facts), module.check_mode())?;
    outcome.changed = written.changed;
    outcome.diffs.extend(written.diff);
    Ok(())
}

/// The detection part of the facts (not the node_* ones), as the local facts
/// file holds it: stable JSON, so an unchanged node means an unchanged file.
fn detection_facts(facts: &Map<String, Value>) -> Map<String, Value> {
    facts
        .iter()
        .filter(|(name, _)| !name.starts_with("node_") && !name.starts_with("gpu_node_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Where a node's GPU mode came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeSource {
    /// The `has_nvidia_gpu` variable (inventory, group_vars, host_vars, `-e`).
    User,
    /// `has_nvidia_gpu` in the user's local facts file on the node.
    LocalFacts,
    Detected,
}

impl ModeSource {
    /// As the fact `gpu_node_mode_source` gives it.
    pub fn name(self) -> &'static str {
        match self {
            ModeSource::User => "user",
            ModeSource::LocalFacts => "local_facts",
            ModeSource::Detected => "detected",
        }
    }
}

/// The node's GPU mode. The variable wins over the node's facts file: it is
/// what the operator running the play set (and `-e` must win over everything),
/// while the file is a node-local setting made once, often long ago.
pub fn decide_gpu_mode(
    variable: Option<bool>,
    local_facts_file: Option<bool>,
    detected: bool,
) -> (bool, ModeSource) {
    match (variable, local_facts_file) {
        (Some(user), _) => (user, ModeSource::User),
        (None, Some(file)) => (file, ModeSource::LocalFacts),
        (None, None) => (detected, ModeSource::Detected),
    }
}

/// How detection agrees with the decided GPU mode: `{status, msg}`, status
/// PASS (they agree), FAIL (GPU mode without a GPU: the NVIDIA runtime as
/// the default, for no GPU) or WARN (a GPU node set up as a CPU node: its
/// GPUs may be kept for something else on purpose). A mismatch is always
/// the user's doing (detection alone decides in agreement with itself).
pub fn gpu_mode_check(
    enabled: bool,
    source: ModeSource,
    gpus: usize,
    local_facts_path: Option<&Path>,
) -> Value {
    let detected = gpus > 0;
    let counted = format!("{gpus} NVIDIA GPU{}", if gpus == 1 { "" } else { "s" });
    let (status, msg) = match (enabled, detected) {
        (true, false) => (
            "FAIL",
            "has_nvidia_gpu=true, but no NVIDIA GPU is detected on this node (site.yml makes the \
             NVIDIA runtime containerd's default there, for no GPU)"
                .to_string(),
        ),
        (false, true) => (
            "WARN",
            format!(
                "has_nvidia_gpu=false although detection finds {counted}: the node is set up as a \
                 CPU node and its pods get no GPU"
            ),
        ),
        _ => {
            let node = if enabled { "GPU node" } else { "CPU node" };
            let found = if detected {
                format!("{counted} detected")
            } else {
                "no NVIDIA GPU detected".to_string()
            };
            let set_by = match (source, local_facts_path) {
                (ModeSource::User, _) => format!(" (has_nvidia_gpu={enabled})"),
                (ModeSource::LocalFacts, Some(path)) => {
                    format!(" (has_nvidia_gpu={enabled} in {})", path.display())
                }
                _ => String::new(),
            };
            ("PASS", format!("{node}: {found}{set_by}"))
        }
    };
    json!({"status": status, "msg": msg})
}

/// The run says that the facts file is the user's, kept, and what it decides.
fn users_file_note(path: &Path, file: &FactsFile, variable: Option<bool>) -> String {
    let mut note = format!(
        "{} is not written by nvidia_gpu_facts (the guide's gpu.fact, for instance): it is left as it is",
        path.display()
    );
    match (file.users_gpu_mode(), variable) {
        (Some(f), Some(v)) if f != v => note.push_str(&format!(
            "; its has_nvidia_gpu: {f} is overridden by the has_nvidia_gpu: {v} set in Ansible \
             (inventory, group_vars, host_vars or -e), which wins"
        )),
        (Some(f), Some(_)) => note.push_str(&format!(
            "; its has_nvidia_gpu: {f} agrees with the has_nvidia_gpu set in Ansible, which decides"
        )),
        (Some(f), None) => note.push_str(&format!(
            " and its has_nvidia_gpu: {f} sets this node's GPU mode (gpu_node_mode_source: local_facts)"
        )),
        (None, _) => note.push_str("; it sets no has_nvidia_gpu, so it does not change the node's GPU mode"),
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_mode_check_passes_agreement_fails_a_forced_mode_and_warns_a_disabled_one() {
        use ModeSource::*;
        let facts = Some(Path::new("/etc/ansible/facts.d/gpu.fact"));
        let table = [
            (true, Detected, 8, "PASS", "GPU node: 8 NVIDIA GPUs detected"),
            (false, Detected, 0, "PASS", "CPU node: no NVIDIA GPU detected"),
            (true, User, 1, "PASS", "GPU node: 1 NVIDIA GPU detected (has_nvidia_gpu=true)"),
            (false, LocalFacts, 0, "PASS",
             "CPU node: no NVIDIA GPU detected (has_nvidia_gpu=false in /etc/ansible/facts.d/gpu.fact)"),
            (true, User, 0, "FAIL",
             "has_nvidia_gpu=true, but no NVIDIA GPU is detected on this node (site.yml makes the \
              NVIDIA runtime containerd's default there, for no GPU)"),
            (false, LocalFacts, 8, "WARN",
             "has_nvidia_gpu=false although detection finds 8 NVIDIA GPUs: the node is set up as a \
              CPU node and its pods get no GPU"),
        ];
        for (enabled, source, gpus, status, msg) in table {
            assert_eq!(
                gpu_mode_check(enabled, source, gpus, facts),
                json!({"status": status, "msg": msg}),
                "{enabled} {source:?} {gpus}"
            );
        }
    }

    #[test]
    fn the_variable_beats_the_users_facts_file_which_beats_detection() {
        use ModeSource::*;
        assert_eq!(
            decide_gpu_mode(Some(false), Some(true), true),
            (false, User)
        );
        assert_eq!(decide_gpu_mode(None, Some(true), false), (true, LocalFacts));
        assert_eq!(
            decide_gpu_mode(None, Some(false), true),
            (false, LocalFacts)
        );
        assert_eq!(decide_gpu_mode(None, None, true), (true, Detected));
        assert_eq!(decide_gpu_mode(None, None, false), (false, Detected));
    }
}
