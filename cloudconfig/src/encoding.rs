//! `write_files[].encoding`: the names coreos-cloudinit accepts and the decoding it does.
//!
//! Base64 is Go's `base64.StdEncoding`: padded standard alphabet, CR and LF ignored (so a
//! YAML block scalar's line breaks are fine), anything else refused.

use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Base64,
    Gzip,
    GzipBase64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported encoding {0:?} (b64, base64, gz, gzip, gz+b64, gzip+base64, gz+base64, gzip+b64)")]
    Unsupported(String),
    #[error("not valid base64: {0}")]
    Base64(String),
    #[error("not valid gzip: {0}")]
    Gzip(String),
}

impl Encoding {
    /// `None` for the empty name (no encoding), an error for a name coreos-cloudinit refuses.
    pub fn parse(name: &str) -> Result<Option<Encoding>, DecodeError> {
        Ok(Some(match name {
            "" => return Ok(None),
            "b64" | "base64" => Encoding::Base64,
            "gz" | "gzip" => Encoding::Gzip,
            "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => Encoding::GzipBase64,
            other => return Err(DecodeError::Unsupported(other.to_string())),
        }))
    }
}

/// Decode `content` as `encoding` names it (`""`: as is).
pub fn decode(content: &[u8], encoding: &str) -> Result<Vec<u8>, DecodeError> {
    match Encoding::parse(encoding)? {
        None => Ok(content.to_vec()),
        Some(Encoding::Base64) => decode_base64(content),
        Some(Encoding::Gzip) => decode_gzip(content),
        Some(Encoding::GzipBase64) => decode_gzip(&decode_base64(content)?),
    }
}

pub fn decode_gzip(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    Ok(out)
}

fn sextet(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Go's `base64.StdEncoding.DecodeString`.
pub fn decode_base64(input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let data: Vec<u8> = input
        .iter()
        .copied()
        .filter(|&c| c != b'\r' && c != b'\n')
        .collect();
    if data.len() % 4 != 0 {
        return Err(DecodeError::Base64(format!(
            "length {} is not a multiple of 4",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3);
    let chunks = data.len() / 4;
    for (i, chunk) in data.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return Err(DecodeError::Base64(format!(
                "misplaced padding at byte {}",
                i * 4
            )));
        }
        let mut acc = 0u32;
        for (j, &c) in chunk[..4 - pad].iter().enumerate() {
            let v = sextet(c).ok_or_else(|| {
                DecodeError::Base64(format!(
                    "illegal character {:?} at byte {}",
                    c as char,
                    i * 4 + j
                ))
            })?;
            acc |= v << (18 - 6 * j);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_like_go() {
        assert_eq!(decode_base64(b"aGVsbG8K").unwrap(), b"hello\n");
        assert_eq!(decode_base64(b"aGVs\nbG8K\n").unwrap(), b"hello\n");
        assert_eq!(decode_base64(b"aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64(b"").unwrap(), b"");
        assert!(decode_base64(b"hello\n").is_err());
        assert!(decode_base64(b"aGk").is_err());
        assert!(decode_base64(b"aG=k").is_err());
        assert!(decode_base64(b"aGk=aGk=").is_err());
        assert!(decode_base64(b"aG k").is_err());
    }

    #[test]
    fn every_encoding_name() {
        let gz_b64 = b"H4sIAOC3tVQAA8tIzcnJ5wIAIDA6NgYAAAA=";
        for name in ["gz+base64", "gzip+base64", "gz+b64", "gzip+b64"] {
            assert_eq!(decode(gz_b64, name).unwrap(), b"hello\n", "{name}");
        }
        let gz = decode_base64(gz_b64).unwrap();
        for name in ["gz", "gzip"] {
            assert_eq!(decode(&gz, name).unwrap(), b"hello\n");
        }
        for name in ["b64", "base64"] {
            assert_eq!(decode(b"aGVsbG8K", name).unwrap(), b"hello\n");
        }
        assert_eq!(decode(b"as is", "").unwrap(), b"as is");
        assert!(matches!(
            decode(b"x", "custom"),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode(b"hello", "gzip"),
            Err(DecodeError::Gzip(_))
        ));
    }
}
