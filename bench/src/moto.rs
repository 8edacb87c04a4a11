//! A `moto_server` on a free loopback port for the upload benchmark, stopped on drop.
//!
//! moto's StartSnapshot reports a BlockSize of 512 bytes; AWS reports 524288 (the EBS direct APIs'
//! fixed 512 KiB block). Tools that size their uploads by that answer (coldsnap does) would send
//! 1024 times as many requests as against AWS, so the server is started through a two-line
//! wrapper that makes moto answer what AWS answers. Nothing else in moto is changed.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const WRAPPER: &str = r#"
import sys
from moto.ebs import models
_init = models.EBSSnapshot.__init__
def _aws_block_size(self, *a, **k):
    _init(self, *a, **k)
    self.block_size = 524288
models.EBSSnapshot.__init__ = _aws_block_size
from moto.server import main
sys.exit(main())
"#;

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Result<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = keel_blockdev::tied::spawn(
            Command::new("python3")
                .args(["-c", WRAPPER, "-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .context("starting moto_server through python3 (pip install 'moto[server]')")?;
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("moto_server did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
