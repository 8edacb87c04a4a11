//! keel-cloudconfig: the one place for coreos-cloudinit's cloud-config language.
//!
//! * [`parse`]: user-data bytes → [`UserData`] (a [`CloudConfig`] as plain typed data, a `#!`
//!   script, an Ignition config, or nothing).
//! * [`validate`] / [`validate_file`]: coreos-cloudinit's validator (same rules, same order,
//!   same messages, lines from the YAML parser) plus a few stricter Keel rules → [`Report`].
//!
//! `keel-validate-config`, `keel validate-config` and the boot-time path all call these.

pub mod apply;
pub mod boot;
pub mod cli;
pub mod config;
pub mod encoding;
pub mod error;
pub mod etcd;
pub mod fleet;
pub mod normalise;
pub mod report;
pub mod rules;
pub mod schema;
pub mod userdata;
pub mod values;
pub mod yaml;

use std::path::Path;

pub use config::{
    CloudConfig, CoreOs, DropIn, Locksmith, Oem, RebootStrategy, Section, Unit, UnitCommand,
    Update, User, WriteFile,
};
pub use error::Error;
pub use report::{Document, Entry, Kind, Report};

/// What a user-data is, read.
#[derive(Debug, Clone, PartialEq)]
pub enum UserData {
    /// Zero bytes.
    Empty,
    CloudConfig(Box<CloudConfig>),
    /// A `#!` script (the whole text), which coreos-cloudinit ran once.
    Script(String),
    /// An Ignition config: not cloud-config, left alone.
    Ignition,
}

/// The normalised YAML tree of a `#cloud-config` (`None`: no document, only comments).
fn tree(bytes: &[u8]) -> Result<Option<yaml::Node>, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::NotUtf8 {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    let mut root = yaml::parse(text).map_err(Error::Syntax)?;
    if let Some(root) = &mut root {
        if !matches!(root.value, yaml::Value::Map(_)) && !root.is_null() {
            return Err(Error::NotMapping { line: root.line });
        }
        normalise::tree(root);
    }
    Ok(root)
}

/// Read user-data into typed data. Only what makes the bytes unreadable is an error; a
/// readable document with findings parses (leniently) — run [`validate`] to hear about them.
pub fn parse(bytes: &[u8]) -> Result<UserData, Error> {
    match userdata::classify(bytes) {
        Document::Empty => Ok(UserData::Empty),
        Document::Script => Ok(UserData::Script(
            String::from_utf8_lossy(bytes).into_owned(),
        )),
        Document::Ignition => Ok(UserData::Ignition),
        Document::MultipartMime => Err(Error::Multipart),
        Document::Unknown => Err(Error::Header),
        Document::CloudConfig => Ok(UserData::CloudConfig(Box::new(match tree(bytes)? {
            Some(root) => CloudConfig::from_node(&root),
            None => CloudConfig::default(),
        }))),
    }
}

/// Validate user-data bytes.
pub fn validate(bytes: &[u8]) -> Report {
    let document = userdata::classify(bytes);
    let mut report = Report::new(document);
    match document {
        Document::Empty | Document::Script | Document::Ignition => {}
        Document::MultipartMime => report.error(1, error::MULTIPART_MESSAGE),
        Document::Unknown => report.error(1, error::HEADER_MESSAGE),
        Document::CloudConfig => match tree(bytes) {
            Ok(Some(root)) => rules::run(&root, &mut report),
            Ok(None) => {}
            Err(e @ (Error::Syntax(_) | Error::NotUtf8 { .. })) => {
                let message = match &e {
                    Error::Syntax(s) => s.message.clone(),
                    other => other.to_string(),
                };
                report.error(e.line(), message);
                // What coreos-cloudinit adds when the document could not be read at all.
                report.warning(0, "incorrect type for \"\" (want struct)");
            }
            // Keel: go-yaml would silently read a list or a scalar as an empty config.
            Err(e) => report.error(e.line(), error::NOT_MAPPING_MESSAGE),
        },
    }
    report
}

/// Read and validate a file; the report names it. Only an unreadable file is an error.
pub fn validate_file(path: &Path) -> Result<Report, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut report = validate(&bytes);
    report.file = path.display().to_string();
    Ok(report)
}

#[cfg(test)]
mod tests;
