//! What the upload tests share: a real `moto_server` per test ([`Moto`]), a fault-injecting HTTP
//! proxy in front of it ([`Proxy`]), sparse test images ([`PatternImage`]), and reading a
//! snapshot back through the EBS direct APIs ([`read_back`]).
#![allow(dead_code)]

pub mod proxy;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_ami::image::BLOCK_SIZE;
use keel_ami::{Clients, Target};

pub use proxy::{Fault, Proxy};

pub const REGION: &str = "us-east-1";

/// A `moto_server` on a free loopback port, stopped on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// `env`: extra environment for the server (e.g. INITIAL_NO_AUTH_ACTION_COUNT).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let port = free_port();
        let child = keel_testkit::spawn_tied(
            Command::new(moto_server())
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .stdout(File::create(&log).unwrap())
                .stderr(File::create(&log).unwrap()),
        )
        .expect("start moto_server (pip install 'moto[server]', see ci/install-deps.sh)");
        let moto = Moto {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}:\n{}",
                moto.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server() -> PathBuf {
    std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| "moto_server".into())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fake credentials for moto, set on every child process and for in-test clients.
pub const FAKE_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "AKIAKEELTESTING00000"),
    ("AWS_SECRET_ACCESS_KEY", "keel-test-secret"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// `keel-upload-ami` with fake credentials and no profile files.
pub fn upload_cmd(endpoint: &str, image: &Path, name: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel-upload-ami"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(FAKE_ENV.iter().copied())
        .args(["--image"])
        .arg(image)
        .args([
            "--name",
            name,
            "--region",
            REGION,
            "--endpoint-url",
            endpoint,
        ])
        .stdin(Stdio::null());
    c
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run keel-upload-ami");
    eprintln!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `--json` outcome of a successful run.
pub fn outcome(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "upload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json output")
}

/// Clients of the test itself, talking to moto directly.
pub fn clients(moto: &Moto) -> (tokio::runtime::Runtime, Clients) {
    for (k, v) in FAKE_ENV {
        std::env::set_var(k, v);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = rt.block_on(keel_ami::aws::sdk_config(&Target {
        region: Some(REGION.into()),
        endpoint_url: Some(moto.url()),
    }));
    (rt, Clients::from_config(&config))
}

/// Every block of the snapshot, read back with ListSnapshotBlocks and GetSnapshotBlock.
///
/// moto 5.2.1 answers ListSnapshotBlocks with each BlockIndex as a JSON string ("7"), where AWS's
/// API model (and so the SDK) has an integer, and the SDK rightly refuses the answer. The listing
/// is therefore fetched with a plain HTTP request and read leniently; every block's bytes still
/// come through the SDK's GetSnapshotBlock.
pub fn read_back(
    rt: &tokio::runtime::Runtime,
    c: &Clients,
    moto: &Moto,
    snapshot: &str,
) -> BTreeMap<u64, Vec<u8>> {
    let listing = list_snapshot_blocks_raw(moto, snapshot);
    rt.block_on(async {
        let mut blocks = BTreeMap::new();
        for (index, token) in listing {
            let data = c
                .ebs
                .get_snapshot_block()
                .snapshot_id(snapshot)
                .block_index(index as i32)
                .block_token(token)
                .send()
                .await
                .expect("GetSnapshotBlock")
                .block_data
                .collect()
                .await
                .expect("block body")
                .into_bytes()
                .to_vec();
            blocks.insert(index, data);
        }
        blocks
    })
}

/// `GET /snapshots/ID/blocks` straight to moto: (index, token) of every block.
fn list_snapshot_blocks_raw(moto: &Moto, snapshot: &str) -> Vec<(u64, String)> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", moto.port)).unwrap();
    // moto picks the service from the credential scope; it checks no signature.
    write!(
        s,
        "GET /snapshots/{snapshot}/blocks HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={}/20260101/{REGION}/ebs/aws4_request, \
         SignedHeaders=host, Signature=0\r\nConnection: close\r\n\r\n",
        moto.port, FAKE_ENV[0].1
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    let v: serde_json::Value = serde_json::from_str(body).expect("ListSnapshotBlocks JSON");
    assert!(v.get("NextToken").is_none(), "paged listing: {body}");
    v["Blocks"]
        .as_array()
        .expect("Blocks")
        .iter()
        .map(|b| {
            let index = match &b["BlockIndex"] {
                serde_json::Value::String(s) => s.parse().expect("BlockIndex"),
                n => n.as_u64().expect("BlockIndex"),
            };
            (
                index,
                b["BlockToken"].as_str().expect("BlockToken").to_owned(),
            )
        })
        .collect()
}

/// Compares the snapshot's blocks with the image byte for byte: every present block equals the
/// image's (the tail past the image's end zero), every absent block is zero in the image.
/// Returns the number of blocks present.
pub fn assert_snapshot_matches(blocks: &BTreeMap<u64, Vec<u8>>, image: &Path) -> usize {
    let f = File::open(image).unwrap();
    let len = f.metadata().unwrap().len();
    let count = len.div_ceil(BLOCK_SIZE as u64);
    if let Some((&last, _)) = blocks.iter().next_back() {
        assert!(
            last < count,
            "snapshot block {last} lies past the image's {count} blocks"
        );
    }
    let mut buf = vec![0u8; BLOCK_SIZE];
    for i in 0..count {
        buf.fill(0);
        let off = i * BLOCK_SIZE as u64;
        let want = (len - off).min(BLOCK_SIZE as u64) as usize;
        f.read_exact_at(&mut buf[..want], off).unwrap();
        match blocks.get(&i) {
            Some(data) => {
                assert_eq!(data.len(), BLOCK_SIZE, "block {i}: length");
                if data != &buf {
                    let at = data.iter().zip(&buf).position(|(a, b)| a != b).unwrap();
                    panic!(
                        "block {i} differs from the image at byte {}",
                        off + at as u64
                    );
                }
            }
            None => assert!(
                buf.iter().all(|&b| b == 0),
                "block {i} is absent from the snapshot but not zero in the image"
            ),
        }
    }
    blocks.len()
}

/// Images owned by this account (moto also lists its built-in public AMIs; those are not ours).
pub fn own_images(rt: &tokio::runtime::Runtime, c: &Clients) -> Vec<aws_sdk_ec2::types::Image> {
    rt.block_on(c.ec2.describe_images().owners("self").send())
        .expect("DescribeImages")
        .images()
        .to_vec()
}

/// Snapshots made for the AMI `name` (keel-upload-ami describes them as "Keel image NAME"; moto
/// also lists the snapshots of its built-in AMIs, whatever the owner asked for).
pub fn snapshots_for(
    rt: &tokio::runtime::Runtime,
    c: &Clients,
    name: &str,
) -> Vec<aws_sdk_ec2::types::Snapshot> {
    let all = rt
        .block_on(c.ec2.describe_snapshots().owner_ids("self").send())
        .expect("DescribeSnapshots");
    assert!(!all.snapshots().is_empty(), "moto lists no snapshot at all");
    all.snapshots()
        .iter()
        .filter(|s| s.description() == Some(format!("Keel image {name}").as_str()))
        .cloned()
        .collect()
}

/// A sparse image of `len` bytes with a known pattern (block index and offset mixed) in the
/// listed blocks, the rest holes. Blocks may be partial at the end.
pub struct PatternImage {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl PatternImage {
    pub fn new(len: u64, blocks: &[u64]) -> PatternImage {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pattern.raw");
        let f = File::create(&path).unwrap();
        f.set_len(len).unwrap();
        for &i in blocks {
            let off = i * BLOCK_SIZE as u64;
            let n = (len - off).min(BLOCK_SIZE as u64) as usize;
            let data: Vec<u8> = (0..n)
                .map(|j| ((j as u64 * 31 + i * 7 + (j as u64 >> 9)) % 251) as u8 | 1)
                .collect();
            f.write_all_at(&data, off).unwrap();
        }
        PatternImage { path, _dir: dir }
    }
}

pub fn read_file(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}
