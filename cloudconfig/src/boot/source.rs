//! The six places a user-data comes from, in the order they are tried (first found wins):
//!
//! 1. `keel.config.url=URL` on the kernel command line (HTTP GET; network)
//! 2. QEMU fw_cfg entry [`FW_CFG_NAME`] (`-fw_cfg name=opt/org.keel/user-data,file=F`)
//! 3. config drive: a filesystem labelled `config-2`, file `openstack/latest/user_data`
//! 4. NoCloud: a filesystem labelled `cidata` (or `CIDATA`), file `user-data`
//! 5. EC2 IMDSv2 (network): tried on EC2 (DMI vendor "Amazon EC2") or when
//!    `keel.config.imds=URL` names an endpoint: `PUT /latest/api/token`, then
//!    `GET /latest/user-data` with the token; a 404 there means "no user-data"
//! 6. the OEM partition: `/oem/cloud-config.yml` (written by `keel install --cloud-config`)

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::http::{self, Client, FetchError};
use super::kargs::KernelArgs;

/// The fw_cfg name Keel reads (QEMU wants user entries under `opt/`, reverse-DNS named).
pub const FW_CFG_NAME: &str = "opt/org.keel/user-data";
/// Where the kernel's qemu_fw_cfg module shows entries by name.
pub const FW_CFG_DIR: &str = "/sys/firmware/qemu_fw_cfg/by_name";
/// EC2's instance metadata service.
pub const IMDS_DEFAULT: &str = "http://169.254.169.254";
/// The OEM partition's cloud-config, relative to the root.
pub const OEM_FILE: &str = "oem/cloud-config.yml";
pub const CONFIG_DRIVE_LABEL: &str = "config-2";
pub const CONFIG_DRIVE_FILE: &str = "openstack/latest/user_data";
pub const NOCLOUD_LABELS: [&str; 2] = ["cidata", "CIDATA"];
pub const NOCLOUD_FILE: &str = "user-data";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Url(String),
    FwCfg,
    ConfigDrive,
    NoCloud,
    Imds(String),
    Oem,
}

impl Source {
    /// Short name, as the console and the docs say it.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Url(_) => "url",
            Source::FwCfg => "fw_cfg",
            Source::ConfigDrive => "config-drive",
            Source::NoCloud => "nocloud",
            Source::Imds(_) => "ec2-imds",
            Source::Oem => "oem",
        }
    }

    /// Needs a configured network (the network stage reads it).
    pub fn needs_network(&self) -> bool {
        matches!(self, Source::Url(_) | Source::Imds(_))
    }
}

/// The sources that apply to this machine, in order. IMDS only on EC2 or when named.
pub fn candidates(kargs: &KernelArgs, on_ec2: bool) -> Vec<Source> {
    let mut v = Vec::new();
    if let Some(url) = &kargs.url {
        v.push(Source::Url(url.clone()));
    }
    v.extend([Source::FwCfg, Source::ConfigDrive, Source::NoCloud]);
    match &kargs.imds {
        Some(ep) => v.push(Source::Imds(ep.clone())),
        None if on_ec2 => v.push(Source::Imds(IMDS_DEFAULT.to_string())),
        None => {}
    }
    v.push(Source::Oem);
    v
}

/// Is this an EC2 instance? (DMI says so; Nitro and Xen instances both set it.)
pub fn on_ec2(dmi_dir: &Path) -> bool {
    ["sys_vendor", "bios_vendor", "product_version"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dmi_dir.join(f)).ok())
        .any(|v| v.contains("Amazon EC2") || v.contains("amazon"))
}

/// A user-data found: where (for messages, `NAME:...` as the console shows it) and its bytes,
/// and the instance's attributes when the source has them ([`EC2_ATTRIBUTES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub source: Source,
    pub file: String,
    pub bytes: Vec<u8>,
    pub attributes: Vec<(String, String)>,
}

