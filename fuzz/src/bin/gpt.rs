//! See keel_fuzz_targets::gpt.

fn main() {
    afl::fuzz!(|data: &[u8]| keel_fuzz_targets::gpt::run(data));
}
