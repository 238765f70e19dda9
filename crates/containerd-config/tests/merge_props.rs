//! Property-based tests of `merge` (issue 14): for generated version 2 and 3
//! configs with comments and odd-but-valid TOML (literal and basic strings,
//! dotted keys, inline tables, multi-line arrays with trailing commas,
//! indented and flat layouts, quoted header keys in either quote style,
//! other runtimes), merge output
//! - parses, and says what was asked (`verify`);
//! - keeps every line it had no reason to change, byte for byte and in
//!   order: every comment, every unrelated key and table header;
//! - is a fixed point: merging it again gives the same bytes.

use containerd_config::{merge, verify, ConfigVersion, Wanted};
use proptest::prelude::*;

/// One piece of a generated config: its lines, and whether merge may change
/// them (the managed runtime settings).
#[derive(Clone, Debug)]
struct Piece {
    text: String,
}

fn comment() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "# keep: air-gapped registry",
        "#no space after the hash",
        "  # indented comment",
        "# unicode: 설정 — ok",
        "#",
        "# [plugins.\"looks.like.a.header\"]",
    ])
    .prop_map(str::to_string)
}

/// A header key in either quote style (both are valid in both versions).
fn quote(literal: bool, key: &str) -> String {
    if literal {
        format!("'{key}'")
    } else {
        format!("\"{key}\"")
    }
}

/// An unrelated top-level or table body line.
fn value_line() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "oom_score = -999",
        "root = '/var/lib/containerd' # literal string",
        "state = \"/run/containerd\"",
        "plugin_dir = \"\"",
        "required_plugins = [\n  \"io.containerd.grpc.v1.cri\",\n]",
        "timeouts.\"io.containerd.timeout.shim.shutdown\" = \"3s\"",
        "debug = { level = \"info\", format = \"json\" }",
        "extra.empty = []",
        "big = 1_000_000",
        "ratio = 0.5e1",
        "when = 1979-05-27T07:32:00Z",
        "multi = \"\"\"\nline one\n  line two\"\"\"",
    ])
    .prop_map(str::to_string)
}

/// An unrelated table (header + body), in the config's CRI plugin or not.
fn table(v2: bool) -> impl Strategy<Value = Piece> {
    let cri = if v2 {
        "io.containerd.grpc.v1.cri"
    } else {
        "io.containerd.cri.v1.images"
    };
    (
        any::<bool>(),
        0..3usize,
        prop::collection::vec(value_line(), 0..3),
        prop::option::of(comment()),
        0usize..4,
    )
        .prop_map(move |(literal, which, body, comment, sub)| {
            let header = match which {
                0 => format!(
                    "[plugins.{}.registry.mirrors.\"docker.io{sub}\"]",
                    quote(literal, cri)
                ),
                1 => format!(
                    "[plugins.{}]",
                    quote(literal, "io.containerd.internal.v1.opt")
                ),
                _ => format!("[proxy_plugins.{}]", quote(literal, &format!("snap{sub}"))),
            };
            let mut text = String::new();
            if let Some(c) = comment {
                text.push_str(&c);
                text.push('\n');
            }
            text.push_str(&header);
            text.push('\n');
            if which == 0 {
                text.push_str("  endpoint = [\"https://mirror.internal\"] # ours\n");
            } else if which == 1 {
                text.push_str("  path = \"/opt/containerd\"\n");
            } else {
                text.push_str("  type = \"snapshot\"\n  address = '/run/snap.sock'\n");
            }
            for line in body {
                text.push_str(&line);
                text.push('\n');
            }
            Piece { text }
        })
}

/// The CRI runtime section as people leave it: maybe a runc entry (with
/// options or not), maybe kata, in an indented or flat layout.
fn runtimes(v2: bool) -> impl Strategy<Value = Piece> {
    let plugin = if v2 {
        "io.containerd.grpc.v1.cri"
    } else {
        "io.containerd.cri.v1.runtime"
    };
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        move |(literal, indent, with_runc, runc_options, kata)| {
            let p = quote(literal, plugin);
            let i = if indent { "  " } else { "" };
            let mut text = format!("[plugins.{p}.containerd]\n{i}snapshotter = \"overlayfs\"\n{i}default_runtime_name = \"runc\" # set by the packager\n");
            if with_runc {
                text.push_str(&format!("\n{i}[plugins.{p}.containerd.runtimes.runc]\n{i}{i}runtime_type = \"io.containerd.runc.v2\"\n"));
                if runc_options {
                    text.push_str(&format!("{i}{i}[plugins.{p}.containerd.runtimes.runc.options]\n{i}{i}{i}SystemdCgroup = false\n"));
                }
            }
            if kata {
                text.push_str(&format!("\n[plugins.{p}.containerd.runtimes.kata]\nruntime_type = \"io.containerd.kata.v2\" # VMs\n"));
            }
            Piece { text }
        },
    )
}

