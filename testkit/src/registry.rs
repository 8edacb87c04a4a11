//! A real container registry on the host's loopback (Debian's `docker-registry`, the CNCF
//! distribution server) holding a `busybox` image made here from Debian's `busybox-static` with
//! `umoci` and pushed with `skopeo`: what a guest's `docker pull busybox` reaches through a
//! registry mirror, with no network beyond this machine.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::files::stdout_of;

/// The repository the image is pushed to: what Docker asks a mirror for on `docker pull busybox`.
pub const BUSYBOX_REPOSITORY: &str = "library/busybox";

/// A running `docker-registry`; killed (and its storage removed) when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) {
    stdout_of(cmd).unwrap_or_else(|e| panic!("{e}"));
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers `GET /v2/`.
    pub fn start() -> Registry {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(
            bin.exists(),
            "{} missing: install Debian's docker-registry (ci/install-deps.sh)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = crate::etcd::free_port();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = crate::spawn_tied(
            Command::new(bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut r = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !r.answers() {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", r.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry on 127.0.0.1:{port} did not answer in 30 s:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
        if std::io::Write::write_all(&mut s, req.as_bytes()).is_err() {
            return false;
        }
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply.starts_with("HTTP/1.") && reply.contains(" 200 ")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Builds the busybox image and pushes it as `library/busybox:latest`; returns the image's
    /// id as Docker shows it (`docker image inspect -f {{.Id}}`: the digest of its config).
    pub fn push_busybox(&self) -> String {
        let oci = busybox_oci_layout(self.dir.path());
        let dest = format!(
            "docker://127.0.0.1:{}/{BUSYBOX_REPOSITORY}:latest",
            self.port
        );
        run(Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--format",
                "v2s2",
            ])
            .arg(format!("oci:{}:latest", oci.display()))
            .arg(&dest));
        let manifest = stdout_of(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(&dest),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        config_digest(&manifest)
            .unwrap_or_else(|| panic!("no config digest in the pushed manifest:\n{manifest}"))
    }
}

/// The `config.digest` of an image manifest (the image's id).
fn config_digest(manifest: &str) -> Option<String> {
    let after = &manifest[manifest.find("\"config\"")?..];
    let at = after.find("sha256:")?;
    let digest: String = after[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
        .collect();
    (digest.len() == 71).then_some(digest)
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI image layout at `work/busybox-oci` (tag `latest`): Debian's static busybox as
/// `/bin/busybox`, every applet linked beside it, `sh` as the command.
pub fn busybox_oci_layout(work: &Path) -> PathBuf {
    let busybox = crate::debian::package("busybox-static").join("bin/busybox");
    assert!(busybox.is_file(), "{} missing", busybox.display());
    let layout = work.join("busybox-oci");
    let bundle = work.join("busybox-bundle");
    let _ = fs::remove_dir_all(&layout);
    let _ = fs::remove_dir_all(&bundle);
    let image = format!("{}:latest", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(&busybox, bin.join("busybox")).unwrap();
    let applets = stdout_of(Command::new(&busybox).arg("--list")).unwrap_or_else(|e| panic!("{e}"));
    for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/bin",
    ]));
    layout
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(port: u16, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn busybox_is_served_as_docker_asks_a_mirror_for_it() {
        let r = Registry::start();
        assert!(get(r.port, "/v2/library/busybox/tags/list").contains(" 404 "));
        let id = r.push_busybox();
        assert!(id.starts_with("sha256:"), "{id}");
        let tags = get(r.port, "/v2/library/busybox/tags/list");
        assert!(tags.contains("\"latest\""), "{tags}");
        let config = get(r.port, &format!("/v2/library/busybox/blobs/{id}"));
        assert!(
            config.contains(" 200 ") && config.contains("\"PATH=/bin\""),
            "{config}"
        );
    }
}
