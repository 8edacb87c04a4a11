//! Hostile unit files and names (anything a user or etcd hands the agent): the `[X-Fleet]`
//! parser, the glob matcher and the scheduler never panic, and what parses keeps its promises.
//! Inputs are mutations of real unit files by a fixed-seed generator, so a failure repeats.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keel_fleet::glob;
use keel_fleet::model::parse_metadata;
use keel_fleet::schedule::{plan, Job, Machine};
use keel_fleet::unit::{check_name, options, split_instance, Requirements};
use keel_testkit::rng::Rng;

const SEEDS: [&str; 4] = [
    "[Unit]\nDescription=HelloWorldApp\n\n[Service]\nExecStart=/bin/sh -c \"echo hi\"\n\n[X-Fleet]\nMachineMetadata=group=hw_webservers\nConflicts=hello_world@*\n",
    "[X-Fleet]\nGlobal=true\nMachineMetadata=\"region=us\" region=eu\n",
    "[X-Fleet]\nMachineOf=web@%i.service\nX-Conflicts=%p@[0-9]*.service \\\n  other*\n",
    "[X-Fleet]\nMachineID=\"562999f8\"\nReplaces=old.service\n",
];

const ALPHABET: &[u8] = b"[]=\\\"%*?^-@.\n \tXFleetMachineIDOfConflictsGlobal01az\xff\xc3";

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut b = seed.as_bytes().to_vec();
    for _ in 0..1 + rng.index(8) {
        let at = rng.index(b.len() + 1);
        match rng.index(3) {
            0 if at < b.len() => {
                b.remove(at);
            }
            1 if at < b.len() => b[at] = ALPHABET[rng.index(ALPHABET.len())],
            _ => b.insert(at, ALPHABET[rng.index(ALPHABET.len())]),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn mutated_unit_files_never_panic_and_what_parses_is_consistent() {
    let mut rng = Rng::new(0x5eed_f1ee_7000_0001);
    let names = ["hello_world@1.service", "web@3.service", "a.service"];
    let mut parsed = 0;
    for i in 0..20_000 {
        let text = mutate(&mut rng, SEEDS[i % SEEDS.len()]);
        let name = names[i % names.len()];
        let _ = options(&text);
        if let Ok(r) = Requirements::parse(name, &text) {
            parsed += 1;
            // The contradictions fleet refuses never come out of a successful parse.
            assert!(!(r.global && (r.machine_id.is_some() || !r.conflicts.is_empty())));
            assert!(r.machine_id.is_none() || r.machine_of.is_empty());
            assert!(!r.machine_of.iter().any(|m| m == name), "{text:?}");
            for (k, vals) in &r.metadata {
                assert!(
                    !k.is_empty() && vals.iter().all(|v| !v.is_empty()),
                    "{text:?}"
                );
            }
        }
    }
    assert!(
        parsed > 1_000,
        "the mutations should leave many files valid: {parsed}"
    );
}

#[test]
fn globs_and_names_from_noise_terminate_quickly() {
    let mut rng = Rng::new(0x5eed_f1ee_7000_0002);
    let started = Instant::now();
    for _ in 0..20_000 {
        let len = rng.index(24);
        let pattern: String = (0..len)
            .map(|_| ALPHABET[rng.index(ALPHABET.len())] as char)
            .collect();
        let name = mutate(&mut rng, "hello_world@12.service");
        let _ = glob::matches(&pattern, &name);
        let _ = glob::matches(&name, &pattern);
        let _ = check_name(&name);
        let _ = split_instance(&name);
        let _ = parse_metadata(&pattern);
    }
    // Worst case (many stars against a long name) stays polynomial.
    let stars = "*a".repeat(40);
    let long = "a".repeat(4_000);
    assert!(glob::matches(&stars, &long));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn any_parsed_units_schedule_without_panic_and_respect_their_constraints() {
    let mut rng = Rng::new(0x5eed_f1ee_7000_0003);
    let machines: Vec<Machine> = (0..4)
        .map(|i| Machine {
            id: format!("{i:08x}aaaa"),
            metadata: BTreeMap::from([
                (
                    "group".to_string(),
                    ["hw_webservers", "db"][i % 2].to_string(),
                ),
                ("region".to_string(), ["us", "eu"][i / 2].to_string()),
            ]),
        })
        .collect();
    for round in 0..300 {
        let mut units: Vec<(String, Requirements)> = Vec::new();
        for j in 0..6 {
            let name = format!("hello_world@{j}.service");
            let text = mutate(&mut rng, SEEDS[(round + j) % SEEDS.len()]);
            if let Ok(r) = Requirements::parse(&name, &text) {
                units.push((name, r));
            }
        }
        let jobs: Vec<Job> = units.iter().map(|(n, r)| Job { name: n, req: r }).collect();
        let p = plan(&machines, &jobs, &BTreeMap::new());
        for (u, m) in &p.placed {
            let r = &units.iter().find(|(n, _)| n == u).unwrap().1;
            let machine = machines.iter().find(|x| &x.id == m).unwrap();
            for (k, vals) in &r.metadata {
                assert!(vals.contains(&machine.metadata[k]), "{u} on {m}: {r:?}");
            }
            for (other, om) in &p.placed {
                if other != u && om == m {
                    let or = &units.iter().find(|(n, _)| n == other).unwrap().1;
                    assert!(!r.conflicts_with(u, other, or), "{u} and {other} share {m}");
                }
            }
        }
        assert_eq!(
            p.placed.len() + p.global.len() + p.unplaced.len()
                - p.global
                    .keys()
                    .filter(|g| p.unplaced.contains_key(*g))
                    .count(),
            jobs.len(),
            "every unit is placed, global or reported: {p:?}"
        );
    }
}
