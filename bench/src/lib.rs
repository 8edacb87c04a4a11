//! Shared helpers of the benchmarks: timing, running the peer tools, describing the machine,
//! hashing outputs. Each benchmark is a binary in `src/bin/`.

pub mod command;
pub mod direct_boot;
pub mod files;
pub mod machine;
pub mod measure;
pub mod moto;
pub mod rootfs;
pub mod seed;
pub mod slot_image;
pub mod uki;
