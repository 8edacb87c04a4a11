//! Why a user-data could not be read as a cloud-config at all (validation findings are
//! [`crate::Report`] entries, not errors).

use std::path::PathBuf;

use crate::yaml::SyntaxError;

pub const HEADER_MESSAGE: &str = r##"must be "#cloud-config", multipart mime or begin with "#!""##;
pub const MULTIPART_MESSAGE: &str =
    "multipart MIME user-data is recognised but not supported by Keel; give a #cloud-config or a #! script";
pub const NOT_MAPPING_MESSAGE: &str =
    "a cloud-config is a mapping of keys (hostname, users, write_files, coreos, ...)";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("line 1: {HEADER_MESSAGE}")]
    Header,
    #[error("line 1: {MULTIPART_MESSAGE}")]
    Multipart,
    #[error("line {line}: not UTF-8 text")]
    NotUtf8 { line: usize },
    #[error("line {}: {}", .0.line, .0.message)]
    Syntax(SyntaxError),
    #[error("line {line}: {NOT_MAPPING_MESSAGE}")]
    NotMapping { line: usize },
}

impl Error {
    /// The line the error is about (0: the file as a whole).
    pub fn line(&self) -> usize {
        match self {
            Error::Read { .. } => 0,
            Error::Header | Error::Multipart => 1,
            Error::NotUtf8 { line } | Error::NotMapping { line } => *line,
            Error::Syntax(e) => e.line,
        }
    }
}
