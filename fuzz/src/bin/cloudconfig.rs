//! cloud-config: parse (typed) and validate (the findings report).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = keel_cloudconfig::parse(data);
        let _ = keel_cloudconfig::validate(data);
    });
}
