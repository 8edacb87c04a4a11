//! locksmith's reboot semaphore (`lock/semaphore.go`): the JSON value, read and written as Go's
//! `encoding/json` does, and its transitions as one pure function, [`apply`].
//!
//! [`Op::Lock`], [`Op::Unlock`] and [`Op::SetMax`] are locksmith's operations, error strings and
//! quirks included (a holder re-locking gets `semaphore is at 0`; set-max below the holder count
//! drives the count negative). [`Op::Acquire`], [`Op::Release`] and [`Op::Reap`] are Keel's
//! improvements, kept apart so that each difference is explicit (see the README).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use thiserror::Error;

/// The JSON field Keel adds for per-holder expiry. locksmith's Go struct has no such field, so
/// `json.Unmarshal` ignores it; a locksmith client that writes the value back drops it, which
/// leaves those holds without expiry (locksmith's own behaviour), never wrong.
pub const EXPIRES_FIELD: &str = "keel_expires";

/// The semaphore as stored. `holders: None` is Go's nil slice (`"holders":null`, what
/// locksmith's `Init` writes); `Some(vec![])` is the empty slice left by the last unlock
/// (`"holders":[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Semaphore {
    /// Free slots (locksmith's `semaphore`); can be negative after set-max (rows 14-17).
    pub semaphore: i64,
    pub max: i64,
    pub holders: Option<Vec<String>>,
    /// Keel: holder → unix time (seconds) from which the hold may be reaped. Only for holders
    /// in `holders`; empty for locksmith-only use, and then not written at all.
    pub expires: BTreeMap<String, i64>,
}

/// locksmith's errors, with its exact strings.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LockError {
    #[error("semaphore is at {0}")]
    SemaphoreAt(i64),
    #[error("holder exists")]
    HolderExists,
    #[error("holder does not exist")]
    HolderDoesNotExist,
}

/// A value locksmith's `Get` would refuse too.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("semaphore value is not JSON: {0}")]
    Json(String),
    #[error("semaphore value: cannot unmarshal {found} into field {field} of type {expected}")]
    Type {
        field: &'static str,
        found: String,
        expected: &'static str,
    },
}

/// One change to the semaphore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// locksmith `Lock(h)`: count first (`semaphore is at N`), then `holder exists`.
    Lock(String),
    /// locksmith `Unlock(h)` (also the operator's `unlock ID`): `holder does not exist` if absent.
    Unlock(String),
    /// locksmith `SetMax(n)`: never fails, `semaphore += n - max`, holders untouched.
    SetMax(i64),
    /// Keel: reap expired holders, then lock; a holder that already holds succeeds (locksmith#58)
    /// and gets its expiry renewed. `ttl_secs: None` = the hold never expires.
    Acquire {
        holder: String,
        now: i64,
        ttl_secs: Option<u64>,
    },
    /// Keel: unlock, but a holder that does not hold is success (nothing to do), as locksmithd's
    /// start-up `unlockHeldLocks` and FleetLock's steady-state treat it.
    Release(String),
    /// Keel: drop every holder whose expiry is `<= now`, freeing its slot.
    Reap { now: i64 },
}

impl Semaphore {
    /// What locksmith's `Init` creates: `{"semaphore":1,"max":1,"holders":null}`.
    pub fn initial() -> Self {
        Semaphore {
            semaphore: 1,
            max: 1,
            holders: None,
            expires: BTreeMap::new(),
        }
    }

    pub fn holders(&self) -> &[String] {
        self.holders.as_deref().unwrap_or(&[])
    }

    pub fn holds(&self, holder: &str) -> bool {
        find_holder(self.holders(), holder).is_ok()
    }

    /// The holders whose expiry is `<= now`.
    pub fn expired(&self, now: i64) -> Vec<String> {
        self.expires
            .iter()
            .filter(|(h, t)| **t <= now && self.holds(h))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Parse as locksmith's `json.Unmarshal` into its struct: field names match
    /// case-insensitively, unknown fields are ignored, `null` leaves a field at its zero value,
    /// a number that is not an integer is an error, and a top-level `null` is the zero value.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ParseError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
        let obj = match v {
            Value::Null => return Ok(Semaphore::default()),
            Value::Object(o) => o,
            other => {
                return Err(ParseError::Type {
                    field: "",
                    found: kind(&other),
                    expected: "lock.Semaphore",
                })
            }
        };
        let mut s = Semaphore {
            semaphore: int_field(&obj, "semaphore")?,
            max: int_field(&obj, "max")?,
            ..Semaphore::default()
        };
        s.holders = match field(&obj, "holders") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|i| match i {
                        Value::String(h) => Ok(h.clone()),
                        Value::Null => Ok(String::new()),
                        other => Err(ParseError::Type {
                            field: "holders",
                            found: kind(other),
                            expected: "string",
                        }),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(other) => {
                return Err(ParseError::Type {
                    field: "holders",
                    found: kind(other),
                    expected: "[]string",
                })
            }
        };
        // Keel's field: lenient, since a malformed entry only means "no expiry" (locksmith's way).
        if let Some(Value::Object(m)) = obj.get(EXPIRES_FIELD) {
            for (h, t) in m {
                if let (Some(t), true) = (t.as_i64(), s.holds(h)) {
                    s.expires.insert(h.clone(), t);
                }
            }
        }
        Ok(s)
    }

