//! What a container needs from the node to use its NVIDIA GPUs, found on the
//! node itself: the GPUs the driver lists, their device files, and the
//! running driver's user-space (libraries, tools, firmware, IPC sockets),
//! wherever the driver was installed.

use crate::Error;
use node_probe::{kernel, Root};
use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// Folders where drivers put their libraries: NVIDIA's `.run` installer and
/// the distributions' packages (the list `nvidia-ctk` searches), and
/// `/usr/local/nvidia`, where the GPU Operator's driver container, GKE and
/// the team's H200 node put them. The folders of `/etc/ld.so.conf` follow.
pub const LIBRARY_DIRS: &[&str] = &[
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib64",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu/nvidia/current",
    "/usr/lib/aarch64-linux-gnu/nvidia/current",
    "/lib64",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
];

/// Folders searched for the driver's programs, in this order.
pub const BINARY_DIRS: &[&str] = &[
    "/usr/local/nvidia/bin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/bin",
    "/sbin",
];

/// The driver's programs a container may need (the list `nvidia-ctk` mounts).
pub const BINARIES: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
    "nvidia-imex",
    "nvidia-imex-ctl",
];

/// Device files every GPU container needs, besides its GPUs' own.
pub const CONTROL_DEVICES: &[&str] = &[
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// Sockets and folders of the driver's daemons (persistenced, fabric
/// manager, MPS), mounted where present.
pub const IPC_PATHS: &[&str] = &[
    "/run/nvidia-persistenced/socket",
    "/run/nvidia-fabricmanager/socket",
    "/var/run/nvidia-persistenced/socket",
    "/var/run/nvidia-fabricmanager/socket",
    "/tmp/nvidia-mps",
];

/// One GPU as the driver lists it in `/proc/driver/nvidia/gpus/<bus>/information`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    pub pci_address: String,
    pub uuid: Option<String>,
    pub minor: u32,
    pub model: Option<String>,
}

impl Gpu {
    pub fn device_node(&self) -> String {
        format!("/dev/nvidia{}", self.minor)
    }
}

/// Everything the spec is made of, as node paths, sorted and without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    pub driver_version: String,
    /// In NVML's order (by PCI address): the position is the device index.
    pub gpus: Vec<Gpu>,
    pub control_devices: Vec<String>,
    pub libraries: Vec<String>,
    pub binaries: Vec<String>,
    pub firmware: Vec<String>,
    pub ipc: Vec<String>,
    pub warnings: Vec<String>,
}

/// Finds the GPUs and the running driver's files under `root`.
/// `extra_library_dirs` are searched after the built-in folders.
pub fn discover(root: &Root, extra_library_dirs: &[String]) -> Result<Discovery, Error> {
    let mut warnings = Vec::new();
    let driver = kernel::nvidia_driver(root, &mut warnings);
    if !driver.loaded {
        let nouveau = if kernel::module_loaded(root, "nouveau") {
            " (nouveau is loaded instead)"
        } else {
            ""
        };
        return Err(Error::NoDriver(nouveau.to_string()));
    }
    let version = driver.version.ok_or(Error::NoDriverVersion)?;
    let gpus = gpus(root, &mut warnings)?;
    let mut d = Discovery {
        control_devices: control_devices(root, &gpus, &mut warnings)?,
        libraries: libraries(root, &version, extra_library_dirs)?,
        binaries: binaries(root),
        firmware: firmware(root, &version),
        ipc: IPC_PATHS
            .iter()
            .filter(|p| root.path(p).exists())
            .map(|p| p.to_string())
            .collect(),
        driver_version: version,
        gpus,
        warnings: Vec::new(),
    };
    d.ipc = dedup_by_real_path(root, std::mem::take(&mut d.ipc));
    if !d.binaries.iter().any(|b| b.ends_with("/nvidia-smi")) {
        warnings.push(format!(
            "nvidia-smi was not found in {}: containers get the libraries but not the tool",
            BINARY_DIRS.join(", ")
        ));
    }
    d.warnings = warnings;
    Ok(d)
}

/// The GPUs of `/proc/driver/nvidia/gpus`, the driver's own list: sysfs
/// would also show GPUs bound to vfio-pci or nouveau, which no container
/// can use through this driver.
fn gpus(root: &Root, warnings: &mut Vec<String>) -> Result<Vec<Gpu>, Error> {
    let dir = root.path("/proc/driver/nvidia/gpus");
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::NoGpuList(e.to_string()))?;
    let mut gpus = Vec::new();
    for entry in entries.flatten() {
        let address = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path().join("information");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Read(format!("/proc/driver/nvidia/gpus/{address}/information"), e)
        })?;
        let info = parse_information(&text);
        if info.excluded {
            warnings.push(format!(
                "GPU {address} is excluded by the driver (NVreg_ExcludedGpus): left out of the spec"
            ));
            continue;
        }
        let minor = info.minor.ok_or_else(|| Error::NoMinor(address.clone()))?;
        if info.uuid.is_none() {
            warnings.push(format!(
                "GPU {address}: the driver gives no UUID; it is named by its index only"
            ));
        }
        gpus.push(Gpu {
            pci_address: address,
            uuid: info.uuid,
            minor,
            model: info.model,
        });
    }
    if gpus.is_empty() {
        return Err(Error::NoGpuList("it lists no GPU".into()));
    }
    gpus.sort_by(|a, b| a.pci_address.cmp(&b.pci_address));
    Ok(gpus)
}