/// Where the instance's attributes go, in Flatcar's (coreos-metadata's) file and names, so a
/// unit written for Flatcar reads them with `EnvironmentFile=/run/metadata/flatcar`;
/// etcd-member fills `$private_ipv4` and `$public_ipv4` from them.
pub const ATTRIBUTES_FILE: &str = "/run/metadata/flatcar";

/// EC2 metadata paths and the variables coreos-metadata named them.
pub const EC2_ATTRIBUTES: [(&str, &str); 4] = [
    ("COREOS_EC2_IPV4_LOCAL", "meta-data/local-ipv4"),
    ("COREOS_EC2_IPV4_PUBLIC", "meta-data/public-ipv4"),
    ("COREOS_EC2_HOSTNAME", "meta-data/hostname"),
    ("COREOS_EC2_INSTANCE_ID", "meta-data/instance-id"),
];

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Media(String),
}

/// Filesystems found by label: the one place that mounts things (see [`super::media`]).
pub trait Media {
    /// The bytes of `file` on the first filesystem labelled one of `labels`, and a name for
    /// it (`/dev/vdc:user-data`); `None` when no such filesystem or no such file.
    fn read_labelled(
        &self,
        labels: &[&str],
        file: &str,
    ) -> Result<Option<(String, Vec<u8>)>, SourceError>;
}

/// Where a source reads from on this machine (paths replaceable in tests).
pub struct Reader<'a> {
    /// The root the OEM file is under (`/`).
    pub root: PathBuf,
    pub fw_cfg_dir: PathBuf,
    pub media: &'a dyn Media,
    pub http: Client,
    /// Network sources: how often a connection failure is retried, and the pause between.
    pub attempts: u32,
    pub pause: Duration,
}

