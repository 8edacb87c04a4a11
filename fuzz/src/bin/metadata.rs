//! See keel_fuzz_targets::metadata.

fn main() {
    afl::fuzz!(|data: &[u8]| keel_fuzz_targets::metadata::run(data));
}
