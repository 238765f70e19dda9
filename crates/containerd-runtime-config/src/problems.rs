//! What is wrong with containerd's configuration for the runtime a node
//! needs: the one definition of "correct" that `state: inspect` applies
//! (and `playbooks/verify.yml` reports), next to the code that writes it.
//!
//! Each problem is a sentence saying what is wrong and what it breaks, and a
//! [`Fix`] kind; the caller says how to fix it in its own words (a role
//! names its playbook and tags, a person at a shell names a command), so the
//! sentences do not depend on who asks.

use containerd_config::{Report, RuntimeReport, RUNC, RUNC_RUNTIME_TYPE};
use serde::Serialize;

/// The runtime setup the caller expects: the options of `state: configure`
/// that decide what containerd runs pods with.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    /// The node is a GPU node: the NVIDIA runtime must be there.
    pub nvidia_runtime: bool,
    /// On a GPU node, the NVIDIA runtime must be the default.
    pub set_as_default: bool,
    pub runtime_name: &'a str,
    pub systemd_cgroup: bool,
}

/// What was read: the effective configuration (or why it cannot be read),
/// and the running daemons that started before it last changed.
pub struct Seen<'a> {
    pub path: &'a str,
    /// How it was read: `containerd config dump`, or the files.
    pub source: &'a str,
    pub exists: bool,
    pub report: Result<&'a Report, &'a str>,
    /// (pid, the file that changed last) of each stale daemon.
    pub stale_daemons: Vec<(u32, &'a str)>,
    /// Whether a runtime's binary exists and is executable on the node.
    pub binary_exists: &'a dyn Fn(&str) -> bool,
}

/// How a problem is fixed; the caller words it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fix {
    /// Configure the runtimes again, or fix the files by hand.
    Configure,
    /// The files cannot be read: fix them, or write them anew.
    Rewrite,
    /// The main file is missing: write it.
    Write,
    /// Install the NVIDIA Container Toolkit, or point at its binary.
    InstallRuntime,
    /// Install the runtime's binary, or configure the runtimes again.
    InstallBinary,
    /// Restart containerd, which reads its configuration only when it starts.
    Restart,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub msg: String,
    pub fix: Fix,
}

impl Problem {
    fn new(fix: Fix, msg: impl Into<String>) -> Problem {
        Problem {
            msg: msg.into(),
            fix,
        }
    }
}

/// Every problem, most fundamental first, each once. A file containerd
/// cannot read, or a missing main file, is the one problem reported: every
/// other sentence would describe defaults nobody chose.
pub fn problems(seen: &Seen<'_>, expected: &Expected<'_>) -> Vec<Problem> {
    let report = match seen.report {
        Err(why) => {
            return vec![Problem::new(
                Fix::Rewrite,
                format!("containerd cannot read its configuration ({why})"),
            )]
        }
        Ok(report) => report,
    };
    if !seen.exists {
        return vec![missing_file(seen.path, expected)];
    }
    let view = View::new(report, expected);
    let mut found: Vec<Problem> = stale(&seen.stale_daemons).into_iter().collect();
    found.extend(cri_disabled(report));
    found.extend(default_runtime(&view));
    found.extend(nvidia_runtime(&view, seen.binary_exists));
    found.extend(default_binary(&view, seen.binary_exists));
    found.extend(systemd_cgroup(&view));
    let mut unique = Vec::new();
    for problem in found {
        if !unique.contains(&problem) {
            unique.push(problem);
        }
    }
    unique
}

/// One line for a configuration without problems: what pods run with.
pub fn as_expected(seen: &Seen<'_>, expected: &Expected<'_>, files: &str) -> Option<String> {
    let report = seen.report.ok()?;
    let view = View::new(report, expected);
    let binary = view
        .default_rt
        .and_then(|rt| rt.binary_name.as_deref())
        .map_or(String::new(), |b| format!(" ({b})"));
    let nvidia_aside = if !expected.nvidia_runtime && view.nvidia_rt.is_some() {
        ", NVIDIA runtime not the default"
    } else {
        ""
    };
    Some(format!(
        "default runtime {}{binary}, SystemdCgroup {}{nvidia_aside}; read with {} from {files}",
        view.default, expected.systemd_cgroup, seen.source
    ))
}

/// The names the rules look at, read once.
struct View<'a> {
    expected: &'a Expected<'a>,
    report: &'a Report,
    /// `default_runtime_name`, or containerd's own default.
    default: &'a str,
    default_rt: Option<&'a RuntimeReport>,
    nvidia_rt: Option<&'a RuntimeReport>,
}