impl Reader<'_> {
    /// Read `source`: `Ok(None)` when it holds no user-data.
    pub fn read(&self, source: &Source) -> Result<Option<Found>, SourceError> {
        let found = |file: String, bytes: Vec<u8>| Found {
            source: source.clone(),
            file,
            bytes,
            attributes: Vec::new(),
        };
        Ok(match source {
            Source::Url(url) => {
                let r = self.retry(|| self.http.get(url, &[]))?;
                Some(found(url.clone(), http::ok_body("GET", url, r)?))
            }
            Source::FwCfg => {
                let path = self.fw_cfg_dir.join(FW_CFG_NAME).join("raw");
                read_optional(&path)?.map(|b| found(format!("fw_cfg:{FW_CFG_NAME}"), b))
            }
            Source::ConfigDrive => self
                .media
                .read_labelled(&[CONFIG_DRIVE_LABEL], CONFIG_DRIVE_FILE)?
                .map(|(f, b)| found(f, b)),
            Source::NoCloud => self
                .media
                .read_labelled(&NOCLOUD_LABELS, NOCLOUD_FILE)?
                .map(|(f, b)| found(f, b)),
            Source::Imds(ep) => self.imds(source, ep)?,
            Source::Oem => {
                let path = self.root.join(OEM_FILE);
                read_optional(&path)?.map(|b| found(format!("/{OEM_FILE}"), b))
            }
        })
    }

    /// IMDSv2: a session token, then the user-data (404: none) and the instance's attributes.
    fn imds(&self, source: &Source, ep: &str) -> Result<Option<Found>, SourceError> {
        let token_url = format!("{ep}/latest/api/token");
        let r = self.retry(|| {
            self.http.put(
                &token_url,
                &[("X-aws-ec2-metadata-token-ttl-seconds", "300")],
            )
        })?;
        let token = http::ok_body("PUT", &token_url, r)?;
        let token = String::from_utf8_lossy(&token).trim().to_string();
        let url = format!("{ep}/latest/user-data");
        let r = self.retry(|| {
            self.http
                .get(&url, &[("X-aws-ec2-metadata-token", token.as_str())])
        })?;
        if r.status == 404 {
            return Ok(None);
        }
        let user_data = http::ok_body("GET", &url, r)?;
        // An attribute the instance lacks (public-ipv4 without a public address) is a 404 and
        // left out; one that cannot be read is left out too: the user-data still applies.
        let mut attributes = Vec::new();
        for (name, path) in EC2_ATTRIBUTES {
            let at = format!("{ep}/latest/{path}");
            if let Ok(r) = self
                .http
                .get(&at, &[("X-aws-ec2-metadata-token", token.as_str())])
            {
                if r.status == 200 {
                    let value = String::from_utf8_lossy(&r.body).trim().to_string();
                    if !value.is_empty() && !value.contains('\n') {
                        attributes.push((name.to_string(), value));
                    }
                }
            }
        }
        Ok(Some(Found {
            source: source.clone(),
            file: url,
            bytes: user_data,
            attributes,
        }))
    }

    /// Retry connection failures (the network may be a moment behind "online").
    fn retry(
        &self,
        f: impl Fn() -> Result<http::Response, FetchError>,
    ) -> Result<http::Response, FetchError> {
        let mut attempt = 1;
        loop {
            match f() {
                Err(FetchError::Transport { .. }) if attempt < self.attempts => {
                    attempt += 1;
                    std::thread::sleep(self.pause);
                }
                other => return other,
            }
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, SourceError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SourceError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::http::tests::serve;

    /// Labelled filesystems as directories: `dir/LABEL/...`.
    struct Dirs(PathBuf);
    impl Media for Dirs {
        fn read_labelled(
            &self,
            labels: &[&str],
            file: &str,
        ) -> Result<Option<(String, Vec<u8>)>, SourceError> {
            for l in labels {
                if let Ok(b) = std::fs::read(self.0.join(l).join(file)) {
                    return Ok(Some((format!("{l}:{file}"), b)));
                }
            }
            Ok(None)
        }
    }

    fn reader<'a>(root: &Path, media: &'a Dirs) -> Reader<'a> {
        Reader {
            root: root.to_path_buf(),
            fw_cfg_dir: root.join("fw_cfg"),
            media,
            http: Client::new(Duration::from_secs(5)),
            attempts: 2,
            pause: Duration::from_millis(10),
        }
    }

    #[test]
    fn the_order_and_when_imds_applies() {
        let names = |k: &KernelArgs, ec2| {
            candidates(k, ec2)
                .iter()
                .map(Source::name)
                .collect::<Vec<_>>()
        };
        let none = KernelArgs::default();
        assert_eq!(
            names(&none, false),
            ["fw_cfg", "config-drive", "nocloud", "oem"]
        );
        assert_eq!(
            names(&none, true),
            ["fw_cfg", "config-drive", "nocloud", "ec2-imds", "oem"]
        );
        let k = KernelArgs::parse("keel.config.url=http://x/ keel.config.imds=http://y");
        assert_eq!(
            candidates(&k, false),
            [
                Source::Url("http://x/".into()),
                Source::FwCfg,
                Source::ConfigDrive,
                Source::NoCloud,
                Source::Imds("http://y".into()),
                Source::Oem
            ]
        );
        assert_eq!(
            candidates(&none, true)[3],
            Source::Imds(IMDS_DEFAULT.into())
        );
    }

    #[test]
    fn local_sources_read_their_files() {
        let t = tempfile::tempdir().unwrap();
        let media = Dirs(t.path().join("media"));
        let r = reader(t.path(), &media);
        for s in [
            Source::FwCfg,
            Source::ConfigDrive,
            Source::NoCloud,
            Source::Oem,
        ] {
            assert_eq!(r.read(&s).unwrap(), None, "{s:?}");
        }
        let fw = t.path().join("fw_cfg").join(FW_CFG_NAME);
        std::fs::create_dir_all(&fw).unwrap();
        std::fs::write(fw.join("raw"), "#cloud-config\n").unwrap();
        let f = r.read(&Source::FwCfg).unwrap().unwrap();
        assert_eq!(f.file, "fw_cfg:opt/org.keel/user-data");
        assert_eq!(f.bytes, b"#cloud-config\n");

        let cd = t.path().join("media/config-2/openstack/latest");
        std::fs::create_dir_all(&cd).unwrap();
        std::fs::write(cd.join("user_data"), "cd").unwrap();
        assert_eq!(r.read(&Source::ConfigDrive).unwrap().unwrap().bytes, b"cd");

        std::fs::create_dir_all(t.path().join("media/CIDATA")).unwrap();
        std::fs::write(t.path().join("media/CIDATA/user-data"), "nc").unwrap();
        let f = r.read(&Source::NoCloud).unwrap().unwrap();
        assert_eq!(
            (f.file.as_str(), f.bytes.as_slice()),
            ("CIDATA:user-data", &b"nc"[..])
        );

        std::fs::create_dir_all(t.path().join("oem")).unwrap();
        std::fs::write(t.path().join(OEM_FILE), "oem").unwrap();
        let f = r.read(&Source::Oem).unwrap().unwrap();
        assert_eq!(
            (f.file.as_str(), f.bytes.as_slice()),
            ("/oem/cloud-config.yml", &b"oem"[..])
        );
    }

    #[test]
    fn imds_v2_token_then_user_data_and_attributes() {
        let token = |h: &[(String, String)]| {
            h.contains(&("x-aws-ec2-metadata-token".into(), "TOKEN1".into()))
        };
        let base = serve(6, move |m, p, h| match (m, p) {
            ("PUT", "/latest/api/token")
                if h.iter()
                    .any(|(k, _)| k == "x-aws-ec2-metadata-token-ttl-seconds") =>
            {
                (200, b"TOKEN1".to_vec())
            }
            ("GET", "/latest/user-data") if token(h) => {
                (200, b"#cloud-config\nhostname: imds\n".to_vec())
            }
            ("GET", "/latest/meta-data/local-ipv4") if token(h) => (200, b"172.31.5.6".to_vec()),
            ("GET", "/latest/meta-data/instance-id") if token(h) => (200, b"i-0abc\n".to_vec()),
            // No public address, no hostname: 404s, left out.
            ("GET", _) if token(h) => (404, b"Not Found".to_vec()),
            _ => (401, b"unauthorized".to_vec()),
        });
        let t = tempfile::tempdir().unwrap();
        let media = Dirs(t.path().into());
        let f = reader(t.path(), &media)
            .read(&Source::Imds(base.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(f.file, format!("{base}/latest/user-data"));
        assert_eq!(f.bytes, b"#cloud-config\nhostname: imds\n");
        let attributes: Vec<(&str, &str)> = f
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attributes,
            [
                ("COREOS_EC2_IPV4_LOCAL", "172.31.5.6"),
                ("COREOS_EC2_INSTANCE_ID", "i-0abc")
            ]
        );
    }

    #[test]
    fn imds_without_user_data_is_none_and_a_refused_token_an_error() {
        let base = serve(2, |m, _, _| match m {
            "PUT" => (200, b"T".to_vec()),
            _ => (404, Vec::new()),
        });
        let t = tempfile::tempdir().unwrap();
        let media = Dirs(t.path().into());
        assert_eq!(
            reader(t.path(), &media).read(&Source::Imds(base)).unwrap(),
            None
        );
        let base = serve(1, |_, _, _| (403, b"IMDSv1 only".to_vec()));
        let err = reader(t.path(), &media)
            .read(&Source::Imds(base.clone()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("PUT {base}/latest/api/token: HTTP 403 (11 bytes: \"IMDSv1 only\")")
        );
    }

    #[test]
    fn a_url_is_retried_while_nothing_listens() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/cc", l.local_addr().unwrap());
        drop(l);
        let t = tempfile::tempdir().unwrap();
        let media = Dirs(t.path().into());
        let started = std::time::Instant::now();
        let err = reader(t.path(), &media)
            .read(&Source::Url(url.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("GET {url}: ")), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(10));
    }
}
