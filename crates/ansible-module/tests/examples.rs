//! The protocol's last-resort paths, through real processes: a panic and a
//! module without check-mode support. The example binaries are built by
//! `cargo test` next to this test's binary.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    if !path.exists() {
        // `cargo test` builds examples, `cargo test --test examples` does not.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "ansible-module",
                "--example",
                name,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the example {name}");
    }
    path
}

fn run(name: &str, args: Value) -> (i32, Value) {
    let file = std::env::temp_dir().join(format!("{name}-{}.json", std::process::id()));
    std::fs::write(&file, args.to_string()).unwrap();
    let out = Command::new(example(name)).arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "exactly one line of JSON: {stdout:?}"
    );
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap(),
    )
}

#[test]
fn a_panic_still_answers_with_one_json_failure() {
    let (code, result) = run("panicking_module", json!({"reason": "divide by zero"}));
    assert_eq!(code, 1);
    assert_eq!(result["failed"], json!(true));
    let msg = result["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("internal error in the module (please report it):"),
        "{msg}"
    );
    assert!(msg.contains("simulated divide by zero"), "{msg}");
}

#[test]
fn a_module_without_check_mode_is_skipped_in_check_mode() {
    let (code, result) = run("no_check_mode_module", json!({"_ansible_check_mode": true}));
    assert_eq!(code, 0);
    assert_eq!(
        result,
        json!({"changed": false, "skipped": true,
               "msg": "remote module (no_check_mode_module) does not support check mode"})
    );
    let (_, ran) = run("no_check_mode_module", json!({}));
    assert_eq!(ran["msg"], json!("ran"));
}