impl<'a> View<'a> {
    fn new(report: &'a Report, expected: &'a Expected<'a>) -> View<'a> {
        let default = report.default_runtime.as_deref().unwrap_or(RUNC);
        View {
            expected,
            report,
            default,
            default_rt: report.runtimes.get(default),
            nvidia_rt: report.runtimes.get(expected.runtime_name),
        }
    }

    /// The default runtime is the NVIDIA runtime: by name, or by a binary
    /// of the NVIDIA Container Toolkit under another name.
    fn default_is_nvidia(&self) -> bool {
        self.default == self.expected.runtime_name
            || self
                .default_rt
                .and_then(|rt| rt.binary_name.as_deref())
                .is_some_and(|b| b.contains("nvidia-container-runtime"))
    }

    /// On a GPU node, a default that is the NVIDIA runtime is judged by the
    /// NVIDIA runtime's rules only (one sentence per fault).
    fn default_is_the_gpu_runtime(&self) -> bool {
        self.expected.nvidia_runtime && self.default == self.expected.runtime_name
    }
}

fn missing_file(path: &str, expected: &Expected<'_>) -> Problem {
    let without = if expected.nvidia_runtime {
        ", without the NVIDIA runtime"
    } else {
        ""
    };
    Problem::new(
        Fix::Write,
        format!(
            "{path} does not exist, so containerd runs on its built-in defaults (runc{without}, \
             no SystemdCgroup)"
        ),
    )
}

fn stale(daemons: &[(u32, &str)]) -> Option<Problem> {
    let (_, changed) = daemons.first()?;
    let pids: Vec<String> = daemons.iter().map(|(pid, _)| pid.to_string()).collect();
    Some(Problem::new(
        Fix::Restart,
        format!(
            "containerd (pid {}) started before {changed} last changed, so it runs an older \
             configuration than the file",
            pids.join(", ")
        ),
    ))
}

fn cri_disabled(report: &Report) -> Option<Problem> {
    report.cri_disabled.then(|| {
        Problem::new(
            Fix::Configure,
            "the CRI plugin is disabled (disabled_plugins), so Kubernetes can run no pod",
        )
    })
}

/// The default runtime: the NVIDIA one on a GPU node that wants it so, not
/// the NVIDIA one elsewhere, and one containerd has.
fn default_runtime(view: &View<'_>) -> Vec<Problem> {
    let (expected, default) = (view.expected, view.default);
    let name = expected.runtime_name;
    let mut found = Vec::new();
    if expected.nvidia_runtime && view.nvidia_rt.is_none() {
        found.push(Problem::new(
            Fix::Configure,
            format!("containerd has no runtime named {name} (the NVIDIA runtime)"),
        ));
    }
    if expected.nvidia_runtime && expected.set_as_default && default != name {
        found.push(Problem::new(
            Fix::Configure,
            format!("containerd's default runtime is {default}, expected {name}"),
        ));
    }
    if !expected.nvidia_runtime && view.default_is_nvidia() {
        found.push(Problem::new(
            Fix::Configure,
            format!(
                "containerd's default runtime is {default}, the NVIDIA runtime, on a node that is \
                 not in GPU mode: every pod would run with it"
            ),
        ));
    }
    if view.default_rt.is_none() && !view.default_is_the_gpu_runtime() {
        let names: Vec<&str> = view.report.runtimes.keys().map(String::as_str).collect();
        let names = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        found.push(Problem::new(
            Fix::Configure,
            format!(
                "containerd's default runtime {default} is not one of its runtimes ({names}), so \
                 no pod can start"
            ),
        ));
    }
    found
}

/// The NVIDIA runtime of a GPU node: a runc shim runtime whose BinaryName
/// is an executable.
fn nvidia_runtime(view: &View<'_>, binary_exists: &dyn Fn(&str) -> bool) -> Vec<Problem> {
    let name = view.expected.runtime_name;
    let Some(rt) = view.nvidia_rt.filter(|_| view.expected.nvidia_runtime) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if rt.runtime_type.as_deref() != Some(RUNC_RUNTIME_TYPE) {
        found.push(Problem::new(
            Fix::Configure,
            format!(
                "the {name} runtime's runtime_type is {}, expected {RUNC_RUNTIME_TYPE}",
                rt.runtime_type.as_deref().unwrap_or("not set")
            ),
        ));
    }
    match rt.binary_name.as_deref() {
        None => found.push(Problem::new(
            Fix::Configure,
            format!("the {name} runtime has no BinaryName, so it runs plain runc and containers get no GPU"),
        )),
        Some(binary) if rt.runc_binary().is_some() && !binary_exists(binary) => {
            found.push(Problem::new(
                Fix::InstallRuntime,
                format!(
                    "the {name} runtime's binary {binary} does not exist or is not executable, so \
                     no pod can start with it"
                ),
            ))
        }
        Some(_) => {}
    }
    found
}

/// The default runtime's binary, unless the NVIDIA runtime's rules judged it.
fn default_binary(view: &View<'_>, binary_exists: &dyn Fn(&str) -> bool) -> Option<Problem> {
    let rt = view
        .default_rt
        .filter(|_| !view.default_is_the_gpu_runtime())?;
    let binary = rt.runc_binary()?;
    if binary_exists(binary) {
        return None;
    }
    let fix = if view.default_is_nvidia() {
        Fix::InstallRuntime
    } else {
        Fix::InstallBinary
    };
    Some(Problem::new(
        fix,
        format!(
            "the default runtime {}'s binary {binary} does not exist or is not executable, so no \
             pod can start",
            view.default
        ),
    ))
}

/// SystemdCgroup of the runtimes pods use: the default, and the NVIDIA one
/// on a GPU node (unset is containerd's default, false).
fn systemd_cgroup(view: &View<'_>) -> Vec<Problem> {
    let wanted = view.expected.systemd_cgroup;
    let gpu = view.expected.nvidia_runtime;
    [
        (view.default, view.default_rt),
        (view.expected.runtime_name, view.nvidia_rt.filter(|_| gpu)),
    ]
    .into_iter()
    .filter_map(|(name, rt)| {
        let is = rt?.systemd_cgroup.unwrap_or(false);
        (is != wanted).then(|| {
            Problem::new(
                Fix::Configure,
                format!(
                    "SystemdCgroup of the {name} runtime is {is}, expected {wanted} \
                     (it must match the kubelet's cgroupDriver)"
                ),
            )
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const NVIDIA_BIN: &str = "/usr/bin/nvidia-container-runtime";

    fn runtime(binary: Option<&str>, systemd: Option<bool>) -> RuntimeReport {
        RuntimeReport {
            runtime_type: Some(RUNC_RUNTIME_TYPE.into()),
            binary_name: binary.map(str::to_string),
            systemd_cgroup: systemd,
        }
    }

    /// A GPU node configured as the module configures it.
    fn gpu_report() -> Report {
        Report {
            config_version: Some(2),
            default_runtime: Some("nvidia".into()),
            runtimes: BTreeMap::from([
                ("runc".to_string(), runtime(None, Some(true))),
                ("nvidia".to_string(), runtime(Some(NVIDIA_BIN), Some(true))),
            ]),
            imports: vec![],
            cri_disabled: false,
        }
    }

    fn gpu() -> Expected<'static> {
        Expected {
            nvidia_runtime: true,
            set_as_default: true,
            runtime_name: "nvidia",
            systemd_cgroup: true,
        }
    }

    fn cpu() -> Expected<'static> {
        Expected {
            nvidia_runtime: false,
            ..gpu()
        }
    }

    fn judge(report: &Report, expected: &Expected<'_>, missing: &[&str]) -> Vec<(Fix, String)> {
        let exists = |b: &str| !missing.contains(&b);
        let seen = Seen {
            path: "/etc/containerd/config.toml",
            source: "containerd config dump",
            exists: true,
            report: Ok(report),
            stale_daemons: vec![],
            binary_exists: &exists,
        };
        problems(&seen, expected)
            .into_iter()
            .map(|p| (p.fix, p.msg))
            .collect()
    }

    /// Each rule: a change to a correct configuration, and the one problem
    /// it must give. One row per rule, so longer than 60 lines on purpose.
    #[test]
    fn each_rule_names_its_fault() {
        // (case, expected setup, edit, missing binaries, fix, message)
        type Case = (
            &'static str,
            Expected<'static>,
            fn(&mut Report),
            &'static [&'static str],
            Fix,
            &'static str,
        );
        let table: &[Case] = &[
            ("runc default on a GPU node", gpu(), |r| r.default_runtime = Some("runc".into()), &[],
             Fix::Configure, "containerd's default runtime is runc, expected nvidia"),
            ("CRI disabled", gpu(), |r| r.cri_disabled = true, &[],
             Fix::Configure, "the CRI plugin is disabled (disabled_plugins), so Kubernetes can run no pod"),
            ("NVIDIA runtime default on a CPU node", cpu(), |_| {}, &[],
             Fix::Configure, "containerd's default runtime is nvidia, the NVIDIA runtime, on a node that is not in GPU mode: every pod would run with it"),
            ("NVIDIA binary under another name on a CPU node", cpu(), |r| {
                let rt = r.runtimes.remove("nvidia").unwrap();
                r.runtimes.insert("gpu".into(), rt);
                r.default_runtime = Some("gpu".into());
             }, &[],
             Fix::Configure, "containerd's default runtime is gpu, the NVIDIA runtime, on a node that is not in GPU mode: every pod would run with it"),
            ("default not among the runtimes", cpu(), |r| {
                r.runtimes.remove("nvidia");
                r.default_runtime = Some("crun".into());
             }, &[],
             Fix::Configure, "containerd's default runtime crun is not one of its runtimes (runc), so no pod can start"),
            ("runtime_type of the NVIDIA runtime", gpu(), |r| {
                r.runtimes.get_mut("nvidia").unwrap().runtime_type = Some("io.containerd.kata.v2".into());
             }, &[],
             Fix::Configure, "the nvidia runtime's runtime_type is io.containerd.kata.v2, expected io.containerd.runc.v2"),
            ("no BinaryName", gpu(), |r| r.runtimes.get_mut("nvidia").unwrap().binary_name = None, &[],
             Fix::Configure, "the nvidia runtime has no BinaryName, so it runs plain runc and containers get no GPU"),
            ("NVIDIA binary missing", gpu(), |_| {}, &[NVIDIA_BIN],
             Fix::InstallRuntime, "the nvidia runtime's binary /usr/bin/nvidia-container-runtime does not exist or is not executable, so no pod can start with it"),
            ("runc missing on a CPU node", cpu(), |r| {
                r.runtimes.remove("nvidia");
                r.default_runtime = Some("runc".into());
             }, &["runc"],
             Fix::InstallBinary, "the default runtime runc's binary runc does not exist or is not executable, so no pod can start"),
            ("SystemdCgroup unset on the NVIDIA runtime", gpu(), |r| {
                r.runtimes.get_mut("nvidia").unwrap().systemd_cgroup = None;
             }, &[],
             Fix::Configure, "SystemdCgroup of the nvidia runtime is false, expected true (it must match the kubelet's cgroupDriver)"),
            ("SystemdCgroup of runc as the default", cpu(), |r| {
                r.runtimes.remove("nvidia");
                r.default_runtime = None;
                r.runtimes.get_mut("runc").unwrap().systemd_cgroup = Some(false);
             }, &[],
             Fix::Configure, "SystemdCgroup of the runc runtime is false, expected true (it must match the kubelet's cgroupDriver)"),
        ];
        for (case, expected, edit, missing, fix, msg) in table {
            let mut report = gpu_report();
            edit(&mut report);
            assert_eq!(
                judge(&report, expected, missing),
                vec![(*fix, msg.to_string())],
                "{case}"
            );
        }
    }

    #[test]
    fn a_correct_configuration_has_no_problem_and_says_what_pods_run() {
        assert_eq!(judge(&gpu_report(), &gpu(), &[]), vec![]);
        let mut cpu_report = gpu_report();
        cpu_report.default_runtime = Some("runc".into());
        assert_eq!(judge(&cpu_report, &cpu(), &[]), vec![]);
        let exists = |_: &str| true;
        let seen = Seen {
            path: "/c.toml",
            source: "file",
            exists: true,
            report: Ok(&cpu_report),
            stale_daemons: vec![],
            binary_exists: &exists,
        };
        assert_eq!(
            as_expected(&seen, &cpu(), "/c.toml and /d.toml").unwrap(),
            "default runtime runc, SystemdCgroup true, NVIDIA runtime not the default; read with file from /c.toml and /d.toml"
        );
    }

    #[test]
    fn a_runtime_that_is_missing_is_one_problem_not_several() {
        let mut report = gpu_report();
        report.runtimes.remove("nvidia");
        assert_eq!(
            judge(&report, &gpu(), &[]),
            vec![(
                Fix::Configure,
                "containerd has no runtime named nvidia (the NVIDIA runtime)".to_string()
            )]
        );
        // The same SystemdCgroup fault of the default and the NVIDIA runtime
        // is said once.
        let mut report = gpu_report();
        report.runtimes.get_mut("nvidia").unwrap().systemd_cgroup = Some(false);
        assert_eq!(judge(&report, &gpu(), &[]).len(), 1);
    }

    #[test]
    fn unreadable_missing_and_stale_configurations() {
        let exists = |_: &str| true;
        let report = gpu_report();
        let mut seen = Seen {
            path: "/c.toml",
            source: "containerd config dump",
            exists: true,
            report: Err("toml: line 3"),
            stale_daemons: vec![],
            binary_exists: &exists,
        };
        assert_eq!(
            problems(&seen, &gpu()),
            vec![Problem::new(
                Fix::Rewrite,
                "containerd cannot read its configuration (toml: line 3)"
            )]
        );
        seen.report = Ok(&report);
        seen.exists = false;
        assert_eq!(
            problems(&seen, &gpu())[0].msg,
            "/c.toml does not exist, so containerd runs on its built-in defaults (runc, without the \
             NVIDIA runtime, no SystemdCgroup)"
        );
        seen.exists = true;
        seen.stale_daemons = vec![(10, "/c.toml"), (11, "/c.toml")];
        assert_eq!(
            problems(&seen, &gpu()),
            vec![Problem::new(
                Fix::Restart,
                "containerd (pid 10, 11) started before /c.toml last changed, so it runs an older \
                 configuration than the file"
            )]
        );
    }
}
