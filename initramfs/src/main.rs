//! keel-init: the PID 1 of the Keel initramfs. See README.md beside this crate for the steps,
//! the command line and the failure behaviour.

#![forbid(unsafe_code)]

mod boot;
mod cmdline;
mod coldplug;
mod copytree;
mod disk;
mod early;
mod grow;
mod handoff;
mod kexec;
mod live;
mod log;
mod modules;
mod mounts;
mod pid1;
mod plan;
mod rootfs;
mod settings;
mod trust;
mod usr;

fn main() {
    if std::process::id() != 1 {
        eprintln!("keel-init runs as PID 1 in the Keel initramfs; it mounts, writes partition tables and reboots, so it refuses to run anywhere else");
        std::process::exit(2);
    }
    pid1::install_panic_hook();
    pid1::start_signal_thread();
    let e = boot::run();
    error!("{e:#}");
    pid1::fatal_end()
}
