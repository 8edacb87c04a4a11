//! See keel_fuzz_targets::omaha.

fn main() {
    afl::fuzz!(|data: &[u8]| keel_fuzz_targets::omaha::run(data));
}
