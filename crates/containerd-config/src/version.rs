//! The one place where containerd 1.x and 2.x differ for this crate.

use crate::error::Error;
use std::fmt;

/// A config file format version (the file's `version = N`).
///
/// Version 2 is what containerd 1.3 to 1.7 read; version 3 came with
/// containerd 2.0, which renamed the CRI plugins (`io.containerd.grpc.v1.cri`
/// split into `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images`)
/// and still reads version 2 by migrating it in memory at every start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigVersion {
    V2,
    V3,
}

impl ConfigVersion {
    pub const fn number(self) -> i64 {
        match self {
            ConfigVersion::V2 => 2,
            ConfigVersion::V3 => 3,
        }
    }

    pub const fn from_number(n: i64) -> Option<ConfigVersion> {
        match n {
            2 => Some(ConfigVersion::V2),
            3 => Some(ConfigVersion::V3),
            _ => None,
        }
    }

    /// The plugin whose `containerd` table holds `default_runtime_name` and
    /// `runtimes`.
    pub const fn cri_runtime_plugin(self) -> &'static str {
        match self {
            ConfigVersion::V2 => "io.containerd.grpc.v1.cri",
            ConfigVersion::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    /// The plugin IDs that, in `disabled_plugins`, leave Kubernetes without a
    /// CRI (`cri` is the short ID Docker's packages disable).
    pub const fn cri_plugin_ids(self) -> &'static [&'static str] {
        match self {
            ConfigVersion::V2 => &["cri", "io.containerd.grpc.v1.cri"],
            ConfigVersion::V3 => &[
                "cri",
                "io.containerd.grpc.v1.cri",
                "io.containerd.cri.v1.runtime",
                "io.containerd.cri.v1.images",
            ],
        }
    }

    /// The oldest containerd major release that reads this version.
    pub const fn min_containerd_major(self) -> u64 {
        match self {
            ConfigVersion::V2 => 1,
            ConfigVersion::V3 => 2,
        }
    }

    /// The version a containerd release reads natively: 3 from 2.0 on.
    pub fn native_to(containerd: &ContainerdVersion) -> ConfigVersion {
        if containerd.major >= 2 {
            ConfigVersion::V3
        } else {
            ConfigVersion::V2
        }
    }

    /// Whether that containerd reads this version at all.
    pub fn read_by(self, containerd: &ContainerdVersion) -> bool {
        containerd.major >= self.min_containerd_major()
    }
}

impl fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// A containerd release, from `containerd --version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerdVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// The version word as printed (`1.6.20~ds1`, `v2.0.4`).
    pub text: String,
}

/// Reads the release from `containerd --version` output, whichever packager
/// built it:
/// `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3`
/// (Debian), `containerd containerd.io 1.7.22 7f7fdf5f...` (Docker's
/// packages), `containerd github.com/containerd/containerd/v2 v2.0.4 1a43cb6a...`.
pub fn parse_containerd_version(output: &str) -> Option<ContainerdVersion> {
    output
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .find_map(|word| {
            let numbers = word.strip_prefix('v').unwrap_or(word);
            let mut parts = numbers
                .split(|c: char| !c.is_ascii_digit())
                .map(str::parse::<u64>);
            let major = parts.next()?.ok()?;
            // A version has a dot right after the major number.
            let rest = &numbers[numbers.find(|c: char| !c.is_ascii_digit())?..];
            if !rest.starts_with('.') {
                return None;
            }
            let minor = parts.next()?.ok()?;
            let patch = parts.next().and_then(Result::ok).unwrap_or(0);
            Some(ContainerdVersion {
                major,
                minor,
                patch,
                text: word.to_string(),
            })
        })
}

/// What an existing file says about its own version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// No `version` and nothing a version would change the meaning of (an
    /// empty or comment-only file, or global settings only): a version can be
    /// added.
    Unversioned,
    /// `version = N`; 1 for a file with plugin settings but no `version`,
    /// which is how containerd reads it.
    Version(i64),
}

/// The version an existing config declares.
pub fn declared_version(text: &str, origin: &str) -> Result<Declared, Error> {
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e| Error::parse(origin, text, &e))?;
    match doc.get("version") {
        Some(item) => item
            .as_integer()
            .map(Declared::Version)
            .ok_or_else(|| Error::shape(origin, "`version` is not an integer")),
        None if doc.contains_key("plugins") => Ok(Declared::Version(1)),
        None => Ok(Declared::Unversioned),
    }
}

