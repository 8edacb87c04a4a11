//! See keel_fuzz_targets::verity_geometry.

fn main() {
    afl::fuzz!(|data: &[u8]| keel_fuzz_targets::verity_geometry::run(data));
}
