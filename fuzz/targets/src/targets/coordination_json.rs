//! The etcd semaphore JSON (locksmith's value) and the FleetLock request and reply bodies.
//! A semaphore that parses is written and parses to the same; every operation applies or
//! refuses without a panic.

use keel_coordination::fleetlock::{self, HttpRequest};
use keel_coordination::{apply, Op, Semaphore};

pub fn run(data: &[u8]) {
    if let Ok(s) = Semaphore::from_json(data) {
        let json = s.to_json();
        let back = Semaphore::from_json(json.as_bytes()).expect("written JSON parses");
        assert_eq!(back, s, "round trip through {json}");
        let _ = s.expired(1_700_000_000);
        for op in [
            Op::Lock("m1".into()),
            Op::Unlock("m1".into()),
            Op::SetMax(3),
            Op::SetMax(i64::MIN),
            Op::Acquire {
                holder: "m2".into(),
                now: 1_700_000_000,
                ttl_secs: Some(u64::MAX),
            },
            Op::Release("m2".into()),
            Op::Reap { now: i64::MAX },
        ] {
            let _ = apply(&s, &op);
        }
    }
    let req = HttpRequest {
        method: "POST",
        path: "/v1/pre-reboot",
        protocol_header: Some("true"),
        body: data,
    };
    if let Ok((endpoint, params)) = fleetlock::validate(&req, None) {
        let state = Semaphore::from_json(br#"{"semaphore":1,"max":1,"holders":[]}"#).unwrap();
        let (reply, _) = fleetlock::decide(endpoint, &params, &state, 1_700_000_000, Some(600));
        let _ = reply.body();
    }
    let _ = fleetlock::client_outcome(409, data);
    let _ = fleetlock::client_outcome(200, data);
}