/// Picks the config version to write.
///
/// `asked` is the task's choice (`None` for auto). `existing` is the current
/// file's declaration and path; when `binding`, the file is edited rather
/// than replaced, so its version cannot change. Auto takes the file's
/// version, else the one native to the node's containerd.
pub fn choose_version(
    asked: Option<ConfigVersion>,
    existing: Option<(Declared, &str)>,
    binding: bool,
    containerd: Option<&ContainerdVersion>,
) -> Result<ConfigVersion, Error> {
    if let Some((Declared::Version(n), origin)) = existing {
        match ConfigVersion::from_number(n) {
            Some(found) if binding => {
                return match asked {
                    Some(a) if a != found => Err(Error::Version(format!(
                        "{origin} is a version {found} config but config_version {a} was asked: \
                         editing cannot convert between versions (the plugin names differ); \
                         convert the file with `containerd config migrate`, or use mode \
                         template, or set config_version: {found}"
                    ))),
                    _ => Ok(found),
                };
            }
            Some(found) => return Ok(asked.unwrap_or(found)),
            None if binding => {
                return Err(Error::Version(format!(
                    "{origin} is a version {n} config{}; this module edits versions 2 and 3 \
                     only: convert it with `containerd config migrate`, or use mode template",
                    if n == 1 {
                        " (it has plugin settings and no `version`)"
                    } else {
                        ""
                    }
                )))
            }
            None => {}
        }
    }
    if let Some(asked) = asked {
        return Ok(asked);
    }
    containerd.map(ConfigVersion::native_to).ok_or_else(|| {
        Error::Version(
            "cannot tell which config version to write: no existing config says, and no \
             containerd binary was found to ask (set config_version: 2 for containerd 1.x, \
             3 for 2.x, or containerd_path)"
                .to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u64, minor: u64, patch: u64, text: &str) -> Option<ContainerdVersion> {
        Some(ContainerdVersion {
            major,
            minor,
            patch,
            text: text.to_string(),
        })
    }

    #[test]
    fn containerd_version_is_read_from_every_packagers_output() {
        let table = [
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
                v(1, 6, 20, "1.6.20~ds1"),
            ),
            (
                "containerd containerd.io 1.7.22 7f7fdf5fed64eb6a7caf99b3e12efcf9d60e311c",
                v(1, 7, 22, "1.7.22"),
            ),
            (
                "containerd github.com/containerd/containerd/v2 v2.0.4 1a43cb6a1035441f9aca8f5666a9b3ef9e70ab20",
                v(2, 0, 4, "v2.0.4"),
            ),
            (
                "containerd github.com/containerd/containerd/v2 v2.1.0-rc.1 5a3bbca",
                v(2, 1, 0, "v2.1.0-rc.1"),
            ),
            ("containerd: command not found", None),
            ("", None),
        ];
        for (output, expected) in table {
            assert_eq!(parse_containerd_version(output), expected, "{output:?}");
        }
    }

    #[test]
    fn version_2_and_3_name_the_cri_plugin_differently() {
        assert_eq!(
            ConfigVersion::V2.cri_runtime_plugin(),
            "io.containerd.grpc.v1.cri"
        );
        assert_eq!(
            ConfigVersion::V3.cri_runtime_plugin(),
            "io.containerd.cri.v1.runtime"
        );
        let one = v(1, 7, 0, "1.7.0").unwrap();
        let two = v(2, 0, 0, "2.0.0").unwrap();
        assert_eq!(ConfigVersion::native_to(&one), ConfigVersion::V2);
        assert_eq!(ConfigVersion::native_to(&two), ConfigVersion::V3);
        assert!(!ConfigVersion::V3.read_by(&one));
        assert!(ConfigVersion::V2.read_by(&two));
    }

    #[test]
    fn declared_version_distinguishes_unversioned_from_version_1() {
        assert_eq!(
            declared_version("version = 3\n", "f"),
            Ok(Declared::Version(3))
        );
        assert_eq!(
            declared_version("# nothing\nroot = \"/x\"\n", "f"),
            Ok(Declared::Unversioned)
        );
        assert_eq!(
            declared_version("[plugins.cri]\nx = 1\n", "f"),
            Ok(Declared::Version(1))
        );
        assert!(matches!(
            declared_version("version = \"2\"\n", "f"),
            Err(Error::Shape { .. })
        ));
    }

    #[test]
    fn auto_takes_the_files_version_then_containerds() {
        let two = v(2, 0, 4, "v2.0.4");
        let f = Some((Declared::Version(2), "/etc/c.toml"));
        assert_eq!(
            choose_version(None, f, true, two.as_ref()),
            Ok(ConfigVersion::V2)
        );
        let none = Some((Declared::Unversioned, "/etc/c.toml"));
        assert_eq!(
            choose_version(None, none, true, two.as_ref()),
            Ok(ConfigVersion::V3)
        );
        assert_eq!(
            choose_version(None, None, true, v(1, 6, 20, "1.6.20").as_ref()),
            Ok(ConfigVersion::V2)
        );
        let err = choose_version(None, None, true, None).unwrap_err();
        assert!(err.to_string().contains("set config_version"), "{err}");
    }

    #[test]
    fn an_edited_file_keeps_its_version_and_a_replaced_one_need_not() {
        let f = Some((Declared::Version(2), "/etc/c.toml"));
        let err = choose_version(Some(ConfigVersion::V3), f, true, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/etc/c.toml is a version 2 config but config_version 3 was asked"),
            "{err}"
        );
        assert_eq!(
            choose_version(Some(ConfigVersion::V3), f, false, None),
            Ok(ConfigVersion::V3)
        );
        let v1 = Some((Declared::Version(1), "/etc/c.toml"));
        let err = choose_version(None, v1, true, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("version 1 config (it has plugin settings and no `version`)"),
            "{err}"
        );
        assert_eq!(
            choose_version(None, v1, false, v(1, 6, 0, "1.6.0").as_ref()),
            Ok(ConfigVersion::V2)
        );
    }
}