fn config(v2: bool) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(comment(), 0..3),
        prop::collection::vec(value_line(), 0..3),
        prop::collection::vec(table(v2), 0..4),
        prop::option::of(runtimes(v2)),
        0..5usize,
    )
        .prop_map(move |(comments, values, tables, rt, at)| {
            let mut text = String::new();
            for c in comments {
                text.push_str(&c);
                text.push('\n');
            }
            text.push_str(if v2 { "version = 2\n" } else { "version = 3\n" });
            let mut seen = std::collections::HashSet::new();
            for v in values {
                let key = v.split([' ', '.']).next().unwrap_or_default().to_string();
                if seen.insert(key) {
                    text.push_str(&v);
                    text.push('\n');
                }
            }
            let mut pieces: Vec<Piece> = Vec::new();
            let mut headers = std::collections::HashSet::new();
            for t in tables {
                let header = t
                    .text
                    .lines()
                    .find(|l| l.starts_with('['))
                    .unwrap()
                    .replace('\'', "\"");
                if headers.insert(header) {
                    pieces.push(t);
                }
            }
            if let Some(rt) = rt {
                pieces.insert(at.min(pieces.len()), rt);
            }
            for p in pieces {
                text.push('\n');
                text.push_str(&p.text);
            }
            text
        })
}

fn wanted() -> impl Strategy<Value = Wanted> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec!["nvidia", "nvidia-cdi", "gpu0"]),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(nvidia, default, systemd, name, cdi)| Wanted {
            nvidia_runtime: nvidia,
            set_as_default: default,
            systemd_cgroup: systemd,
            runtime_name: name.into(),
            enable_cdi: cdi,
            ..Wanted::nvidia()
        })
}

/// Lines merge may change: the managed settings (and blank lines around
/// tables it adds).
fn managed(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("default_runtime_name")
        || t.starts_with("SystemdCgroup")
        || t.starts_with("runtime_type = \"io.containerd.runc.v2\"")
        || t.starts_with("enable_cdi")
        || t.is_empty()
}

/// Whether `needle` lines appear in `hay` in order.
fn subsequence<'a>(needle: &[&'a str], hay: &[&'a str]) -> Result<(), &'a str> {
    let mut it = hay.iter();
    for n in needle {
        if !it.any(|h| h == n) {
            return Err(n);
        }
    }
    Ok(())
}

fn check(text: &str, wanted: &Wanted, version: ConfigVersion) -> Result<(), TestCaseError> {
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|e| TestCaseError::reject(format!("generator made invalid TOML: {e}\n{text}")))?;
    let out = merge(Some(text), "/etc/containerd/config.toml", wanted, version)
        .map_err(|e| TestCaseError::fail(format!("merge failed: {e}\n{text}")))?;
    prop_assert!(
        out.text.parse::<toml_edit::DocumentMut>().is_ok(),
        "{}",
        out.text
    );
    let wanted_after = Wanted {
        keep_default: None,
        ..wanted.clone()
    };
    verify(&out.text, "merged", &wanted_after, version).map_err(|e| {
        TestCaseError::fail(format!("{e}\n--- in:\n{text}\n--- out:\n{}", out.text))
    })?;
    let kept: Vec<&str> = text.lines().filter(|l| !managed(l)).collect();
    let lines: Vec<&str> = out.text.lines().collect();
    if let Err(lost) = subsequence(&kept, &lines) {
        return Err(TestCaseError::fail(format!(
            "line changed or moved: {lost:?}\n--- in:\n{text}\n--- out:\n{}",
            out.text
        )));
    }
    let again = merge(
        Some(&out.text),
        "/etc/containerd/config.toml",
        wanted,
        version,
    )
    .unwrap();
    prop_assert_eq!(&again.text, &out.text, "a second merge changed the file");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn merge_v2_keeps_everything_else_and_is_a_fixed_point(text in config(true), wanted in wanted()) {
        check(&text, &wanted, ConfigVersion::V2)?;
    }

    #[test]
    fn merge_v3_keeps_everything_else_and_is_a_fixed_point(text in config(false), wanted in wanted()) {
        check(&text, &wanted, ConfigVersion::V3)?;
    }
}
