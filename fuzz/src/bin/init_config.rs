//! See keel_fuzz_targets::init_config.

fn main() {
    afl::fuzz!(|data: &[u8]| keel_fuzz_targets::init_config::run(data));
}
