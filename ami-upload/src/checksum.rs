//! Checksums the EBS direct APIs take: SHA-256 of each block, and the LINEAR aggregate, the
//! SHA-256 of the block digests concatenated in block-index order.

use std::collections::BTreeMap;

use base64::Engine;
use ring::digest::{digest, Context, SHA256};

pub type Digest = [u8; 32];

pub fn block_digest(block: &[u8]) -> Digest {
    digest(&SHA256, block)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

pub fn base64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// The LINEAR aggregate over the uploaded blocks (absent blocks take no part).
pub fn linear(digests: &BTreeMap<u64, Digest>) -> Digest {
    let mut ctx = Context::new(&SHA256);
    for d in digests.values() {
        ctx.update(d);
    }
    ctx.finish().as_ref().try_into().expect("32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_is_the_hash_of_the_digests_in_index_order() {
        let a = block_digest(b"a");
        let b = block_digest(b"b");
        let mut m = BTreeMap::new();
        m.insert(9, b);
        m.insert(2, a);
        let mut cat = Vec::new();
        cat.extend_from_slice(&a);
        cat.extend_from_slice(&b);
        assert_eq!(linear(&m), block_digest(&cat));
        // Known answer: SHA-256("abc") in base64 (python3 hashlib + base64).
        assert_eq!(
            base64(&block_digest(b"abc")),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
