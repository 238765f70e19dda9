//! A module whose body panics, for the test that proves a panic still
//! answers with one JSON object (tests/panic.rs).

use ansible_module::{Arg, ModuleSpec};

const SPEC: ModuleSpec = ModuleSpec {
    name: "panicking_module",
    supports_check_mode: true,
    args: &[Arg::str("reason").default_str("a bug")],
    ..ModuleSpec::BASE
};

#[derive(serde::Deserialize)]
struct Options {
    reason: String,
}

fn main() {
    ansible_module::run(&SPEC, |_module, opts: Options| {
        panic!("simulated {}", opts.reason)
    })
}
