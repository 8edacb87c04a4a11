//! The host's own apt sources, for rootfs definitions that name no mirrors: the image is then
//! built from the same archive (and proxy or local mirror) the build machine already uses.

use std::path::Path;

/// `deb URI SUITE COMPONENTS` lines for `suite` and its `-updates` / `-security` companions,
/// read from `/etc/apt/sources.list` and `/etc/apt/sources.list.d/` below `root`.
pub fn mirrors_for(suite: &str, root: &Path) -> Vec<String> {
    let wanted = [
        suite.to_string(),
        format!("{suite}-updates"),
        format!("{suite}-security"),
    ];
    let mut lines = Vec::new();
    let etc = root.join("etc/apt");
    let mut files = vec![etc.join("sources.list")];
    if let Ok(rd) = std::fs::read_dir(etc.join("sources.list.d")) {
        let mut more: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let entries = match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => deb822(&text),
            Some("list") => one_line(&text),
            _ if f.ends_with("sources.list") => one_line(&text),
            _ => continue,
        };
        for (uri, s, components) in entries {
            if wanted.contains(&s) {
                let line = format!("deb {uri} {s} {components}");
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
    }
    lines
}

type Entry = (String, String, String);

fn one_line(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"deb") {
            continue;
        }
        words.remove(0);
        if words.first().is_some_and(|w| w.starts_with('[')) {
            while let Some(w) = words.first() {
                let end = w.ends_with(']');
                words.remove(0);
                if end {
                    break;
                }
            }
        }
        if words.len() >= 3 {
            out.push((words[0].into(), words[1].into(), words[2..].join(" ")));
        }
    }
    out
}

fn deb822(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                .map(|v| v.trim().to_string())
        };
        if field("Enabled").is_some_and(|v| v == "no")
            || !field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"))
        {
            continue;
        }
        let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        let components = field("Components").unwrap_or_else(|| "main".into());
        for uri in uris.split_whitespace() {
            for suite in suites.split_whitespace() {
                out.push((uri.into(), suite.into(), components.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats_and_keeps_only_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let apt = dir.path().join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&apt).unwrap();
        std::fs::write(
            dir.path().join("etc/apt/sources.list"),
            "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\ndeb-src http://mirror.example/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: http://other.example/\nSuites: trixie\nComponents: main\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("off.sources"),
            "Enabled: no\nTypes: deb\nURIs: http://off.example/\nSuites: bookworm\n",
        )
        .unwrap();
        assert_eq!(
            mirrors_for("bookworm", dir.path()),
            vec![
                "deb http://mirror.example/debian bookworm main contrib",
                "deb http://mirror.example/debian bookworm main",
                "deb http://mirror.example/debian bookworm-updates main",
                "deb http://security.example/debian-security bookworm-security main",
            ]
        );
        assert!(mirrors_for("sid", dir.path()).is_empty());
    }
}
