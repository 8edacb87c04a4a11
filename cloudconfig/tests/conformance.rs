//! Agreement with coreos-cloudinit's real validator on `shared/conformance/cloudconfig/`
//! (read in place, never copied into the repository).
//!
//! Unit of agreement: one `expected.tsv` row with scope=validate and origin=real-validator.
//! A finding row agrees when Keel reports an entry of the same kind on the same line (each
//! Keel entry answers at most one row); an `ok` row agrees when Keel reports nothing for the
//! file. Every Keel entry that answers no row is a disagreement too, so being stricter costs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use keel_cloudconfig::{validate_file, Kind};

fn fixtures() -> PathBuf {
    keel_testkit::conformance::dir("cloudconfig", "expected.tsv")
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Error => "error",
        Kind::Warning => "warning",
        Kind::Info => "info",
    }
}

struct Row {
    kind: String,
    line: Option<usize>,
    message: String,
}

#[test]
fn agrees_with_the_real_validator() {
    let root = fixtures();
    let tsv = std::fs::read_to_string(root.join("expected.tsv")).unwrap();
    let mut by_file: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for line in tsv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            cols.len(),
            6,
            "expected.tsv row with {} columns: {line}",
            cols.len()
        );
        if cols[1] != "validate" || cols[5] != "real-validator" {
            continue;
        }
        by_file.entry(cols[0].to_string()).or_default().push(Row {
            kind: cols[2].to_string(),
            line: cols[3].parse().ok(),
            message: cols[4].to_string(),
        });
    }
    assert!(
        by_file.len() >= 70,
        "only {} files in expected.tsv",
        by_file.len()
    );

    let (mut matched, mut total) = (0usize, 0usize);
    let mut disagreements = Vec::new();
    for (file, rows) in &by_file {
        let report = validate_file(&root.join(file)).unwrap();
        let mut unanswered: Vec<_> = report.entries.iter().collect();
        for row in rows {
            total += 1;
            if row.kind == "ok" {
                if report.entries.is_empty() {
                    matched += 1;
                } else {
                    disagreements.push(format!("{file}: expected no entries"));
                }
                continue;
            }
            let hit = unanswered
                .iter()
                .position(|e| kind_name(e.kind) == row.kind && Some(e.line) == row.line);
            match hit {
                Some(i) => {
                    unanswered.remove(i);
                    matched += 1;
                }
                None => disagreements.push(format!(
                    "{file}: missing {} at line {:?}: {}",
                    row.kind, row.line, row.message
                )),
            }
        }
        if rows.iter().any(|r| r.kind != "ok") {
            for e in unanswered {
                total += 1;
                disagreements.push(format!(
                    "{file}: extra {} at line {}: {}",
                    e.kind, e.line, e.message
                ));
            }
        }
        if !report.entries.is_empty() {
            print!("{}", report.to_human());
        }
    }
    let rate = matched as f64 / total as f64;
    println!(
        "\nagreement with coreos-cloudinit's validator: {matched}/{total} entries ({:.1} %)",
        rate * 100.0
    );
    for d in &disagreements {
        println!("  disagreement: {d}");
    }
    assert!(
        rate >= 0.9,
        "agreement {matched}/{total} is under 90 %:\n{}",
        disagreements.join("\n")
    );
}

#[test]
fn every_documentation_example_is_accepted() {
    let docs = fixtures().join("docs");
    let mut files: Vec<_> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 35,
        "only {} examples in {}",
        files.len(),
        docs.display()
    );
    let mut failures = String::new();
    for f in &files {
        let report = validate_file(f).unwrap();
        if report.has_errors() {
            failures.push_str(&report.to_human());
        }
        // Each example must also read into typed data.
        let bytes = std::fs::read(f).unwrap();
        keel_cloudconfig::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    assert!(
        failures.is_empty(),
        "documentation examples with errors:\n{failures}"
    );
}
