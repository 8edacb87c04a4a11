//! Keel's on-disk contract, shared by the builder (`keel`), the PID 1 (`keel-init`) and the
//! updater. Everything that two of them must agree on lives here and nowhere else:
//!
//! * [`layout`]: partition numbers, labels, type and unique GUIDs (Flatcar-compatible).
//! * [`attrs`]: the ChromeOS/CoreOS priority / tries / successful bits and their transitions.
//! * [`gpt`]: reading and crash-safely writing the partition table.
//! * [`verity`]: the dm-verity hash tree (veritysetup-compatible, format 1, SHA-256).
//! * [`metadata`]: the signed 4 KiB block that describes a USR slot, and the keys that sign it.
//! * [`image_sig`]: the detached signature of a whole disk image (`disk.raw.sig`).
//! * [`slot`]: where that block and the verity area sit in a partition and in a payload file.
//! * [`update_conf`]: `update.conf`, the layered `KEY=VALUE` settings of the update agent and the
//!   reboot manager.
//!
//! `README.md` beside this crate is the five-minute tour of the format.

#![forbid(unsafe_code)]

pub mod attrs;
pub mod gpt;
pub mod gpt_health;
pub mod image_sig;
pub mod initramfs;
pub mod keys;
pub mod layout;
pub mod metadata;
pub mod slot;
pub mod update_conf;
pub mod verity;