    /// Write as Go's `json.Marshal` of locksmith's struct (field order, `null` for a nil slice,
    /// Go's string escaping); Keel's expiry field is appended only when there is one.
    pub fn to_json(&self) -> String {
        let mut out = format!(
            "{{\"semaphore\":{},\"max\":{},\"holders\":",
            self.semaphore, self.max
        );
        match &self.holders {
            None => out.push_str("null"),
            Some(hs) => {
                out.push('[');
                for (i, h) in hs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    go_string(&mut out, h);
                }
                out.push(']');
            }
        }
        let live: Vec<_> = self.expires.iter().filter(|(h, _)| self.holds(h)).collect();
        if !live.is_empty() {
            out.push_str(",\"");
            out.push_str(EXPIRES_FIELD);
            out.push_str("\":{");
            for (i, (h, t)) in live.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_string(&mut out, h);
                out.push_str(&format!(":{t}"));
            }
            out.push('}');
        }
        out.push('}');
        out
    }
}

/// The state after `op`, or locksmith's error (the state is then unchanged: the caller writes
/// nothing). Returns an equal state when there is nothing to change.
pub fn apply(state: &Semaphore, op: &Op) -> Result<Semaphore, LockError> {
    let mut s = state.clone();
    match op {
        Op::Lock(h) => lock(&mut s, h)?,
        Op::Unlock(h) => unlock(&mut s, h)?,
        Op::SetMax(n) => {
            // Semaphore.SetMax: diff := s.Max - max; s.Semaphore -= diff; s.Max = max. Go's
            // int64 wraps; so does this, rather than panic on a value read from etcd.
            s.semaphore = s.semaphore.wrapping_sub(s.max.wrapping_sub(*n));
            s.max = *n;
        }
        Op::Acquire {
            holder,
            now,
            ttl_secs,
        } => {
            reap(&mut s, *now);
            if !s.holds(holder) {
                lock(&mut s, holder)?;
            }
            match ttl_secs {
                Some(ttl) => {
                    s.expires.insert(
                        holder.clone(),
                        now.saturating_add(i64::try_from(*ttl).unwrap_or(i64::MAX)),
                    );
                }
                None => {
                    s.expires.remove(holder);
                }
            }
        }
        Op::Release(h) => {
            if s.holds(h) {
                unlock(&mut s, h)?;
            }
        }
        Op::Reap { now } => reap(&mut s, *now),
    }
    Ok(s)
}

fn lock(s: &mut Semaphore, h: &str) -> Result<(), LockError> {
    if s.semaphore <= 0 {
        return Err(LockError::SemaphoreAt(s.semaphore));
    }
    let at = match find_holder(s.holders(), h) {
        Ok(_) => return Err(LockError::HolderExists),
        Err(at) => at,
    };
    s.holders
        .get_or_insert_with(Vec::new)
        .insert(at, h.to_string());
    s.semaphore -= 1;
    Ok(())
}

fn unlock(s: &mut Semaphore, h: &str) -> Result<(), LockError> {
    let at = find_holder(s.holders(), h).map_err(|_| LockError::HolderDoesNotExist)?;
    if let Some(hs) = s.holders.as_mut() {
        hs.remove(at);
    }
    s.expires.remove(h);
    s.semaphore = s.semaphore.wrapping_add(1);
    Ok(())
}

fn reap(s: &mut Semaphore, now: i64) {
    for h in s.expired(now) {
        // Present by construction of `expired`.
        let _ = unlock(s, &h);
    }
    s.expires
        .retain(|h, _| find_holder(s.holders.as_deref().unwrap_or(&[]), h).is_ok());
}

