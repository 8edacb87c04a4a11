//! Host-side image builder library; [`cli`] holds its commands' arguments and `run`s, which
//! the thin `keel` binary (`cli/` in the repository) dispatches to.
//!
//! One module, one job: [`definition`] reads the YAML inputs, [`rootfs_cache`] runs mmdebstrap,
//! [`usr_tree`] shapes /usr, [`initramfs`] packs keel-init and modules, [`mkfs`] makes the
//! filesystems, [`uki`] the boot executable, [`esp`] the EFI system partition around it,
//! [`grub_bios`] legacy BIOS boot, [`usr_slot`] the verity-protected signed slot, [`disk`] the
//! GPT image, [`manifest`] records inputs and outputs, and [`build`] runs them in order. [`inspect`] and [`verify`] read
//! images back.

#![forbid(unsafe_code)]

pub mod build;
pub mod bzimage;
pub mod cli;
pub mod cpio;
pub mod definition;
pub mod digest;
pub mod disk;
pub mod error;
pub mod esp;
pub mod extents;
pub mod fleet;
pub mod grub_bios;
pub mod initramfs;
pub mod inspect;
pub mod installer;
pub mod iso;
pub mod kernel;
pub mod keys;
pub mod manifest;
pub mod mkfs;
pub mod modules;
pub mod ova;
pub mod partition_images;
pub mod pxe;
pub mod qcow2;
pub mod reboot_manager;
pub mod reuse;
pub mod rootfs_cache;
pub mod scratch;
pub mod sparse;
pub mod static_bin;
pub mod tool;
pub mod uki;
pub mod units;
pub mod updater;
pub mod usr_slot;
pub mod usr_tree;
pub mod verify;
pub mod vmdk;

pub use error::{Error, Result};