#[derive(Debug, Default, PartialEq)]
pub struct Information {
    pub model: Option<String>,
    pub uuid: Option<String>,
    pub minor: Option<u32>,
    pub excluded: bool,
}

/// Parses the driver's `information` file: `Key: \t value` lines.
pub fn parse_information(text: &str) -> Information {
    let mut info = Information::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Model" => info.model = Some(value.to_string()),
            "GPU UUID" if value.starts_with("GPU-") => info.uuid = Some(value.to_string()),
            "Device Minor" => info.minor = value.parse().ok(),
            "GPU Excluded" => info.excluded = value.eq_ignore_ascii_case("yes"),
            _ => {}
        }
    }
    info
}

fn is_char_device(root: &Root, node_path: &str) -> bool {
    std::fs::metadata(root.path(node_path)).is_ok_and(|m| m.file_type().is_char_device())
}

/// The device files of the GPUs must exist: a spec naming a missing device
/// file makes every container that asks for the GPU fail to start.
fn control_devices(
    root: &Root,
    gpus: &[Gpu],
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, Error> {
    let missing: Vec<String> = std::iter::once("/dev/nvidiactl".to_string())
        .chain(gpus.iter().map(Gpu::device_node))
        .filter(|p| !is_char_device(root, p))
        .collect();
    if !missing.is_empty() {
        return Err(Error::NoDeviceFiles(missing));
    }
    let mut found: Vec<String> = CONTROL_DEVICES
        .iter()
        .filter(|p| is_char_device(root, p))
        .map(|p| p.to_string())
        .collect();
    if !found.iter().any(|p| p == "/dev/nvidia-uvm") {
        warnings.push(
            "/dev/nvidia-uvm does not exist (nvidia_uvm not loaded, or its device file not \
             created yet): CUDA programs need it; nvidia-smi does not"
                .into(),
        );
    }
    let caps = root.path("/dev/nvidia-caps");
    let mut cap_files: Vec<String> = WalkDir::new(&caps)
        .min_depth(1)
        .max_depth(1)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_char_device())
        .map(|e| format!("/dev/nvidia-caps/{}", e.file_name().to_string_lossy()))
        .collect();
    found.append(&mut cap_files);
    Ok(found)
}

/// Folders listed in `/etc/ld.so.conf` and the files it includes: where a
/// distribution or an installer registered the driver's libraries.
pub fn ld_so_conf_dirs(root: &Root) -> Vec<String> {
    let mut dirs = Vec::new();
    read_ld_so_conf(root, "/etc/ld.so.conf", &mut dirs, 0);
    dirs
}

