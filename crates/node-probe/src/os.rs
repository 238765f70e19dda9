//! The distribution, from os-release.

use crate::Root;

/// The fields of os-release that decide how a node is set up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ubuntu`, `rhel`, `rocky`, ...
    pub id: Option<String>,
    /// `24.04`, `9.4`, ...
    pub version_id: Option<String>,
    pub id_like: Vec<String>,
    pub pretty_name: Option<String>,
}

impl OsRelease {
    /// The family in Ansible's sense of `ansible_os_family`: `Debian`,
    /// `RedHat`, `Suse`; `None` for distributions this project does not know.
    pub fn family(&self) -> Option<&'static str> {
        let candidates = self.id.iter().chain(self.id_like.iter());
        for id in candidates {
            let family = match id.as_str() {
                "debian" | "ubuntu" => "Debian",
                "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "amzn" => "RedHat",
                "sles" | "suse" | "opensuse" | "opensuse-leap" | "sle_hpc" => "Suse",
                _ => continue,
            };
            return Some(family);
        }
        None
    }
}

/// Reads `/etc/os-release`, else `/usr/lib/os-release` (the standard's fallback).
pub fn os_release(root: &Root) -> Option<OsRelease> {
    let read = |p: &str| crate::read_text(&root.path(p), crate::ATTRIBUTE_LIMIT);
    let text = read("/etc/os-release")
        .or_else(|_| read("/usr/lib/os-release"))
        .ok()?;
    Some(parse(&text))
}

/// Parses os-release's `KEY=value` lines, with or without quotes.
pub fn parse(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((key, raw)) = line.trim().split_once('=') else {
            continue;
        };
        let value = raw.trim().trim_matches('"').trim_matches('\'').to_string();
        match key {
            "ID" => os.id = Some(value),
            "VERSION_ID" => os.version_id = Some(value),
            "ID_LIKE" => os.id_like = value.split_whitespace().map(str::to_string).collect(),
            "PRETTY_NAME" => os.pretty_name = Some(value),
            _ => {}
        }
    }
    os
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocky_is_redhat_through_id_like() {
        let os = parse("NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n");
        assert_eq!(os.id.as_deref(), Some("rocky"));
        assert_eq!(os.version_id.as_deref(), Some("9.4"));
        assert_eq!(os.family(), Some("RedHat"));
    }

    #[test]
    fn ubuntu_is_debian() {
        let os = parse("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n");
        assert_eq!(os.family(), Some("Debian"));
    }

    #[test]
    fn unknown_distribution_has_no_family() {
        assert_eq!(parse("ID=nixos\n").family(), None);
    }
}
