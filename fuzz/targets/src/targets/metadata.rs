//! The signed slot metadata block and the payload header: decode, signature check against the
//! fuzz key, geometry check; a block that verifies re-encodes to one that verifies the same.

use std::io::Cursor;

use crate::disk::fuzz_key;
use ed25519_dalek::Signer;
use keel_format::metadata::{self, METADATA_SIZE};
use keel_format::slot;

pub fn run(data: &[u8]) {
    let key = fuzz_key();
    let keys = [key.verifying_key()];
    let mut block = data.to_vec();
    block.resize(block.len().max(METADATA_SIZE), 0);
    if let Ok((unverified, _)) = slot::read_payload_metadata(&mut Cursor::new(&block)) {
        let _ = unverified.claimed().body_size();
        let _ = slot::verified_slot_metadata(unverified, &keys, None);
    }
    let Ok(unverified) = metadata::decode(&block) else {
        return;
    };
    let size = unverified.claimed().body_size();
    let Ok(meta) = unverified.verify(&keys) else {
        return;
    };
    let _ = slot::check_geometry(&meta, Some(size));
    let again = metadata::encode(&meta, |m| key.sign(m).to_bytes()).expect("encodes");
    let back = metadata::decode(&again).expect("decodes").verify(&keys);
    assert_eq!(back.expect("verifies"), meta);
}
