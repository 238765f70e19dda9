//! Everything about installing the NVIDIA driver from NVIDIA's `.run`
//! installer that can be decided before anything runs, as functions over a
//! [`Root`](node_probe::Root) (the node's files) and a [`System`] (the few
//! programs it runs), so that each decision is tested without a GPU node.
//!
//! - [`version`]: the driver version asked for and the one installed now.
//! - [`module_type`]: open or proprietary kernel modules, for the node's GPUs.
//! - [`installer`]: the installer's file name and its command line.
//! - [`preflight`]: the checks that must pass before the installer runs, each
//!   with the message that says how to fix it.
//! - [`nouveau`]: the blacklist and the initramfs rebuild that retire nouveau.
//! - [`lock`]: one installer at a time per node.
//! - [`checksum`]: `sha256:<hex>` of the installer, checked before it runs.
//! - [`stage`]: the private copy of the installer that is hashed and run.

pub mod checksum;
mod error;
pub mod installer;
pub mod lock;
pub mod module_type;
pub mod nouveau;
pub mod preflight;
pub mod sha256;
pub mod stage;
pub mod system;
pub mod version;

pub use error::Error;
pub use system::{Host, Output, System};
