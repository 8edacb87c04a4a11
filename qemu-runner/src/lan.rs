//! A private Ethernet segment between guests on this machine only: each guest's second NIC is a
//! QEMU `socket` netdev sending its frames as UDP datagrams to a hub on 127.0.0.1, which
//! repeats every frame to every other guest (a hub, not a switch: a handful of guests). Nothing
//! on it reaches the host's network; the test sets the guests' addresses (cloud-config).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One guest's place on a [`Lan`]: what [`crate::BootOptions::lan`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanPort {
    /// The hub's UDP port on 127.0.0.1.
    pub hub: u16,
    /// The guest's own UDP port on 127.0.0.1 (QEMU binds it).
    pub local: u16,
    pub mac: [u8; 6],
}

impl LanPort {
    pub fn mac_string(&self) -> String {
        let m = self.mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

pub struct Lan {
    hub: u16,
    members: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Lan {
    pub fn start() -> io::Result<Lan> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let hub = socket.local_addr()?.port();
        let members: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (members, stop) = (members.clone(), stop.clone());
            std::thread::spawn(move || repeat(&socket, &members, &stop))
        };
        Ok(Lan {
            hub,
            members,
            stop,
            thread: Some(thread),
        })
    }

    /// A port for guest `n` (its MAC is 52:54:00:4b:00:n).
    pub fn port(&self, n: u8) -> io::Result<LanPort> {
        // The port is free now; QEMU binds it a moment later (loopback, nobody else races
        // for ephemeral UDP ports here).
        let local = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        self.members.lock().unwrap().push(local);
        Ok(LanPort {
            hub: self.hub,
            local: local.port(),
            mac: [0x52, 0x54, 0x00, 0x4b, 0x00, n],
        })
    }
}

fn repeat(socket: &UdpSocket, members: &Mutex<Vec<SocketAddr>>, stop: &AtomicBool) {
    let mut frame = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut frame) else {
            continue;
        };
        let to: Vec<SocketAddr> = members.lock().unwrap().clone();
        for addr in to.iter().filter(|a| **a != from) {
            // A guest not started yet (or gone) refuses: its frames are lost, as on a wire.
            let _ = socket.send_to(&frame[..len], addr);
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reaches_every_other_port_and_not_its_sender() {
        let lan = Lan::start().unwrap();
        let guests: Vec<(LanPort, UdpSocket)> = (1..=3)
            .map(|n| {
                let p = lan.port(n).unwrap();
                let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, p.local)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                (p, s)
            })
            .collect();
        assert_eq!(guests[1].0.mac_string(), "52:54:00:4b:00:02");
        guests[0]
            .1
            .send_to(b"frame one", (Ipv4Addr::LOCALHOST, guests[0].0.hub))
            .unwrap();
        let mut buf = [0u8; 64];
        for (_, s) in &guests[1..] {
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"frame one");
        }
        guests[0]
            .1
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            guests[0].1.recv(&mut buf).is_err(),
            "the sender got its own frame"
        );
    }
}
