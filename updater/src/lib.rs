//! Keel updater library: apply a signed USR payload to the passive slot, judge and mark boots,
//! roll back, reboot. Used by the in-guest `keel-update` binary and by the host's
//! `keel apply --disk IMAGE PAYLOAD`. `updater/README.md` describes the commands, the order of
//! operations and the exit codes.

#![forbid(unsafe_code)]

pub mod apply;
pub mod compat;
pub mod disk;
pub mod error;
pub mod health;
pub mod lifecycle;
pub mod payload;
pub mod progress;
pub mod reboot;
pub mod release;
pub mod slots;
pub mod state;
pub mod stream;
pub mod target;
pub mod trust;

pub use apply::{apply, Applied, ApplyOptions};
pub use error::UpdateError;
pub use payload::PayloadSource;
pub use target::Target;