/// Go's `sort.SearchStrings` then an equality check, as locksmith's `findHolder`: a binary
/// search even when the stored list is not sorted (row 19), so behaviour matches on such lists.
/// `Ok(index)` when found, `Err(insertion point)` when not.
fn find_holder(holders: &[String], h: &str) -> Result<usize, usize> {
    let (mut i, mut j) = (0usize, holders.len());
    while i < j {
        let m = (i + j) / 2;
        if holders[m].as_str() < h {
            i = m + 1;
        } else {
            j = m;
        }
    }
    if i < holders.len() && holders[i] == h {
        Ok(i)
    } else {
        Err(i)
    }
}

/// A field by Go's rule: the exact name, else a case-insensitive match.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn int_field(obj: &Map<String, Value>, name: &'static str) -> Result<i64, ParseError> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(0),
        Some(v @ Value::Number(n)) => n.as_i64().ok_or_else(|| ParseError::Type {
            field: name,
            found: format!("number {}", kind(v)),
            expected: "int",
        }),
        Some(other) => Err(ParseError::Type {
            field: name,
            found: kind(other),
            expected: "int",
        }),
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

/// Go's `encoding/json` string encoding (HTML-safe, as `json.Marshal`; Go 1.19 writes `\b` and
/// `\f` as `\u0008`, `\u000c`).
fn go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `semaphore/max [holders]`, holders `-` for nil.
    fn st(sem: i64, max: i64, holders: Option<&[&str]>) -> Semaphore {
        Semaphore {
            semaphore: sem,
            max,
            holders: holders.map(|h| h.iter().map(|s| s.to_string()).collect()),
            expires: BTreeMap::new(),
        }
    }
    fn lk(h: &str) -> Op {
        Op::Lock(h.into())
    }
    fn ul(h: &str) -> Op {
        Op::Unlock(h.into())
    }
    fn run(start: &Semaphore, ops: &[Op]) -> Result<Semaphore, LockError> {
        ops.iter().try_fold(start.clone(), |s, op| apply(&s, op))
    }

    #[test]
    fn locksmith_get_cases() {
        // locksmith.md §1, TestEtcdLockClientGet (the index comes from etcd, not the JSON).
        assert!(Semaphore::from_json(b"asdf").is_err());
        assert!(Semaphore::from_json(b"{\"semaphore:").is_err());
        assert_eq!(
            Semaphore::from_json(br#"{"semaphore": 1}"#).unwrap(),
            st(1, 0, None)
        );
        assert_eq!(
            Semaphore::from_json(br#"{"semaphore": 1, "max": 2, "holders": ["foo", "bar"]}"#)
                .unwrap(),
            st(1, 2, Some(&["foo", "bar"]))
        );
        assert_eq!(
            Semaphore::from_json(br#"{"semaphore": 89, "index": 4567}"#).unwrap(),
            st(89, 0, None)
        );
    }

    #[test]
    fn go_json_details() {
        assert_eq!(
            Semaphore::from_json(br#"{"Semaphore":2,"MAX":3}"#).unwrap(),
            st(2, 3, None)
        );
        assert_eq!(Semaphore::from_json(b"null").unwrap(), st(0, 0, None));
        // Duplicate keys: the last one wins, as in Go.
        assert_eq!(
            Semaphore::from_json(br#"{"semaphore":1,"semaphore":2}"#).unwrap(),
            st(2, 0, None)
        );
        assert_eq!(
            Semaphore::from_json(br#"{"semaphore":null,"holders":[]}"#).unwrap(),
            st(0, 0, Some(&[]))
        );
        for bad in [
            &br#"{"semaphore":1.5}"#[..],
            br#"{"semaphore":"1"}"#,
            br#"{"holders":"a"}"#,
            br#"{"holders":[1]}"#,
            b"[]",
        ] {
            assert!(
                Semaphore::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn locksmith_set_cases_and_writing() {
        // Init writes nil holders as null (run); Set of a zero Semaphore is fine.
        assert_eq!(
            Semaphore::initial().to_json(),
            r#"{"semaphore":1,"max":1,"holders":null}"#
        );
        assert_eq!(
            Semaphore::default().to_json(),
            r#"{"semaphore":0,"max":0,"holders":null}"#
        );
        // Row 2: after the last unlock the list is empty, not nil.
        let s = run(&Semaphore::initial(), &[lk("a"), ul("a")]).unwrap();
        assert_eq!(s.to_json(), r#"{"semaphore":1,"max":1,"holders":[]}"#);
        assert_eq!(
            st(0, 1, Some(&["a<b>&\"\\\n\u{1}"])).to_json(),
            r#"{"semaphore":0,"max":1,"holders":["a\u003cb\u003e\u0026\"\\\n\u0001"]}"#
        );
        for s in [Semaphore::initial(), s, st(-2, 1, Some(&["a", "b", "c"]))] {
            assert_eq!(Semaphore::from_json(s.to_json().as_bytes()).unwrap(), s);
        }
    }

    #[test]
    fn locksmith_transitions() {
        // locksmith.md §2, rows 1-17 and 19: (row, start, ops, expected end or error).
        type Case = (u32, Semaphore, Vec<Op>, Result<Semaphore, &'static str>);
        let cases: Vec<Case> = vec![
            (
                1,
                st(1, 1, Some(&[])),
                vec![lk("a")],
                Ok(st(0, 1, Some(&["a"]))),
            ),
            (
                2,
                st(0, 1, Some(&["a"])),
                vec![ul("a")],
                Ok(st(1, 1, Some(&[]))),
            ),
            (
                3,
                st(0, 1, Some(&["a"])),
                vec![lk("a")],
                Err("semaphore is at 0"),
            ),
            (
                4,
                st(1, 2, Some(&["a"])),
                vec![lk("a")],
                Err("holder exists"),
            ),
            (
                5,
                st(1, 1, Some(&[])),
                vec![ul("a")],
                Err("holder does not exist"),
            ),
            (
                6,
                st(0, 1, Some(&["a"])),
                vec![ul("b")],
                Err("holder does not exist"),
            ),
            (
                7,
                st(0, 1, Some(&["a"])),
                vec![lk("b")],
                Err("semaphore is at 0"),
            ),
            (
                8,
                st(2, 2, Some(&[])),
                vec![lk("a"), lk("b")],
                Ok(st(0, 2, Some(&["a", "b"]))),
            ),
            (
                9,
                st(0, 2, Some(&["a", "b"])),
                vec![ul("a")],
                Ok(st(1, 2, Some(&["b"]))),
            ),
            (
                10,
                st(3, 3, Some(&[])),
                vec![lk("c"), lk("b")],
                Ok(st(1, 3, Some(&["b", "c"]))),
            ),
            (
                11,
                st(1, 3, Some(&["b", "c"])),
                vec![lk("a")],
                Ok(st(0, 3, Some(&["a", "b", "c"]))),
            ),
            (
                12,
                st(0, 3, Some(&["a", "b", "c"])),
                vec![ul("b"), ul("c"), lk("b")],
                Ok(st(1, 3, Some(&["a", "b"]))),
            ),
            (
                13,
                st(0, 1, Some(&["a"])),
                vec![Op::SetMax(3)],
                Ok(st(2, 3, Some(&["a"]))),
            ),
            (
                14,
                st(0, 3, Some(&["a", "b", "c"])),
                vec![Op::SetMax(1)],
                Ok(st(-2, 1, Some(&["a", "b", "c"]))),
            ),
            (
                15,
                st(-2, 1, Some(&["a", "b", "c"])),
                vec![ul("c")],
                Ok(st(-1, 1, Some(&["a", "b"]))),
            ),
            (
                15,
                st(-2, 1, Some(&["a", "b", "c"])),
                vec![ul("c"), ul("b")],
                Ok(st(0, 1, Some(&["a"]))),
            ),
            (
                16,
                st(0, 1, Some(&["a"])),
                vec![Op::SetMax(0)],
                Ok(st(-1, 0, Some(&["a"]))),
            ),
            (
                16,
                st(0, 1, Some(&["a"])),
                vec![Op::SetMax(0), Op::SetMax(-1)],
                Ok(st(-2, -1, Some(&["a"]))),
            ),
            (
                17,
                st(-1, -1, Some(&[])),
                vec![lk("b")],
                Err("semaphore is at -1"),
            ),
            (
                19,
                st(1, 2, Some(&["foo", "bar"])),
                vec![lk("c")],
                Ok(st(0, 2, Some(&["foo", "bar", "c"]))),
            ),
            // Row 1 from locksmith's real initial value (nil holders).
            (
                1,
                Semaphore::initial(),
                vec![lk("a")],
                Ok(st(0, 1, Some(&["a"]))),
            ),
        ];
        for (row, start, ops, want) in cases {
            let got = run(&start, &ops).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(String::from), "row {row}");
        }
        // TestSetMax as it really runs (indices 0..8, one holder): semaphore == i - 1.
        for i in 0..9 {
            let s = run(&Semaphore::initial(), &[lk("a"), Op::SetMax(i)]).unwrap();
            assert_eq!((s.semaphore, s.max), (i - 1, i));
        }
    }

    fn acq(h: &str, now: i64, ttl: Option<u64>) -> Op {
        Op::Acquire {
            holder: h.into(),
            now,
            ttl_secs: ttl,
        }
    }

    #[test]
    fn keel_acquire_is_idempotent_for_the_holder() {
        // locksmith#58: row 3 with Acquire succeeds and changes nothing.
        let s = st(0, 1, Some(&["a"]));
        assert_eq!(apply(&s, &acq("a", 0, None)).unwrap(), s);
        // Row 4 with Acquire: also success, no second slot taken.
        let s = st(1, 2, Some(&["a"]));
        assert_eq!(apply(&s, &acq("a", 0, None)).unwrap(), s);
        // Others still see locksmith's error.
        assert_eq!(
            apply(&st(0, 1, Some(&["a"])), &acq("b", 0, None))
                .unwrap_err()
                .to_string(),
            "semaphore is at 0"
        );
    }

    #[test]
    fn keel_release_of_a_non_holder_is_success() {
        let s = st(0, 1, Some(&["a"]));
        assert_eq!(apply(&s, &Op::Release("b".into())).unwrap(), s);
        assert_eq!(
            apply(&s, &Op::Release("a".into())).unwrap(),
            st(1, 1, Some(&[]))
        );
    }

    #[test]
    fn keel_expiry() {
        let s = apply(&Semaphore::initial(), &acq("a", 100, Some(60))).unwrap();
        assert_eq!(s.expires.get("a"), Some(&160));
        assert_eq!(
            s.to_json(),
            r#"{"semaphore":0,"max":1,"holders":["a"],"keel_expires":{"a":160}}"#
        );
        // locksmith readers parse it and see a plain hold.
        assert_eq!(Semaphore::from_json(s.to_json().as_bytes()).unwrap(), s);
        // Not yet expired: b waits; the holder renews.
        assert_eq!(
            apply(&s, &acq("b", 159, Some(60))),
            Err(LockError::SemaphoreAt(0))
        );
        assert_eq!(
            apply(&s, &acq("a", 150, Some(60)))
                .unwrap()
                .expires
                .get("a"),
            Some(&210)
        );
        // Expired: b takes the slot.
        let t = apply(&s, &acq("b", 160, Some(60))).unwrap();
        assert_eq!(
            (t.semaphore, t.holders(), t.expires.get("b")),
            (0, &["b".to_string()][..], Some(&220))
        );
        assert_eq!(
            apply(&s, &Op::Reap { now: 200 }).unwrap(),
            st(1, 1, Some(&[]))
        );
        // An operator unlock clears the expiry; no ttl means no expiry.
        assert!(apply(&s, &ul("a")).unwrap().expires.is_empty());
        assert!(apply(&s, &acq("a", 150, None)).unwrap().expires.is_empty());
        // A locksmith client wrote the value back without the field: the hold simply never expires.
        let dropped = Semaphore::from_json(br#"{"semaphore":0,"max":1,"holders":["a"]}"#).unwrap();
        assert_eq!(
            apply(&dropped, &acq("b", i64::MAX, None)),
            Err(LockError::SemaphoreAt(0))
        );
        // Entries for non-holders (a locksmith unlock left them) are ignored and not written.
        let stale = Semaphore::from_json(
            br#"{"semaphore":1,"max":1,"holders":[],"keel_expires":{"a":5,"b":"x"}}"#,
        )
        .unwrap();
        assert_eq!(stale, st(1, 1, Some(&[])));
    }

    /// Found by the `coordination_json` fuzz target: set-max with extreme values (or a value in
    /// etcd holding them) overflowed; Go's int64, and now this, wraps.
    #[test]
    fn set_max_and_unlock_at_the_limits_wrap_as_go_does() {
        let s =
            Semaphore::from_json(br#"{"semaphore":1,"max":2,"holders":["machine-a"]}"#).unwrap();
        let out = apply(&s, &Op::SetMax(i64::MIN)).unwrap();
        assert_eq!(out.max, i64::MIN);
        assert_eq!(
            out.semaphore,
            1i64.wrapping_sub(2i64.wrapping_sub(i64::MIN))
        );
        let full = Semaphore::from_json(
            format!(r#"{{"semaphore":{},"max":1,"holders":["a"]}}"#, i64::MAX).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            apply(&full, &Op::Unlock("a".into())).unwrap().semaphore,
            i64::MIN
        );
    }
}
