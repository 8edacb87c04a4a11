//! See keel_fuzz_targets::definition_yaml.

fn main() {
    afl::fuzz!(|data: &[u8]| keel_fuzz_targets::definition_yaml::run(data));
}
