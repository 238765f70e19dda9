//! The paths the options give: checked before anything is read, compared
//! as text, and followed through symlinks to the file a write replaces.

use crate::error::Error;
use crate::{Mode, Options};
use std::path::{Component, Path, PathBuf};

/// `path` (and in drop_in mode `drop_in_path`) must be absolute, free of
/// control characters, name a file, and not be the same path.
pub fn check(opts: &Options) -> Result<(), Error> {
    let mut named = vec![("path", &opts.path)];
    if opts.mode == Mode::DropIn {
        named.push(("drop_in_path", &opts.drop_in_path));
    }
    for (name, path) in named {
        if !path.is_absolute() {
            return Err(Error::NotAbsolute {
                name,
                path: path.clone(),
            });
        }
        if path.to_string_lossy().chars().any(char::is_control) {
            return Err(Error::ControlCharacter {
                name,
                path: path.to_string_lossy().into_owned(),
            });
        }
        if path.file_name().is_none() || lexical(path).parent().is_none() {
            return Err(Error::NamesNoFile {
                name,
                path: path.clone(),
            });
        }
    }
    if opts.mode == Mode::DropIn && lexical(&opts.drop_in_path) == lexical(&opts.path) {
        return Err(Error::DropInIsMain {
            drop_in: opts.drop_in_path.clone(),
            main: opts.path.clone(),
        });
    }
    Ok(())
}

/// An absolute path with `.` and `..` resolved as text (`/etc/x/../c` is
/// `/etc/c`), to compare two paths the options give.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

/// Where a write to `path` goes: a symlink is followed to the file it names
/// (as Ansible's `follow: true`; the link stays a link and its target gets
/// the new content, which is what a node that links config.toml to a
/// managed copy means). Up to 40 links, as the kernel allows; a link loop
/// or a link to something other than a file is an error.
pub fn follow_links(name: &'static str, path: &Path) -> Result<PathBuf, Error> {
    let mut at = lexical(path);
    for _ in 0..40 {
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&at).map_err(|source| Error::ReadLink {
                    path: at.clone(),
                    source,
                })?;
                let parent = at.parent().unwrap_or(Path::new("/")).to_path_buf();
                at = lexical(&parent.join(target));
            }
            Ok(meta) if !meta.is_file() => return Err(Error::NotRegularFile { name, path: at }),
            _ => return Ok(at),
        }
    }
    Err(Error::LinkLoop {
        name,
        path: path.to_path_buf(),
    })
}
