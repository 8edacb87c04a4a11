//! Test support: a server on a loopback port with its own database, payload directory and
//! trusted key; signed test payloads; a small HTTP client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_format::metadata::{encode, KernelInfo, SlotMetadata, VerityInfo};
use keel_signing::Key;
use keel_update_server::config::Config;
use keel_update_server::server::{self, RunningServer};
use keel_update_server::store::sqlite::SqliteStore;
use keel_update_server::store::Store;

pub const MACHINE: &str = "68cf162f8fc8467ca7d8337464c863d1";

pub fn trusted_key() -> Key {
    Key::from_seed([7; 32])
}

pub fn foreign_key() -> Key {
    Key::from_seed([9; 32])
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub server: Option<RunningServer>,
    pub store: Arc<dyn Store>,
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("release.pem"), trusted_key().public_pem()).unwrap();
    let file = dir.join("server.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: 127.0.0.1:0\ndatabase: db/server.sqlite\npayloads: payloads\n\
             trusted_keys: keys\n{extra}"
        ),
    )
    .unwrap();
    file
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with("")
    }

    /// A server whose configuration file has `extra` YAML lines added.
    pub fn start_with(extra: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(dir.path(), extra);
        let config = Config::load(&file).unwrap();
        let store = server::open_store(&config).unwrap();
        let server = server::start_with(&config, store.clone()).unwrap();
        TestServer {
            dir,
            config,
            server: Some(server),
            store,
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("server.yaml")
    }

    pub fn url(&self, path: &str) -> String {
        let addr = self.server.as_ref().expect("running").addr;
        format!("http://{addr}{path}")
    }

    /// Stop the server and close the database.
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }

    /// Start again on the same database (a new store, as a restarted process has).
    pub fn restart(&mut self) {
        self.stop();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(
                self.config.database.as_ref().unwrap(),
                server::DB_BUSY_TIMEOUT,
            )
            .unwrap(),
        );
        self.store = store.clone();
        self.server = Some(server::start_with(&self.config, store).unwrap());
    }

    pub fn post(&self, body: &[u8]) -> (u16, String) {
        post(&self.url("/v1/update/"), body)
    }

    /// Publish a payload of `version` signed by the trusted key on `channel`.
    pub fn publish(&self, version: &str, channel: &str) -> PathBuf {
        let path = signed_payload(self.dir.path(), version, &trusted_key(), 3);
        let keys = keel_format::keys::require_keys(&self.config.trusted_keys).unwrap();
        keel_update_server::publish::publish(
            &*self.store,
            &keys,
            &self.config.payloads,
            &path,
            channel,
            None,
            1_700_000_000,
        )
        .unwrap();
        path
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn post(url: &str, body: &[u8]) -> (u16, String) {
    let mut r = agent()
        .post(url)
        .content_type("text/xml")
        .send(body)
        .unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

pub fn get(url: &str, range: Option<&str>) -> (u16, Vec<u8>, Option<String>) {
    let mut req = agent().get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let mut r = req.call().unwrap();
    let cr = r
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    (status, body, cr)
}

/// A well-formed signed payload: metadata block + a body of `data_blocks` 4 KiB data blocks and
/// its (fake but correctly sized) verity area, the body's SHA-256 signed.
pub fn signed_payload(dir: &Path, version: &str, key: &Key, data_blocks: u64) -> PathBuf {
    let data_size = data_blocks * 4096;
    let hash_size = keel_format::verity::hash_area_size(data_blocks);
    let mut body = Vec::with_capacity((data_size + hash_size) as usize);
    let mut x: u32 = version.bytes().map(u32::from).sum::<u32>() | 1;
    for _ in 0..data_size + hash_size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        body.push(x as u8);
    }
    let meta = SlotMetadata {
        version: version.into(),
        channel: "stable".into(),
        arch: "x86_64".into(),
        board: "qemu-x86_64".into(),
        build_time: 1_700_000_000,
        filesystem: "erofs".into(),
        kernel: KernelInfo {
            release: "6.1.0".into(),
            build: "#1".into(),
            image: "lib/modules/6.1.0/vmlinuz".into(),
            initramfs: "lib/keel/initramfs.img".into(),
        },
        verity: VerityInfo {
            data_size,
            hash_offset: data_size,
            hash_size,
            data_block_size: 4096,
            hash_block_size: 4096,
            algorithm: "sha256".into(),
            salt: "00".repeat(32),
            root_hash: "11".repeat(32),
            uuid: "00000000-0000-0000-0000-000000000000".into(),
        },
        body_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &body)),
        key_id: key.key_id(),
    };
    let mut file = encode(&meta, |m| key.sign(m)).unwrap();
    file.extend_from_slice(&body);
    let path = dir.join(format!("usr-{version}-{}.img", &key.key_id()[..6]));
    std::fs::write(&path, file).unwrap();
    path
}

/// An update_engine-style request for the Keel app.
pub fn request(version: &str, track: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="keel-update-0.1.0" updaterversion="keel-update-0.1.0" installsource="scheduler" ismachine="1">
<os version="Keel" platform="Keel" sp="{version}_x86_64"></os>
<app appid="{{{app}}}" version="{version}" track="{track}" machineid="{MACHINE}" machinealias="web-1" board="amd64-usr">{body}</app>
</request>"#,
        app = keel_omaha::KEEL_APP_ID
    )
}

pub const CHECK: &str = r#"<ping active="1"></ping><updatecheck></updatecheck>"#;

pub fn event(t: u32, r: u32, extra: &str) -> String {
    format!(r#"<event eventtype="{t}" eventresult="{r}" {extra}></event>"#)
}
