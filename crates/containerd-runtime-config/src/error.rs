//! Every way the module fails, each carrying the path or value it is about.
//! The messages are the task's `msg`: each says what is wrong, what to do,
//! and what was written (nothing, unless [`Error::Commit`] lists it).

use containerd_config as config;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A containerd_config error: the config, template or version is wrong.
    #[error("{0}; nothing written")]
    Config(#[from] config::Error),

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "{path} is not UTF-8 text ({source}), so it is not a containerd config; nothing written"
    )]
    NotUtf8 {
        path: String,
        source: std::str::Utf8Error,
    },

    #[error("{name} must be absolute, got {}", path.display())]
    NotAbsolute { name: &'static str, path: PathBuf },

    #[error("{name} {path:?} holds a control character (NUL, newline...); nothing written")]
    ControlCharacter { name: &'static str, path: String },

    #[error("{name} {} names no file", path.display())]
    NamesNoFile { name: &'static str, path: PathBuf },

    #[error("drop_in_path {} is the main config's path {}; nothing written", drop_in.display(), main.display())]
    DropInIsMain { drop_in: PathBuf, main: PathBuf },

    #[error("drop_in_path and path are the same file, {}; nothing written", .0.display())]
    DropInIsMainThroughLinks(PathBuf),

    #[error("{name} {} is not a regular file; nothing written", path.display())]
    NotRegularFile { name: &'static str, path: PathBuf },

    #[error("cannot read the symlink {}: {source}", path.display())]
    ReadLink {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{name} {}: too many levels of symbolic links; nothing written", path.display())]
    LinkLoop { name: &'static str, path: PathBuf },

    #[error(
        "the NVIDIA runtime binary {path} {why}: install the NVIDIA Container Toolkit \
         (nvidia-container-toolkit) first, or set runtime_path to where it is. containerd \
         would fail every pod that uses a runtime it cannot start; set \
         require_runtime_binary: false to configure it anyway"
    )]
    RuntimeBinary { path: String, why: &'static str },

    #[error("containerd_path {} {why}", path.display())]
    ContainerdPath { path: PathBuf, why: &'static str },

    #[error("enable_cdi: containerd {0} has no CDI support (it came in 1.7); nothing written")]
    NoCdi(String),

    #[error(
        "config version {version} needs containerd {}.0 or later, and {} is {}: it would not \
         find the CRI runtime settings (set config_version: 2)",
        version.min_containerd_major(), containerd.display(), release
    )]
    VersionTooNew {
        version: config::ConfigVersion,
        containerd: PathBuf,
        release: String,
    },

    #[error(
        "validate: true, but no containerd binary was found on PATH or in /usr/bin, \
         /usr/local/bin, /bin (set containerd_path, or validate: false); nothing written"
    )]
    NoValidator,

    #[error("containerd rejects the new configuration for {path}, so it was not written: {why}")]
    Rejected { path: String, why: String },

    #[error(
        "{source}. containerd accepts the new {path}, but another file it imports overrides \
         these settings; nothing written"
    )]
    Overridden { path: String, source: config::Error },

    #[error("cannot stage the drop-in in memory: {0}; nothing written")]
    StageInMemory(std::io::Error),

    #[error(
        "importing {drop_in} would change more than the runtimes in containerd's effective \
         configuration: {}; nothing written", lost.join("; ")
    )]
    ImportChangesMore { drop_in: String, lost: Vec<String> },

    /// A write failed part way: `written` is what the run had written
    /// before it (folders, files, backups), so the operator knows.
    #[error("{what}; {}", done(written))]
    Commit { what: String, written: Vec<String> },
}

fn done(written: &[String]) -> String {
    if written.is_empty() {
        "nothing written".to_string()
    } else {
        format!("already written: {}", written.join(", "))
    }
}

impl From<Error> for ansible_module::Failure {
    fn from(e: Error) -> Self {
        ansible_module::Failure::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_commit_says_what_was_written_before_it() {
        let nothing = Error::Commit {
            what: "cannot replace /c.toml: EACCES".into(),
            written: vec![],
        };
        assert_eq!(
            nothing.to_string(),
            "cannot replace /c.toml: EACCES; nothing written"
        );
        let some = Error::Commit {
            what: "cannot replace /c.toml: EACCES".into(),
            written: vec!["/conf.d".into(), "/conf.d/99-nvidia.toml".into()],
        };
        assert_eq!(
            some.to_string(),
            "cannot replace /c.toml: EACCES; already written: /conf.d, /conf.d/99-nvidia.toml"
        );
    }
}
