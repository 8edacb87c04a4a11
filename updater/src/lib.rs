//! Keel updater library: apply a signed USR payload to the passive slot, judge and mark boots,
//! roll back, reboot. Used by the in-guest `keel-update` binary and by the host's
//! `keel apply --disk IMAGE PAYLOAD`, both through [`cli`]. `updater/README.md` describes the
//! commands and the order of operations; the exit codes are keel-cli-support's.

#![forbid(unsafe_code)]

pub mod agent;
pub mod apply;
pub mod cli;
pub mod compat;
pub mod disk;
pub mod download;
pub mod error;
pub mod health;
pub mod image_keys;
pub mod lifecycle;
pub mod payload;
pub mod reboot;
pub mod reboot_required;
pub mod release;
pub mod slots;
pub mod state;
pub mod stream;
pub mod target;
pub mod trust;

pub use apply::{apply, Applied, ApplyOptions};
pub use error::UpdateError;
/// What `apply` reports its steps to (the one progress display, keel-cli-support's).
pub use keel_cli_support::progress;
pub use payload::PayloadSource;
pub use target::Target;
