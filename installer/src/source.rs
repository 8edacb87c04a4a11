//! Where the image and its signature come from: a file path or an http(s) URL, each streamed.
//! The signature sits beside the image (`IMAGE.sig`), as Flatcar's `.bin.bz2.sig` does, unless
//! one is named explicitly.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use keel_format::image_sig::{self, ImageSignature};

use crate::error::{InstallError, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Url(String),
}

impl Location {
    pub fn parse(arg: &str) -> Location {
        if arg.starts_with("http://") || arg.starts_with("https://") {
            Location::Url(arg.to_string())
        } else {
            Location::File(PathBuf::from(arg))
        }
    }

    /// The signature's default location: the same name with `.sig` appended.
    pub fn signature(&self) -> Location {
        match self {
            Location::File(p) => {
                let mut s = p.clone().into_os_string();
                s.push(image_sig::SUFFIX);
                Location::File(s.into())
            }
            Location::Url(u) => Location::Url(format!("{u}{}", image_sig::SUFFIX)),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Url(u) => u.clone(),
        }
    }

    /// Open for streaming; the length when the source knows it.
    pub fn open(&self) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
        match self {
            Location::File(p) => {
                let f = File::open(p)
                    .map_err(|e| InstallError::Input(format!("{}: {e}", p.display())))?;
                // A block device reports length 0; only a regular file's length means anything.
                let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
                Ok((Box::new(f), len))
            }
            Location::Url(u) => http_get(u).map_err(InstallError::Input),
        }
    }
}

/// Fetch and parse the signature (not yet checked against any key).
pub fn read_signature(at: &Location) -> Result<ImageSignature> {
    let (reader, _) = at.open().map_err(|e| {
        InstallError::Verification(format!(
            "signature {}: cannot read it ({e}); an image is only installed with its signature",
            at.name()
        ))
    })?;
    let mut bytes = Vec::new();
    reader
        .take(image_sig::MAX_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| InstallError::Io(format!("signature {}: {e}", at.name())))?;
    ImageSignature::parse(&bytes)
        .map_err(|e| InstallError::Verification(format!("signature {}: {e}", at.name())))
}

fn http_get(url: &str) -> std::result::Result<(Box<dyn Read + Send>, Option<u64>), String> {
    let client = keel_http::Client::new(keel_http::Timeouts::download());
    let response = client
        .get(url, None, &[])
        .and_then(|r| r.success())
        .map_err(|e| e.to_string())?;
    let length = response.content_length();
    Ok((Box::new(response.into_reader()), length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_sits_beside_the_image() {
        assert_eq!(
            Location::parse("/srv/disk.raw").signature(),
            Location::File("/srv/disk.raw.sig".into())
        );
        assert_eq!(
            Location::parse("https://h/x/disk.raw").signature(),
            Location::Url("https://h/x/disk.raw.sig".into())
        );
    }
}
