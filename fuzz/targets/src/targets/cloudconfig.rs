//! cloud-config: parse (typed) and validate (the findings report).

pub fn run(data: &[u8]) {
    let _ = keel_cloudconfig::parse(data);
    let _ = keel_cloudconfig::validate(data);
}
