//! The Omaha request and response parsers; what parses is written back and parses to the same.

pub fn run(data: &[u8]) {
    if let Ok(r) = keel_omaha::parse_request(data) {
        let text = keel_omaha::write_request(&r);
        let back = keel_omaha::parse_request(text.as_bytes()).expect("a written request parses");
        assert_eq!(back, r, "request round trip through:\n{text}");
    }
    if let Ok(r) = keel_omaha::parse_response(data) {
        let text = keel_omaha::write_response(&r);
        let back = keel_omaha::parse_response(text.as_bytes()).expect("a written response parses");
        assert_eq!(back, r, "response round trip through:\n{text}");
        if let Some(app) = r.apps.first() {
            let _ = keel_omaha::client_outcome(&r, &app.appid);
        }
    }
    let _ = keel_omaha::client_outcome_from_body(data, "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}");
}
