//! Edits of an existing config that keep everything they do not need to
//! change: comments, key order, quoting, indentation and every unrelated
//! table. A value already right is not touched at all, so editing a correct
//! file gives back the same bytes.

use crate::error::Error;
use crate::version::ConfigVersion;
use crate::{Wanted, RUNC_RUNTIME_TYPE};
use std::collections::HashMap;
use std::path::Path;
use toml_edit::{Array, DocumentMut, Item, RawString, Table, TableLike, Value};

/// A config's new text, with what was changed besides the runtimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub text: String,
    /// Sentences for the task's message, e.g. a plugin that was re-enabled.
    pub notes: Vec<String>,
}

const MERGE_HEADER: &str = "\
# containerd configuration. Created by Ansible (containerd_runtime_config,
# mode merge), which manages the CRI runtimes below; other settings added
# here are kept.
";

/// The main config edited (or, when `existing` is `None`, created) so that
/// the CRI runtimes are as wanted: `default_runtime_name`, and for runc and
/// the NVIDIA runtime `runtime_type`, `options.SystemdCgroup` and (NVIDIA)
/// `options.BinaryName`. Other runtimes and settings are left as they are.
pub fn merge(
    existing: Option<&str>,
    origin: &str,
    wanted: &Wanted,
    version: ConfigVersion,
) -> Result<Edit, Error> {
    wanted.check()?;
    let base;
    let text = match existing {
        Some(text) => text,
        None => {
            base = format!("{MERGE_HEADER}version = {version}\n");
            &base
        }
    };
    let mut doc = parse(text, origin)?;
    let layout = Layout::of(&doc);
    let mut notes = Vec::new();
    ensure_version(&mut doc, version, origin)?;
    enable_cri(&mut doc, version, origin, &mut notes)?;
    configure_runtimes(&mut doc, wanted, version, &layout, origin)?;
    finish(doc, Some(text), origin, notes)
}

/// The text of a drop-in file that the main config `main_origin` imports:
/// the version, and the main config's CRI runtime plugin section with the
/// runtimes set as wanted.
///
/// The copy is needed because containerd 1.x merges an imported file by
/// replacing each plugin section it names whole: a drop-in holding only the
/// runtimes would silently drop the main file's sandbox image, registry
/// mirrors, CNI settings and other runtimes. With the copy, the result is
/// the same whether containerd replaces sections or merges them.
pub fn drop_in(
    main: Option<&str>,
    main_origin: &str,
    wanted: &Wanted,
    version: ConfigVersion,
) -> Result<String, Error> {
    wanted.check()?;
    let plugin = version.cri_runtime_plugin();
    let copied = match main {
        Some(text) => parse(text, main_origin)?
            .get("plugins")
            .and_then(|p| p.get(plugin))
            .cloned(),
        None => None,
    };
    let mut header = format!(
        "# The CRI runtimes for Kubernetes pods, imported by {main_origin}.\n\
         # Written by Ansible (containerd_runtime_config, mode drop_in): changes here\n\
         # are overwritten.\n"
    );
    if copied.is_some() {
        header.push_str(&format!(
            "# containerd 1.x lets an imported file replace a whole plugin section, so\n\
             # this file carries a copy of the \"{plugin}\" section of\n\
             # {main_origin}: change that section there, then run the module again.\n"
        ));
    }
    let mut doc = parse(&format!("{header}version = {version}\n"), "the drop-in")?;
    if let Some(mut section) = copied {
        if let Some(table) = section.as_table_mut() {
            table.decor_mut().set_prefix("\n");
        }
        let mut plugins = Table::new();
        plugins.set_implicit(true);
        plugins.insert(plugin, section);
        doc.insert("plugins", Item::Table(plugins));
    }
    let layout = Layout::of(&doc);
    configure_runtimes(&mut doc, wanted, version, &layout, main_origin)?;
    Ok(finish(doc, None, "the drop-in", Vec::new())?.text)
}

/// Where a containerd resolves a relative `imports` glob (an entry with a
/// `*`) of the main config: 1.6 against its working directory (`/` under
/// systemd; it hands the pattern to `filepath.Glob` as it is), 1.7 and 2.x
/// against the config's folder. A relative entry without `*` is relative to
/// the config's folder in every release. `Unknown` (no containerd to ask):
/// a relative glob is taken to load nothing, so an absolute entry is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelativeImports<'a> {
    Against(&'a Path),
    Unknown,
}

