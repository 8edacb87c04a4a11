//! Make the seeds that come from a built image: `cargo run --release -p keel-fuzz-targets --example seeds -- DISK`.
//! Writes corpus/gpt (the image's MBR, primary header and entries, with a flag byte),
//! corpus/metadata (USR-A's block, and the same JSON signed with the fuzz key) and
//! corpus/verity_geometry (USR-A's size and metadata JSON).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use ed25519_dalek::Signer;
use keel_format::gpt::DiskTable;
use keel_format::metadata::{self, METADATA_SIZE};
use keel_format::slot;

fn main() {
    let disk = std::env::args().nth(1).expect("usage: seeds DISK.raw");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let mut f = File::open(&disk).expect("open the image");
    let mut head = vec![0u8; 1024 + 16384];
    f.read_exact(&mut head).expect("read the primary table");
    for flags in [0u8, 3, 6] {
        let mut seed = vec![flags];
        seed.extend_from_slice(&head);
        fs::write(corpus.join(format!("gpt/built-image-flags{flags}")), seed).unwrap();
    }

    let table = DiskTable::read(&mut f).expect("the image's GPT");
    let a = table.by_label("USR-A").expect("USR-A");
    let mut block = vec![0u8; METADATA_SIZE];
    f.seek(SeekFrom::Start(
        a.offset() + slot::metadata_offset(a.size()),
    ))
    .unwrap();
    f.read_exact(&mut block).unwrap();
    fs::write(corpus.join("metadata/built-image-usr-a"), &block).unwrap();

    let mut meta = metadata::decode(&block).expect("USR-A metadata").metadata;
    let key = keel_fuzz_targets::fuzz_key();
    meta.key_id = keel_format::keys::key_id(&key.verifying_key());
    let resigned = metadata::encode(&meta, |m| key.sign(m).to_bytes()).unwrap();
    fs::write(corpus.join("metadata/built-image-usr-a-fuzz-key"), resigned).unwrap();

    let mut seed = a.size().to_le_bytes().to_vec();
    seed.extend_from_slice(&serde_json::to_vec(&meta).unwrap());
    fs::write(corpus.join("verity_geometry/built-image-usr-a"), seed).unwrap();
    // The smallest consistent geometry, so the build/verify round trip is reached.
    meta.verity.data_size = 2 * 4096;
    meta.verity.hash_offset = 2 * 4096;
    meta.verity.hash_size = keel_format::verity::hash_area_size(2);
    let mut seed = (1u64 << 20).to_le_bytes().to_vec();
    seed.extend_from_slice(&serde_json::to_vec(&meta).unwrap());
    fs::write(corpus.join("verity_geometry/two-blocks"), seed).unwrap();
}
