//! See keel_fuzz_targets::update_conf.

fn main() {
    afl::fuzz!(|data: &[u8]| keel_fuzz_targets::update_conf::run(data));
}
