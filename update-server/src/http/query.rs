//! `application/x-www-form-urlencoded` query strings: `a=1&b=x%20y` → pairs.

/// Decode `%XX` and `+`; `None` for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The pairs of a query string, decoded, in order.
pub fn parse_query(q: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let bad = || format!("query parameter {part:?} is not valid percent-encoding");
        pairs.push((
            percent_decode(k).ok_or_else(bad)?,
            percent_decode(v).ok_or_else(bad)?,
        ));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(
            parse_query(Some("q=web%201&group=beta&x")).unwrap(),
            vec![
                ("q".into(), "web 1".into()),
                ("group".into(), "beta".into()),
                ("x".into(), "".into())
            ]
        );
        assert_eq!(percent_decode("a+b%2Fc").unwrap(), "a b/c");
        assert!(parse_query(Some("q=%zz")).is_err());
        assert!(parse_query(Some("q=%f")).is_err());
        assert!(parse_query(Some("q=%ff")).is_err());
    }
}
