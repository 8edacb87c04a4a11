//! What kind of user-data a file is, judged as coreos-cloudinit judges it (first line).

use crate::report::Document;

pub const HEADER: &str = "#cloud-config";

pub fn classify(bytes: &[u8]) -> Document {
    if bytes.is_empty() {
        return Document::Empty;
    }
    if bytes.starts_with(b"#!") {
        return Document::Script;
    }
    if is_ignition(bytes) {
        return Document::Ignition;
    }
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let first = first.trim_end();
    if first == HEADER {
        Document::CloudConfig
    } else if first.contains("Content-Type: multipart/mixed;") {
        Document::MultipartMime
    } else {
        Document::Unknown
    }
}

/// JSON with `ignitionVersion` (spec 1) or `ignition.version` (spec 2+).
fn is_ignition(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => {
            v.get("ignitionVersion").is_some_and(|x| !x.is_null())
                || v.pointer("/ignition/version").is_some_and(|x| !x.is_null())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(classify(b""), Document::Empty);
        assert_eq!(classify(b"#!/bin/bash\necho hey"), Document::Script);
        assert_eq!(
            classify(b"#cloud-config \r\nhostname: a"),
            Document::CloudConfig
        );
        assert_eq!(classify(b"{\"ignitionVersion\":0}"), Document::Ignition);
        assert_eq!(
            classify(b"{\"ignition\":{\"version\":\"3.3.0\"}}"),
            Document::Ignition
        );
        assert_eq!(classify(b"{}"), Document::Unknown);
        assert_eq!(classify(b"hostname: a"), Document::Unknown);
        assert_eq!(
            classify(b"Content-Type: multipart/mixed; boundary=\"x\"\n"),
            Document::MultipartMime
        );
    }
}
