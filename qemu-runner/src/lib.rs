//! QEMU runner: boots Keel images in qemu-system-x86_64, captures the serial
//! console and waits for text on it. Every boot, update and rollback test goes
//! through [`Session`]; the `keel boot` command is [`run`] over [`BootArgs`].

mod accel;
mod accel_cache;
mod accel_probe;
mod cli;
mod console;
mod disk;
mod error;
mod firmware;
mod host_io;
mod kvm_watch;
mod lan;
mod options;
mod qemu_command;
mod qmp;
mod reset_watch;
mod scripted;
mod session;
mod tool;

pub use accel::parse_accel;
pub use accel_cache::{remember_verdict as remember_accel_verdict, CACHE_ENV as ACCEL_CACHE_ENV};
pub use cli::{boot_command, pxe_network, run, AccelArg, BootArgs, FirmwareArg, PXE_SCRIPT};
pub use disk::{convert_to_raw, detect_format, DiskFormat};
pub use error::{BootError, SessionError, StartError, ToolError};
pub use firmware::{OVMF_CODE, OVMF_VARS_TEMPLATE};
pub use lan::{Lan, LanPort};
pub use options::{
    default_log_dir, default_smp, Accel, BootOptions, Firmware, NetOptions, ResolvedAccel,
    ACCEL_ENV,
};
pub use scripted::{write_script_disk, ScriptedError, ScriptedGuest};
pub use session::{ConsoleInput, Session, TAIL_LINES};
