//! The YAML definitions a build starts from: a board and the rootfs it names.

pub mod apt_sources;
pub mod board;
pub mod rootfs;
pub mod yaml;

pub use board::Board;
pub use rootfs::Rootfs;
