//! See keel_fuzz_targets::coordination_json.

fn main() {
    afl::fuzz!(|data: &[u8]| keel_fuzz_targets::coordination_json::run(data));
}