impl<'a> RelativeImports<'a> {
    /// The rule of a containerd release for a main config in `main_dir`.
    pub fn of(containerd: Option<&crate::ContainerdVersion>, main_dir: &'a Path) -> Self {
        match containerd {
            Some(v) if (v.major, v.minor) < (1, 7) => RelativeImports::Against(Path::new("/")),
            Some(_) => RelativeImports::Against(main_dir),
            None => RelativeImports::Unknown,
        }
    }
}

/// The main config with `drop_in_path` in its `imports` (once: an entry that
/// already loads it, as `relative` resolves it, or a glob that matches it,
/// is enough). Created with only the version and the import when `existing`
/// is `None`.
pub fn add_import(
    existing: Option<&str>,
    origin: &str,
    drop_in_path: &str,
    version: ConfigVersion,
    relative: RelativeImports<'_>,
) -> Result<Edit, Error> {
    let base;
    let text = match existing {
        Some(text) => text,
        None => {
            base = format!(
                "# containerd configuration. Created by Ansible (containerd_runtime_config,\n\
                 # mode drop_in): containerd's defaults plus the imported files.\n\
                 version = {version}\n"
            );
            &base
        }
    };
    let mut doc = parse(text, origin)?;
    let mut notes = Vec::new();
    ensure_version(&mut doc, version, origin)?;
    enable_cri(&mut doc, version, origin, &mut notes)?;
    match doc.get_mut("imports") {
        None => {
            let mut imports = Array::new();
            imports.push(drop_in_path);
            insert_root_value(&mut doc, "imports", Value::Array(imports), Some("version"));
        }
        Some(item) => {
            let imports = item
                .as_array_mut()
                .ok_or_else(|| Error::shape(origin, "`imports` is not a list of paths"))?;
            let covered = imports
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|entry| resolve(entry, origin, relative))
                .any(|full| import_covers(&full, drop_in_path, Path::new("/")));
            if !covered {
                push_like_last(imports, drop_in_path);
            }
        }
    }
    finish(doc, Some(text), origin, notes)
}

/// Whether an `imports` entry of a config in `main_dir` loads `path`:
/// the same path (a relative entry is relative to the config's directory,
/// as containerd resolves it) or a glob that matches it.
pub fn import_covers(entry: &str, path: &str, main_dir: &Path) -> bool {
    let full = absolute(entry, main_dir);
    full == path || (full.contains(['*', '?', '[']) && glob_match(&full, path))
}

/// A copy of a main config for `containerd config dump` to check, away from
/// its real path: relative imports made absolute as `relative` says the
/// containerd resolves them, `drop` left out of the imports and `add`
/// appended to them (the staged drop-in that will replace `drop`). Nothing
/// else differs from the text that is committed: an `imports` that is not a
/// list of paths is an error here, not an entry quietly left out.
pub fn validation_copy(
    text: &str,
    origin: &str,
    drop: Option<&str>,
    add: Option<&str>,
    relative: RelativeImports<'_>,
) -> Result<String, Error> {
    let mut doc = parse(text, origin)?;
    let relative = match relative {
        RelativeImports::Unknown => RelativeImports::Against(parent_dir(origin)),
        known => known,
    };
    match doc.get("imports") {
        None => {}
        Some(item) => {
            let imports = item
                .as_array()
                .ok_or_else(|| Error::shape(origin, "`imports` is not a list of paths"))?;
            if let Some(bad) = imports.iter().find(|v| v.as_str().is_none()) {
                return Err(Error::shape(
                    origin,
                    format!(
                        "`imports` holds {}, which is not a path",
                        bad.to_string().trim()
                    ),
                ));
            }
        }
    }
    if let Some(imports) = doc.get_mut("imports").and_then(Item::as_array_mut) {
        let entries: Vec<String> = imports
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|entry| resolve(entry, origin, relative))
            .filter(|entry| Some(entry.as_str()) != drop)
            .collect();
        imports.clear();
        entries.iter().for_each(|e| imports.push(e.as_str()));
        if let Some(add) = add {
            imports.push(add);
        }
    } else if let Some(add) = add {
        let mut imports = Array::new();
        imports.push(add);
        doc.insert("imports", Item::Value(Value::Array(imports)));
    }
    Ok(doc.to_string())
}

