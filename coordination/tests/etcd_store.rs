//! The semaphore on real etcd (Debian's etcd-server 3.4, started here on loopback), checked
//! with `etcdctl` where the question is "what is in etcd", not "what does our client say".

use std::time::{Duration, Instant};

use keel_coordination::store::{self, DEFAULT_ATTEMPTS};
use keel_coordination::{semaphore_key, EtcdConfig, EtcdError, EtcdStore, Op, Semaphore};
use keel_testkit::etcd::{etcdctl, free_port, Cluster};

fn store(cluster: &Cluster, key: &str) -> EtcdStore {
    EtcdStore::connect(&EtcdConfig::with_endpoints(&cluster.client_urls()), key)
        .expect("connecting to the test cluster")
}

fn value_in_etcd(endpoints: &str, key: &str) -> String {
    etcdctl(endpoints, &["get", "--print-value-only", key])
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn locksmiths_key_and_json_as_etcd_sees_them() {
    let cluster = Cluster::start(1);
    let eps = cluster.client_urls();
    let key = semaphore_key(None);
    let s = store(&cluster, &key);

    // Absent key: locksmith's initial value, nothing written by a read.
    assert_eq!(store::status(&s).unwrap(), Semaphore::initial());
    assert_eq!(value_in_etcd(&eps, &key), "");

    store::lock(&s, "machine-a").unwrap();
    assert_eq!(
        value_in_etcd(&eps, "coreos.com/updateengine/rebootlock/semaphore"),
        r#"{"semaphore":0,"max":1,"holders":["machine-a"]}"#
    );
    assert_eq!(
        store::lock(&s, "machine-b").unwrap_err().to_string(),
        "semaphore is at 0"
    );
    let (old, new) = store::set_max(&s, 2).unwrap();
    assert_eq!((old, new.max), (1, 2));
    store::lock(&s, "machine-b").unwrap();
    store::unlock(&s, "machine-a").unwrap();
    assert_eq!(
        value_in_etcd(&eps, &key),
        r#"{"semaphore":1,"max":2,"holders":["machine-b"]}"#
    );

    // A group is its own key, beside the default one.
    let g = store(&cluster, &semaphore_key(Some("prod/database")));
    store::lock(&g, "machine-c").unwrap();
    assert_eq!(
        value_in_etcd(
            &eps,
            "coreos.com/updateengine/rebootlock/groups/prod%2Fdatabase/semaphore"
        ),
        r#"{"semaphore":0,"max":1,"holders":["machine-c"]}"#
    );
}

#[test]
fn a_value_locksmith_cannot_read_is_an_error_naming_the_key() {
    let cluster = Cluster::start(1);
    let eps = cluster.client_urls();
    let key = "coreos.com/updateengine/rebootlock/groups/broken/semaphore";
    etcdctl(&eps, &["put", key, "asdf"]).unwrap();
    let s = store(&cluster, key);
    let err = store::lock(&s, "a").unwrap_err().to_string();
    assert!(err.contains(key), "{err}");
    assert_eq!(value_in_etcd(&eps, key), "asdf", "nothing written over it");
}

#[test]
fn a_write_between_read_and_swap_loses_the_swap() {
    use keel_coordination::SemaphoreStore;
    let cluster = Cluster::start(1);
    let eps = cluster.client_urls();
    let key = semaphore_key(Some("race"));
    let s = store(&cluster, &key);
    store::lock(&s, "a").unwrap();
    let (seen, rev) = s.get().unwrap();
    // Someone else (here: etcdctl) writes first.
    etcdctl(
        &eps,
        &["put", &key, r#"{"semaphore":1,"max":1,"holders":null}"#],
    )
    .unwrap();
    let mine = keel_coordination::apply(&seen, &Op::Unlock("a".into())).unwrap();
    assert!(!s.compare_and_swap(rev, &mine).unwrap());
    assert_eq!(
        value_in_etcd(&eps, &key),
        r#"{"semaphore":1,"max":1,"holders":null}"#
    );
}

#[test]
fn unreachable_etcd_is_a_bounded_error_naming_the_endpoint() {
    let port = free_port();
    let mut config = EtcdConfig::with_endpoints(&format!("http://127.0.0.1:{port}"));
    config.timeout = Duration::from_secs(2);
    let start = Instant::now();
    let result = EtcdStore::connect(&config, semaphore_key(None)).and_then(|s| {
        store::status(&s).map_err(|e| match e {
            store::StoreError::Store(e) => e,
            other => panic!("{other}"),
        })
    });
    let err = result.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            err,
            EtcdError::Connect { .. } | EtcdError::Timeout { .. } | EtcdError::Request { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

/// 8 machines (threads, each with its own client) lock, hold and unlock over max=2 while one
/// of three members is killed half-way. etcd's own revision history of the key never shows a
/// third holder, and every machine finishes its rounds.
#[test]
fn eight_lockers_on_three_members_never_exceed_max_even_when_a_member_dies() {
    let mut cluster = Cluster::start(3);
    let eps = cluster.client_urls();
    let key = semaphore_key(Some("rollout"));
    store::set_max(&store(&cluster, &key), 2).unwrap();

    const ROUNDS: usize = 6;
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for t in 0..8 {
            let (eps, key, done) = (&eps, &key, &done);
            sc.spawn(move || {
                let mut config = EtcdConfig::with_endpoints(eps);
                config.timeout = Duration::from_secs(10);
                let s = EtcdStore::connect(&config, key.as_str()).unwrap();
                let me = format!("machine-{t}");
                let deadline = Instant::now() + Duration::from_secs(240);
                let mut rounds = 0;
                while rounds < ROUNDS {
                    assert!(Instant::now() < deadline, "{me} starved after {rounds}");
                    let acquire = Op::Acquire {
                        holder: me.clone(),
                        now: 0,
                        ttl_secs: None,
                    };
                    match store::update(&s, &acquire, DEFAULT_ATTEMPTS) {
                        Ok(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            release(&s, &me);
                            rounds += 1;
                            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        // Full, contended, or a member just died: back off and try again.
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            });
        }
        // Kill a member once the rollout is under way.
        let start = Instant::now();
        while done.load(std::sync::atomic::Ordering::SeqCst) < 8 * ROUNDS / 3 {
            assert!(start.elapsed() < Duration::from_secs(120), "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster.kill(0);
    });
    assert!(!cluster.is_listening(0));
    assert_eq!(done.into_inner(), 8 * ROUNDS);

    let s = store(&cluster, &key);
    let history = s.history().unwrap();
    // set-max, then an acquire and a release per round (a release may be retried after a
    // lost answer, and a retried write that finds its work done writes nothing).
    assert!(history.len() > 2 * 8 * ROUNDS, "{}", history.len());
    let mut most = 0;
    for (rev, json) in &history {
        let v = Semaphore::from_json(json.as_bytes()).unwrap();
        assert!(v.holders().len() <= 2, "revision {rev}: {json}");
        assert_eq!(v.semaphore, v.max - v.holders().len() as i64, "{json}");
        most = most.max(v.holders().len());
    }
    assert_eq!(most, 2, "the test never had two holders at once");
    // etcdctl agrees with the client on the newest value.
    let live = (1..3)
        .map(|i| cluster.client_url(i))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(value_in_etcd(&live, &key), history.last().unwrap().1);
}

fn release(s: &EtcdStore, me: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store::update(s, &Op::Release(me.into()), DEFAULT_ATTEMPTS) {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{me}: release failed ({e}); again");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{me}: release never succeeded: {e}"),
        }
    }
}
