//! A module that cannot honour check mode, for the test that proves it answers
//! `skipped` instead of running (tests/panic.rs).

use ansible_module::{ModuleSpec, Outcome};

const SPEC: ModuleSpec = ModuleSpec {
    name: "no_check_mode_module",
    supports_check_mode: false,
    args: &[],
    ..ModuleSpec::BASE
};

fn main() {
    ansible_module::run(&SPEC, |_module, _: serde_json::Value| {
        Ok(Outcome::new(true).msg("ran"))
    })
}