pub(crate) fn parse(text: &str, origin: &str) -> Result<DocumentMut, Error> {
    text.parse::<DocumentMut>()
        .map_err(|e| Error::parse(origin, text, &e))
}

/// The document as text, re-parsed once: an edit must never produce
/// something containerd cannot read.
fn finish(
    doc: DocumentMut,
    original: Option<&str>,
    origin: &str,
    notes: Vec<String>,
) -> Result<Edit, Error> {
    let mut text = doc.to_string();
    if let Some(original) = original {
        text = keep_headers(original, &text);
    }
    parse(&text, origin).map_err(|e| {
        Error::shape(
            origin,
            format!("internal error: the edited config would not parse ({e}); nothing written"),
        )
    })?;
    Ok(Edit { text, notes })
}

/// `text` with every `[table]` header line that the original has (the same
/// key path) given back exactly as the original wrote it. toml_edit prints a
/// header's keys as the parent table stores them, so with one key quoted two
/// ways in two headers (`'io.containerd.cri.v1.images'`, then
/// `"io.containerd.cri.v1.images"`) the second came back re-quoted: a line
/// merge had no reason to touch.
fn keep_headers(original: &str, text: &str) -> String {
    let mut by_path: HashMap<Vec<String>, &str> = HashMap::new();
    for line in original.lines() {
        if let Some(path) = header_path(line) {
            by_path.entry(path).or_insert(line);
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        match header_path(body).and_then(|p| by_path.get(&p)) {
            Some(orig) => {
                out.push_str(orig);
                out.push_str(newline);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The key path of a `[a.'b'."c"]` header line (not `[[...]]`), parsed by
/// toml_edit itself; `None` for any other line.
fn header_path(line: &str) -> Option<Vec<String>> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('[') || trimmed.starts_with("[[") {
        return None;
    }
    let doc: DocumentMut = line.trim().parse().ok()?;
    let mut path = Vec::new();
    let mut table: &Table = doc.as_table();
    loop {
        let mut keys = table.iter();
        let (key, item) = keys.next()?;
        if keys.next().is_some() {
            return None;
        }
        path.push(key.to_string());
        match item.as_table() {
            Some(t) if t.is_implicit() || t.is_empty() => {
                if t.is_empty() && !t.is_implicit() {
                    return Some(path);
                }
                table = t;
            }
            _ => return None,
        }
    }
}

fn parent_dir(path: &str) -> &Path {
    Path::new(path).parent().unwrap_or(Path::new("/"))
}

/// The absolute path or pattern an `imports` entry of `origin` loads, as
/// `relative` says; `None` where that is not known.
fn resolve(entry: &str, origin: &str, relative: RelativeImports<'_>) -> Option<String> {
    if Path::new(entry).is_absolute() {
        return Some(entry.to_string());
    }
    if !entry.contains('*') {
        return Some(absolute(entry, parent_dir(origin)));
    }
    match relative {
        RelativeImports::Against(dir) => Some(absolute(entry, dir)),
        RelativeImports::Unknown => None,
    }
}

fn absolute(entry: &str, dir: &Path) -> String {
    if Path::new(entry).is_absolute() {
        entry.to_string()
    } else {
        dir.join(entry).to_string_lossy().into_owned()
    }
}

/// `version = N` present, or added as the first key; a different version is
/// an error (the caller chose the version from this file).
fn ensure_version(
    doc: &mut DocumentMut,
    version: ConfigVersion,
    origin: &str,
) -> Result<(), Error> {
    match doc.get("version") {
        None => {
            insert_root_value(doc, "version", Value::from(version.number()), None);
            Ok(())
        }
        Some(item) => match item.as_integer() {
            Some(n) if n == version.number() => Ok(()),
            Some(n) => Err(Error::Version(format!(
                "{origin} is a version {n} config, not version {version}"
            ))),
            None => Err(Error::shape(origin, "`version` is not an integer")),
        },
    }
}

/// Inserts a top-level value right after the key `after` (at the top when
/// `None` or absent), leaving every other key where it was.
fn insert_root_value(doc: &mut DocumentMut, key: &str, value: Value, after: Option<&str>) {
    let mut order: Vec<String> = doc.iter().map(|(k, _)| k.to_string()).collect();
    let at = after
        .and_then(|a| order.iter().position(|k| k == a))
        .map_or(0, |i| i + 1);
    order.insert(at, key.to_string());
    doc.insert(key, Item::Value(value));
    let rank: HashMap<String, usize> = order.into_iter().enumerate().map(|(i, k)| (k, i)).collect();
    doc.sort_values_by(|a, _, b, _| rank[a.get()].cmp(&rank[b.get()]));
}

/// Removes the CRI plugin from `disabled_plugins` (Docker's containerd
/// packages ship `disabled_plugins = ["cri"]`): a runtime configured for a
/// disabled CRI would never run a pod.
fn enable_cri(
    doc: &mut DocumentMut,
    version: ConfigVersion,
    origin: &str,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    let Some(item) = doc.get_mut("disabled_plugins") else {
        return Ok(());
    };
    let disabled = item
        .as_array_mut()
        .ok_or_else(|| Error::shape(origin, "`disabled_plugins` is not a list"))?;
    let ids = version.cri_plugin_ids();
    let is_cri = |v: &Value| v.as_str().is_some_and(|s| ids.contains(&s));
    let removed: Vec<String> = disabled
        .iter()
        .filter(|v| is_cri(v))
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if removed.is_empty() {
        return Ok(());
    }
    let first_prefix = disabled.get(0).and_then(|v| v.decor().prefix().cloned());
    disabled.retain(|v| !is_cri(v));
    if let (Some(first), Some(prefix)) = (disabled.get_mut(0), first_prefix) {
        first.decor_mut().set_prefix(prefix);
    }
    notes.push(format!(
        "enabled the CRI plugin (removed {} from disabled_plugins in {origin})",
        removed.join(", ")
    ));
    Ok(())
}

fn configure_runtimes(
    doc: &mut DocumentMut,
    wanted: &Wanted,
    version: ConfigVersion,
    layout: &Layout,
    origin: &str,
) -> Result<(), Error> {
    let inherited = if wanted.nvidia_runtime {
        inherited_from_runc(doc, version, &wanted.runtime_name)
    } else {
        Inherited::default()
    };
    let mut at = Cursor {
        item: doc.as_item_mut(),
        indent: None,
        path: Vec::new(),
    };
    for key in ["plugins", version.cri_runtime_plugin()] {
        at = at.child(key, false, layout, origin)?;
    }
    if let Some(cdi) = wanted.enable_cdi {
        at.set("enable_cdi", Value::from(cdi), layout, origin)?;
    }
    let mut containerd = at.child("containerd", true, layout, origin)?;
    containerd.set(
        "default_runtime_name",
        Value::from(wanted.default_runtime()),
        layout,
        origin,
    )?;
    for runtime in wanted.runtimes() {
        let runtimes = containerd
            .reborrow()
            .child("runtimes", false, layout, origin)?;
        let entry = runtimes.child(runtime.name, true, layout, origin)?;
        // The NVIDIA runtime (the one with a binary) inherits runc's settings.
        let inherits = runtime.binary.map(|_| &inherited);
        configure_entry(entry, runtime, inherits, wanted, layout, origin)?;
    }
    Ok(())
}

/// One runtime's entry: the runc shim, what it inherits from runc's entry
/// (`inherited`, new NVIDIA entries only), its BinaryName where one is
/// wanted, and SystemdCgroup.
fn configure_entry(
    mut entry: Cursor<'_>,
    runtime: crate::RuntimeEntry<'_>,
    inherited: Option<&Inherited>,
    wanted: &Wanted,
    layout: &Layout,
    origin: &str,
) -> Result<(), Error> {
    let runc_type = Value::from(RUNC_RUNTIME_TYPE);
    entry.set("runtime_type", runc_type, layout, origin)?;
    for (key, value) in inherited.map_or(&[][..], |i| &i.entry[..]) {
        entry.set(key, value.clone(), layout, origin)?;
    }
    let mut options = entry.child("options", true, layout, origin)?;
    for (key, value) in inherited.map_or(&[][..], |i| &i.options[..]) {
        options.set(key, value.clone(), layout, origin)?;
    }
    if let Some(binary) = runtime.binary {
        options.set("BinaryName", Value::from(binary), layout, origin)?;
    }
    let systemd = Value::from(wanted.systemd_cgroup);
    options.set("SystemdCgroup", systemd, layout, origin)
}

/// What a new NVIDIA runtime entry takes over from the runc entry: every
/// value of it and of its `options`, but what this module sets itself
/// (`runtime_type`, `BinaryName`, `SystemdCgroup`). Like `nvidia-ctk`, which
/// copies the runc entry whole: the NVIDIA runtime is runc under the same
/// shim, so a node's `privileged_without_host_devices`, `base_runtime_spec`,
/// annotations, `Root`, `snapshotter`... must hold for it too, or GPU pods
/// would run differently from the others. Only when the entry is new (an
/// existing NVIDIA entry is the user's to edit) and only from a runc-shim
/// entry (a crun or kata entry's options belong to another shim).
#[derive(Default)]
struct Inherited {
    entry: Vec<(String, Value)>,
    options: Vec<(String, Value)>,
}

fn inherited_from_runc(doc: &DocumentMut, version: ConfigVersion, name: &str) -> Inherited {
    let runtimes = doc
        .get("plugins")
        .and_then(|p| p.get(version.cri_runtime_plugin()))
        .and_then(|p| p.get("containerd"))
        .and_then(|c| c.get("runtimes"));
    let Some(runtimes) = runtimes else {
        return Inherited::default();
    };
    if runtimes.get(name).is_some() {
        return Inherited::default();
    }
    let Some(runc) = runtimes.get(crate::RUNC).and_then(Item::as_table_like) else {
        return Inherited::default();
    };
    let shim = runc.get("runtime_type").and_then(Item::as_str);
    if shim.is_some_and(|s| s != RUNC_RUNTIME_TYPE) {
        return Inherited::default();
    }
    let values = |table: &dyn TableLike, skip: &[&str]| -> Vec<(String, Value)> {
        table
            .iter()
            .filter(|(k, _)| !skip.contains(k))
            .filter_map(|(k, item)| {
                let mut value = item.as_value()?.clone();
                value.decor_mut().clear();
                Some((k.to_string(), value))
            })
            .collect()
    };
    Inherited {
        entry: values(runc, &["runtime_type"]),
        options: runc
            .get("options")
            .and_then(Item::as_table_like)
            .map(|o| values(o, &["BinaryName", "SystemdCgroup"]))
            .unwrap_or_default(),
    }
}

/// The document's indentation step: what a table's keys are indented by
/// relative to its header (two spaces in `containerd config default`
/// output, none in flat files).
struct Layout {
    step: String,
}

impl Layout {
    fn of(doc: &DocumentMut) -> Layout {
        fn find(table: &Table) -> Option<String> {
            if let (Some(header), Some(keys)) = (header_indent(table), key_indent(table)) {
                if let Some(step) = keys.strip_prefix(header.as_str()) {
                    return Some(step.to_string());
                }
            }
            table
                .iter()
                .filter_map(|(_, item)| item.as_table())
                .find_map(find)
        }
        let has_tables = doc.iter().any(|(_, item)| item.is_table());
        let step = doc
            .iter()
            .filter_map(|(_, item)| item.as_table())
            .find_map(find)
            .unwrap_or_else(|| if has_tables { "" } else { "  " }.to_string());
        Layout { step }
    }
}

/// The whitespace before a line's first character, from a decor prefix
/// that may hold comment lines before it.
fn last_line_indent(prefix: Option<&RawString>) -> Option<String> {
    let text = prefix?.as_str()?;
    let last = text.rsplit('\n').next().unwrap_or(text);
    last.chars()
        .all(|c| c == ' ' || c == '\t')
        .then(|| last.to_string())
}

/// The indentation of a table's `[header]`, when it has one of its own.
fn header_indent(table: &Table) -> Option<String> {
    if table.is_dotted() || (table.is_implicit() && table.get_values().is_empty()) {
        return None;
    }
    Some(last_line_indent(table.decor().prefix()).unwrap_or_default())
}

/// The indentation of a table's first plain key.
fn key_indent(table: &dyn TableLike) -> Option<String> {
    table
        .iter()
        .find(|(_, item)| item.is_value())
        .and_then(|(k, _)| last_line_indent(table.key(k)?.leaf_decor().prefix()))
}

/// A place in the document being edited: the table, the indentation of the
/// nearest header at or above it, and its key path for messages.
struct Cursor<'a> {
    item: &'a mut Item,
    indent: Option<String>,
    path: Vec<String>,
}

impl<'a> Cursor<'a> {
    fn reborrow(&mut self) -> Cursor<'_> {
        Cursor {
            item: &mut *self.item,
            indent: self.indent.clone(),
            path: self.path.clone(),
        }
    }

    fn shown_path(&self, key: Option<&str>) -> String {
        self.path
            .iter()
            .map(String::as_str)
            .chain(key)
            .map(|k| {
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    k.to_string()
                } else {
                    format!("{k:?}")
                }
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The table under `key`, created when missing: implicit (no header of
    /// its own) unless it will hold values (`shown`), indented like its
    /// sibling tables or one step under its parent.
    fn child(
        self,
        key: &str,
        shown: bool,
        layout: &Layout,
        origin: &str,
    ) -> Result<Cursor<'a>, Error> {
        let shown_path = self.shown_path(Some(key));
        let parent_indent = self.indent;
        let mut path = self.path;
        path.push(key.to_string());
        let table = self
            .item
            .as_table_like_mut()
            .expect("a cursor is always on a table");
        let indent = match table.get(key) {
            None => {
                let mut new = Table::new();
                new.set_implicit(true);
                let indent = if shown {
                    let indent = table
                        .iter()
                        .filter_map(|(_, item)| item.as_table())
                        .find_map(header_indent)
                        .or_else(|| {
                            parent_indent
                                .as_ref()
                                .map(|p| format!("{p}{}", layout.step))
                        })
                        .unwrap_or_default();
                    new.decor_mut().set_prefix(format!("\n{indent}"));
                    Some(indent)
                } else {
                    parent_indent
                };
                table.insert(key, Item::Table(new));
                indent
            }
            Some(Item::Table(existing)) => header_indent(existing).or(parent_indent),
            Some(item) if item.is_inline_table() => parent_indent,
            Some(item) => {
                return Err(Error::shape(
                    origin,
                    format!("`{shown_path}` is {}, not a table", describe(item)),
                ))
            }
        };
        let item = table.get_mut(key).expect("present or just inserted");
        Ok(Cursor { item, indent, path })
    }

    /// Sets `key` to `value`. An equal value is left untouched, formatting
    /// and all; a different one is replaced keeping its surrounding
    /// whitespace and trailing comment; a new key is indented like its
    /// siblings.
    fn set(&mut self, key: &str, value: Value, layout: &Layout, origin: &str) -> Result<(), Error> {
        let shown_path = self.shown_path(Some(key));
        let inline = self.item.is_inline_table();
        let own_indent = self.indent.clone();
        let table = self
            .item
            .as_table_like_mut()
            .expect("a cursor is always on a table");
        match table.get_mut(key) {
            Some(Item::Value(old)) => {
                if !same(old, &value) {
                    let decor = old.decor().clone();
                    *old = quoted_like(old, value);
                    *old.decor_mut() = decor;
                }
            }
            Some(other) => {
                return Err(Error::shape(
                    origin,
                    format!("`{shown_path}` is {}, expected a value", describe(other)),
                ))
            }
            None => {
                let indent = key_indent(table).unwrap_or_else(|| {
                    own_indent.map_or_else(String::new, |i| format!("{i}{}", layout.step))
                });
                table.insert(key, Item::Value(value));
                if !inline {
                    if let Some(mut k) = table.key_mut(key) {
                        k.leaf_decor_mut().set_prefix(indent);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A new string in the quoting of the one it replaces: `'runc'` becomes
/// `'nvidia'` in a file written with literal strings (as containerd 2.x's
/// `config default` and `config migrate` write them).
fn quoted_like(old: &Value, new: Value) -> Value {
    let literal = matches!(old, Value::String(f) if f.display_repr().starts_with('\''));
    match new.as_str() {
        Some(text) if literal && !text.contains(|c: char| c == '\'' || c.is_control()) => {
            format!("'{text}'").parse().unwrap_or(new)
        }
        _ => new,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.value() == y.value(),
        (Value::Boolean(x), Value::Boolean(y)) => x.value() == y.value(),
        (Value::Integer(x), Value::Integer(y)) => x.value() == y.value(),
        _ => false,
    }
}

pub(crate) fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date",
            Value::Array(_) => "a list",
            Value::InlineTable(_) => "an inline table",
        },
    }
}

/// Appends to an array formatted like its last element, so a one-per-line
/// list stays one per line.
fn push_like_last(array: &mut Array, entry: &str) {
    let only_one = array.len() == 1;
    let decor = array.iter().last().map(|v| v.decor().clone());
    array.push(entry);
    if let (Some(mut decor), Some(new)) = (decor, array.iter_mut().last()) {
        // The first entry of `["a"]` has no space before it; the second one
        // gets the one `["a", "b"]` has.
        let bare = decor
            .prefix()
            .and_then(|p| p.as_str())
            .is_none_or(str::is_empty);
        if only_one && bare {
            decor.set_prefix(" ");
        }
        *new.decor_mut() = decor;
    }
}

/// Go's `filepath.Match`, which containerd uses for glob imports: `*` and
/// `?` never match `/`; `[...]` classes with ranges and `^` negation.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, chars consumed incl. ']').
        let mut i = 0;
        let negate = p.first() == Some(&'^');
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let lo = p[i];
            if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                matched |= lo <= c && c <= p[i + 2];
                i += 3;
            } else {
                matched |= lo == c;
                i += 1;
            }
        }
        None
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != '/')
                .any(|i| go(&p[1..], &n[i..])),
            Some('?') => n.first().is_some_and(|&c| c != '/') && go(&p[1..], &n[1..]),
            Some('[') => match (n.first(), class(&p[1..], *n.first().unwrap_or(&'/'))) {
                (Some(&c), Some((true, used))) if c != '/' => go(&p[1 + used..], &n[1..]),
                _ => false,
            },
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_go_filepath_match() {
        assert!(glob_match(
            "/etc/containerd/conf.d/*.toml",
            "/etc/containerd/conf.d/99-nvidia.toml"
        ));
        assert!(!glob_match(
            "/etc/containerd/*.toml",
            "/etc/containerd/conf.d/99-nvidia.toml"
        ));
        assert!(glob_match(
            "/etc/containerd/conf.d/9?-*.toml",
            "/etc/containerd/conf.d/99-nvidia.toml"
        ));
        assert!(glob_match(
            "/etc/containerd/conf.d/[0-9]*",
            "/etc/containerd/conf.d/99-nvidia.toml"
        ));
        assert!(!glob_match(
            "/etc/containerd/conf.d/[^0-9]*",
            "/etc/containerd/conf.d/99-nvidia.toml"
        ));
        assert!(!glob_match(
            "/etc/containerd/conf.d/*.conf",
            "/etc/containerd/conf.d/99-nvidia.toml"
        ));
    }

    #[test]
    fn imports_cover_relative_and_glob_entries() {
        let dir = Path::new("/etc/containerd");
        let path = "/etc/containerd/conf.d/99-nvidia.toml";
        assert!(import_covers("conf.d/99-nvidia.toml", path, dir));
        assert!(import_covers("/etc/containerd/conf.d/*.toml", path, dir));
        assert!(import_covers("conf.d/*.toml", path, dir));
        assert!(!import_covers("/etc/containerd/other.toml", path, dir));
    }

    #[test]
    fn the_indentation_step_is_read_from_the_document() {
        let indented = parse("[a]\n  [a.b]\n    x = 1\n", "t").unwrap();
        assert_eq!(Layout::of(&indented).step, "  ");
        let flat = parse("[a]\nx = 1\n", "t").unwrap();
        assert_eq!(Layout::of(&flat).step, "");
        let no_tables = parse("version = 2\n", "t").unwrap();
        assert_eq!(Layout::of(&no_tables).step, "  ");
    }
}
