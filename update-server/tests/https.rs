//! HTTPS with certificate files: an update check and a download over TLS on loopback, the
//! certificate made by openssl for 127.0.0.1.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use keel_omaha::{client_outcome_from_body, Outcome, KEEL_APP_ID};

#[test]
fn omaha_and_downloads_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let (ca, ca_key, csr) = (path("ca.pem"), path("ca.key"), path("leaf.csr"));
    let (cert, key, ext) = (path("cert.pem"), path("key.pem"), path("leaf.ext"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (ci/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ]
    .map(os);
    // A CA, and a certificate for 127.0.0.1 it signs: what an operator's files look like.
    let mut a = vec![os("req"), os("-x509")];
    a.extend(ec);
    a.extend([
        os("-days"),
        os("1"),
        os("-subj"),
        os("/CN=keel test CA"),
        os("-keyout"),
    ]);
    a.extend([ca_key.as_os_str(), os("-out"), ca.as_os_str()]);
    openssl(&a);
    let mut a = vec![os("req")];
    a.extend(ec);
    a.extend([
        os("-subj"),
        os("/CN=127.0.0.1"),
        os("-keyout"),
        key.as_os_str(),
    ]);
    a.extend([os("-out"), csr.as_os_str()]);
    openssl(&a);
    openssl(&[
        os("x509"),
        os("-req"),
        os("-in"),
        csr.as_os_str(),
        os("-CA"),
        ca.as_os_str(),
        os("-CAkey"),
        ca_key.as_os_str(),
        os("-CAcreateserial"),
        os("-days"),
        os("1"),
        os("-extfile"),
        ext.as_os_str(),
        os("-out"),
        cert.as_os_str(),
    ]);
    let s = TestServer::start_with(&format!(
        "tls:\n  cert: {}\n  key: {}\n",
        cert.display(),
        key.display()
    ));
    let payload = s.publish("2.0.0", "stable");

    let pem = std::fs::read(&ca).unwrap();
    let root = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
                .build(),
        )
        .build()
        .into();
    let base = s.url("").replace("http://", "https://");
    let mut r = agent
        .post(&format!("{base}/v1/update/"))
        .send(request("1.0.0", "stable", CHECK))
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let reply = r.body_mut().read_to_string().unwrap();
    let Outcome::UpdateAvailable(u) = client_outcome_from_body(reply.as_bytes(), KEEL_APP_ID)
    else {
        panic!("{reply}")
    };
    assert!(u.url.starts_with("https://127.0.0.1:"), "{}", u.url);
    let mut r = agent
        .get(&u.url)
        .header("Range", "bytes=4096-")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    let got = r.body_mut().read_to_vec().unwrap();
    assert!(got[..] == std::fs::read(&payload).unwrap()[4096..]);

    // Plain HTTP to the TLS port gets no Omaha answer.
    assert!(agent.post(&s.url("/v1/update/")).send("x").is_err());
}
