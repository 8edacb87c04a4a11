//! See keel_fuzz_targets::cloudconfig.

fn main() {
    afl::fuzz!(|data: &[u8]| keel_fuzz_targets::cloudconfig::run(data));
}
