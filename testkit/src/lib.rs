//! Test support shared by Keel's crates (a dev-dependency; std and tempfile only).
//!
//! - Built images: [`build_image`] / [`default_image`] run `keel build` once per fingerprint and
//!   cache the result under `target/test-images` behind a file lock; `KEEL_BIN`, `KEEL_INIT`,
//!   `KEEL_UPDATE`, `KEEL_INSTALL`, `KEEL_CLOUDINIT`, `KEEL_REBOOT_MANAGER` and `KEEL_FLEET`
//!   select the binaries ([`image`]).
//! - The end-to-end driver baked into test images ([`driver_files`], [`extra_file_args`]).
//! - Files and commands: [`sparse_copy`], [`extract`], [`flip_byte`], [`run`], [`stdout_of`].
//! - Guests without an image: Debian packages and the cloud kernel ([`debian`]), and what an
//!   initramfs is made of ([`initramfs`]).
//! - Services: a throwaway PostgreSQL cluster on a unix socket ([`postgres`]).
//! - The suite's tiers, CI and full ([`tier`]).
//! - A seeded generator and byte mutator for property tests and the fuzz driver ([`rng`]).

mod child;
pub mod conformance;
pub mod debian;
pub mod discovery;
mod driver;
pub mod etcd;
pub mod etcd_guests;
mod files;
pub mod image;
pub mod initramfs;
pub mod netns;
pub mod postgres;
pub mod reboot_sim;
pub mod registry;
pub mod rng;
pub mod tier;
pub mod update_server;

pub use child::{spawn_tied, KillOnDrop};
pub use driver::*;
pub use files::*;
pub use image::*;