fn read_ld_so_conf(root: &Root, node_path: &str, dirs: &mut Vec<String>, depth: u32) {
    let Ok(text) = std::fs::read_to_string(root.path(node_path)) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            if depth < 4 {
                for file in glob_conf(root, pattern.trim(), node_path) {
                    read_ld_so_conf(root, &file, dirs, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            dirs.push(line.trim_end_matches('/').to_string());
        }
    }
}

/// `include /etc/ld.so.conf.d/*.conf`: the one glob form ld.so.conf files use
/// (a folder and a `*suffix` file pattern), resolved in sorted order.
fn glob_conf(root: &Root, pattern: &str, including: &str) -> Vec<String> {
    let pattern = if pattern.starts_with('/') {
        pattern.to_string()
    } else {
        let base = Path::new(including).parent().unwrap_or(Path::new("/"));
        format!("{}/{pattern}", base.display())
    };
    let (dir, file) = pattern.rsplit_once('/').unwrap_or(("/", &pattern));
    let Some(suffix) = file.strip_prefix('*') else {
        return vec![pattern.clone()];
    };
    let mut files: Vec<String> = std::fs::read_dir(root.path(dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .map(|name| format!("{dir}/{name}"))
        .collect();
    files.sort();
    files
}

/// The libraries of driver `version`: files named `*.so.<version>` in the
/// library folders and their subfolders (`vdpau/`), plus the links beside
/// them that lead to one (`libcuda.so.1`, `libnvidia-ml.so.1`): a program
/// loads a library by that name, and with no ldconfig hook in the container
/// (we ship none) the link must be there. A file reached through two
/// folders (`/lib64` and `/usr/lib64` on a merged-/usr system) is listed
/// once, under the first folder that has it.
fn libraries(root: &Root, version: &str, extra_dirs: &[String]) -> Result<Vec<String>, Error> {
    let mut dirs: Vec<String> = LIBRARY_DIRS.iter().map(|d| d.to_string()).collect();
    dirs.extend(ld_so_conf_dirs(root));
    dirs.extend(
        extra_dirs
            .iter()
            .map(|d| d.trim_end_matches('/').to_string()),
    );
    let suffix = format!(".so.{version}");
    let mut seen_real = BTreeSet::new();
    let mut found = Vec::new();
    for dir in &dirs {
        let mut in_dir = Vec::new();
        for entry in WalkDir::new(root.path(dir))
            .max_depth(2)
            .sort_by_file_name()
            .into_iter()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy();
            if !entry.file_type().is_file() || !name.ends_with(&suffix) {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(entry.path()) else {
                continue;
            };
            if seen_real.insert(real) {
                in_dir.push(entry.path().to_path_buf());
            }
        }
        for lib in &in_dir {
            found.push(node_path(root, lib));
            found.extend(links_to(root, lib));
        }
    }
    if found.is_empty() {
        return Err(Error::NoLibraries {
            version: version.to_string(),
            dirs,
        });
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Symbolic links in `lib`'s folder that resolve to `lib`.
fn links_to(root: &Root, lib: &Path) -> Vec<String> {
    let Some(dir) = lib.parent() else {
        return Vec::new();
    };
    let Ok(real) = std::fs::canonicalize(lib) else {
        return Vec::new();
    };
    let mut links: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter(|e| std::fs::canonicalize(e.path()).is_ok_and(|r| r == real))
        .map(|e| node_path(root, &e.path()))
        .collect();
    links.sort();
    links
}

/// The driver's programs: the first executable of each name in BINARY_DIRS.
fn binaries(root: &Root) -> Vec<String> {
    let mut found = Vec::new();
    for name in BINARIES {
        let hit = BINARY_DIRS.iter().map(|d| format!("{d}/{name}")).find(|p| {
            std::fs::metadata(root.path(p))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        found.extend(hit);
    }
    found
}

/// The GSP firmware of driver `version` (`nvidia/<version>/gsp*.bin`), in
/// the folders the kernel loads firmware from, as `nvidia-ctk` looks.
fn firmware(root: &Root, version: &str) -> Vec<String> {
    let release = kernel::release(root).unwrap_or_default();
    let mut dirs = Vec::new();
    if let Ok(custom) = root.read_trimmed("/sys/module/firmware_class/parameters/path") {
        if custom.starts_with('/') {
            dirs.push(custom);
        }
    }
    if !release.is_empty() {
        dirs.push(format!("/lib/firmware/updates/{release}"));
    }
    dirs.push("/lib/firmware/updates".into());
    if !release.is_empty() {
        dirs.push(format!("/lib/firmware/{release}"));
    }
    dirs.push("/lib/firmware".into());
    let mut found = Vec::new();
    for dir in dirs {
        let folder = format!("{dir}/nvidia/{version}");
        let mut files: Vec<String> = std::fs::read_dir(root.path(&folder))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("gsp") && n.ends_with(".bin"))
            .map(|n| format!("{folder}/{n}"))
            .collect();
        files.sort();
        found.extend(files);
    }
    dedup_by_real_path(root, found)
}

/// Keeps the first of several paths that lead to the same file.
fn dedup_by_real_path(root: &Root, paths: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    paths
        .into_iter()
        .filter(|p| {
            let real = std::fs::canonicalize(root.path(p)).unwrap_or_else(|_| PathBuf::from(p));
            seen.insert(real)
        })
        .collect()
}

/// The node path of a host path under `root`.
fn node_path(root: &Root, host: &Path) -> String {
    let rel = host.strip_prefix(root.as_path()).unwrap_or(host);
    format!("/{}", rel.to_string_lossy().trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_h200_capture_information_file_parses() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/h200-vm/proc/driver/nvidia/gpus/0000:00:06.0/information"
        ))
        .unwrap();
        assert_eq!(
            parse_information(&text),
            Information {
                model: Some("NVIDIA H200".into()),
                uuid: Some("GPU-00000000-0000-0000-0000-000000000000".into()),
                minor: Some(0),
                excluded: false,
            }
        );
    }

    #[test]
    fn an_excluded_gpu_is_marked() {
        let info = parse_information("Device Minor: \t 3\nGPU Excluded:\t Yes\n");
        assert!(info.excluded);
        assert_eq!(info.minor, Some(3));
        assert_eq!(info.uuid, None);
    }
}
