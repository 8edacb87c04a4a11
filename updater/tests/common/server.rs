//! The real `keel-update-server` binary, started on 127.0.0.1 with a throwaway SQLite database,
//! for the agent's tests on the host and in QEMU guests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use serde_json::Value;

use super::{key, other_key, run};

/// The machine id the host-side agent tests give their machine.
pub const MACHINE: &str = "68cf162f8fc8467ca7d8337464c863d1";
const TOKEN: &str = "agent-test-token";

/// The server binary: `KEEL_UPDATE_SERVER_BIN`, else beside this test's build
/// (`target/release/keel-update-server`, built by `cargo test --workspace` or
/// `cargo build --release -p keel-update-server`).
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_UPDATE_SERVER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("keel-update-server");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p keel-update-server (or set KEEL_UPDATE_SERVER_BIN)",
        bin.display()
    );
    bin
}

pub struct Server {
    pub dir: tempfile::TempDir,
    child: Child,
    /// Where the test reaches it (`http://127.0.0.1:PORT`).
    pub base: String,
}

impl Server {
    /// Started with `public_url` (where payload URLs point) when given; trusts `key()` and
    /// `other_key()` for publishing.
    pub fn start(public_url: Option<&str>) -> Server {
        Self::start_with(public_url, "")
    }

    /// With `extra` YAML lines in its configuration.
    pub fn start_with(public_url: Option<&str>, extra: &str) -> Server {
        let keys = [
            ("release.pem", key().public_pem()),
            ("foreign.pem", other_key().public_pem()),
        ];
        Self::start_trusting(&keys, "127.0.0.1:0", public_url, extra)
    }

    /// For a QEMU guest on the user network: on a free port of 127.0.0.1, which the guest
    /// reaches as 10.0.2.2 (payload URLs say so); trusting `keys` (file name, PEM).
    pub fn start_for_guest(keys: &[(&str, String)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_trusting(
            keys,
            &format!("127.0.0.1:{port}"),
            Some(&format!("http://10.0.2.2:{port}")),
            "",
        )
    }

    fn start_trusting(
        keys: &[(&str, String)],
        listen: &str,
        public_url: Option<&str>,
        extra: &str,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("keys");
        std::fs::create_dir_all(&key_dir).unwrap();
        for (name, pem) in keys {
            std::fs::write(key_dir.join(name), pem).unwrap();
        }
        let mut conf = format!(
            "listen: {listen}\ndatabase: {0}/server.sqlite\npayloads: {0}/payloads\n\
             trusted_keys: {0}/keys\napi_token: {TOKEN}\n",
            dir.path().display()
        );
        if let Some(u) = public_url {
            conf.push_str(&format!("public_url: {u}\n"));
        }
        conf.push_str(extra);
        std::fs::write(dir.path().join("server.yaml"), conf).unwrap();
        let (child, base) = keel_testkit::update_server::spawn_update_server(
            &server_bin(),
            &dir.path().join("server.yaml"),
        );
        Server { dir, child, base }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("server.yaml")
    }

    /// `keel-update-server ARGS` against this server's configuration; panics unless it exits 0.
    pub fn cli(&self, args: &[&str]) -> String {
        let (code, out, err) = run(Command::new(server_bin())
            .arg("--config")
            .arg(self.config())
            .args(args));
        assert_eq!(code, 0, "keel-update-server {args:?}: {out}{err}");
        out
    }

    /// `keel-update-server publish` of `payload` on `channel` (`--url` when given).
    pub fn publish(&self, payload: &Path, channel: &str, url: Option<&str>) {
        let payload = payload.to_str().unwrap();
        let mut args = vec!["publish", payload, "--channel", channel];
        if let Some(u) = url {
            args.extend(["--url", u]);
        }
        self.cli(&args);
    }

    pub fn api(&self, path: &str) -> Value {
        let client = keel_http::Client::with_proxies(
            keel_http::Timeouts::each(std::time::Duration::from_secs(10)),
            keel_http::ProxyEnv::default(),
        );
        let auth = format!("Bearer {TOKEN}");
        let body = client
            .get(
                &format!("{}{path}", self.base),
                None,
                &[("authorization", &auth)],
            )
            .unwrap()
            .success()
            .unwrap()
            .read_to_vec(1 << 20)
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// [`MACHINE`]'s events as `type/result[:errorcode]`, oldest first.
    pub fn events(&self) -> Vec<String> {
        self.events_of(MACHINE)
    }

    /// `machine`'s events as `type/result[:errorcode]`, oldest first.
    pub fn events_of(&self, machine: &str) -> Vec<String> {
        let v = self.api(&format!("/api/instances/{machine}"));
        let mut out: Vec<(i64, String)> = v[0]["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events for {machine}: {v}"))
            .iter()
            .map(|e| {
                let s = format!("{}/{}", e["event_type"], e["event_result"]);
                let s = match e["error_code"].as_i64() {
                    Some(c) => format!("{s}:{c}"),
                    None => s,
                };
                (e["at"].as_i64().unwrap_or(0), s)
            })
            .collect();
        out.sort_by_key(|(at, _)| *at);
        out.into_iter().map(|(_, s)| s).collect()
    }

    pub fn instance(&self) -> Value {
        self.instance_of(MACHINE)
    }

    pub fn instance_of(&self, machine: &str) -> Value {
        self.api(&format!("/api/instances/{machine}"))[0]["instance"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
