//! A network namespace a test makes and removes, with a tap device in it joined to a guests'
//! [`keel_qemu::Lan`]: services started in the namespace (dnsmasq for DNS SRV) sit on the
//! guests' private segment and nowhere else. The host's own network is never touched.
//!
//! ```ignore
//! let lan = keel_qemu::Lan::start().unwrap();
//! let port = lan.port(2).unwrap();
//! let ns = keel_testkit::netns::NetNs::create();
//! let _tap = ns.join(port.hub, port.local, "192.168.77.2/24");
//! let dnsmasq = ns.command("dnsmasq"); // runs inside the namespace
//! ```

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The tap device's name inside the namespace.
pub const TAP: &str = "tap0";

pub struct NetNs {
    pub name: String,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (iproute2 missing?)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// `ip netns add keel-PID-N` (root only).
    pub fn create() -> NetNs {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "keel-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        run(ns.command("ip").args(["link", "set", "lo", "up"]));
        ns
    }

    /// `PROGRAM` to run inside the namespace (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// A tap device in the namespace with `cidr`, its frames carried to and from a lan hub
    /// (`keel_qemu::LanPort`'s `hub` and `local` ports) as a guest's would be.
    pub fn join(&self, hub: u16, local: u16, cidr: &str) -> TapLink {
        let tap = self
            .open_tap()
            .unwrap_or_else(|e| panic!("tap in {}: {e}", self.name));
        run(self.command("ip").args(["addr", "add", cidr, "dev", TAP]));
        run(self.command("ip").args(["link", "set", TAP, "up"]));
        TapLink::start(tap, hub, local)
    }

    /// Opens `/dev/net/tun` as TAP from a thread that entered the namespace: the device is
    /// made there, and the descriptor keeps working from here.
    fn open_tap(&self) -> io::Result<File> {
        let ns_path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || -> io::Result<File> {
            let ns = File::open(&ns_path)?;
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            let tun = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")?;
            // struct ifreq: the name, then flags (IFF_TAP | IFF_NO_PI).
            let mut ifr = [0u8; 40];
            ifr[..TAP.len()].copy_from_slice(TAP.as_bytes());
            let flags: i16 = (libc::IFF_TAP | libc::IFF_NO_PI) as i16;
            ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
            // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is large enough for.
            let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(tun)
        })
        .join()
        .expect("the namespace thread")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Frames between a tap device and a lan hub, until dropped.
pub struct TapLink {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl TapLink {
    fn start(tap: File, hub: u16, local: u16) -> TapLink {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, local)).expect("the lan port");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let tap = Arc::new(tap);
        let to_hub = {
            let (tap, socket, stop) = (tap.clone(), socket.try_clone().unwrap(), stop.clone());
            std::thread::spawn(move || {
                let mut frame = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let mut fds = [PollFd::new(tap.as_fd(), PollFlags::POLLIN)];
                    if !matches!(poll(&mut fds, PollTimeout::from(200u16)), Ok(n) if n > 0) {
                        continue;
                    }
                    if let Ok(len) = (&*tap).read(&mut frame) {
                        let _ = socket.send_to(&frame[..len], (Ipv4Addr::LOCALHOST, hub));
                    }
                }
            })
        };
        let from_hub = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut frame = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(len) = socket.recv(&mut frame) {
                        let _ = (&*tap).write(&frame[..len]);
                    }
                }
            })
        };
        TapLink {
            stop,
            threads: vec![to_hub, from_hub],
        }
    }
}

impl Drop for TapLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
