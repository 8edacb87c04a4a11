//! Compare-and-swap over any store of the semaphore, and the bounded retry loop locksmith's
//! `lock/lock.go` runs (read, apply, write only if nobody wrote in between).
//!
//! The etcd v3 store (later) implements [`SemaphoreStore`] with a Txn on the key's
//! `mod_revision`. [`MemStore`] is a test double for the retry logic's unit tests only: the
//! integration tests must run against a real etcd.

use std::sync::Mutex;

use thiserror::Error;

use crate::semaphore::{apply, LockError, Op, ParseError, Semaphore};

/// The key's revision as the store reports it (etcd's `mod_revision`). `Revision(0)` means the
/// key does not exist: `get` then returns locksmith's initial value, and a compare-and-swap
/// expecting 0 creates the key (etcd: `If(mod_revision == 0) Then Put`, locksmith's `Init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

/// Where the semaphore lives.
pub trait SemaphoreStore {
    type Error: std::error::Error + Send + Sync + 'static;
    /// The current value and its revision ([`Semaphore::initial`] at `Revision(0)` if absent).
    fn get(&self) -> Result<(Semaphore, Revision), Self::Error>;
    /// Write `new` if the key is still at `expected`; `Ok(false)` when someone wrote first.
    fn compare_and_swap(&self, expected: Revision, new: &Semaphore) -> Result<bool, Self::Error>;
}

/// How many read-apply-write rounds before giving up on a contended key.
pub const DEFAULT_ATTEMPTS: u32 = 16;

#[derive(Debug, Error)]
pub enum StoreError<E: std::error::Error + 'static> {
    /// locksmith's verdict on the operation (not retried here: the caller backs off).
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("semaphore store: {0}")]
    Store(#[source] E),
    #[error("semaphore changed under us {0} times in a row; giving up")]
    Contention(u32),
}

/// Read, apply `op`, compare-and-swap; on a lost race, again, at most `attempts` times. An
/// operation that changes nothing writes nothing. Returns the state it left (or found).
pub fn update<S: SemaphoreStore>(
    store: &S,
    op: &Op,
    attempts: u32,
) -> Result<Semaphore, StoreError<S::Error>> {
    for _ in 0..attempts {
        let (cur, rev) = store.get().map_err(StoreError::Store)?;
        let new = apply(&cur, op)?;
        if new == cur {
            return Ok(new);
        }
        if store
            .compare_and_swap(rev, &new)
            .map_err(StoreError::Store)?
        {
            return Ok(new);
        }
    }
    Err(StoreError::Contention(attempts))
}

/// locksmith `lock`: exactly its semantics ([`Op::Lock`]).
pub fn lock<S: SemaphoreStore>(store: &S, holder: &str) -> Result<Semaphore, StoreError<S::Error>> {
    update(store, &Op::Lock(holder.into()), DEFAULT_ATTEMPTS)
}

/// locksmith `unlock` (the operator's `unlock ID` too).
pub fn unlock<S: SemaphoreStore>(
    store: &S,
    holder: &str,
) -> Result<Semaphore, StoreError<S::Error>> {
    update(store, &Op::Unlock(holder.into()), DEFAULT_ATTEMPTS)
}

/// locksmith `set-max`: returns the old max and the new state (`Old-Max:` / `Max:`).
pub fn set_max<S: SemaphoreStore>(
    store: &S,
    max: i64,
) -> Result<(i64, Semaphore), StoreError<S::Error>> {
    for _ in 0..DEFAULT_ATTEMPTS {
        let (cur, rev) = store.get().map_err(StoreError::Store)?;
        let new = apply(&cur, &Op::SetMax(max))?;
        if new == cur
            || store
                .compare_and_swap(rev, &new)
                .map_err(StoreError::Store)?
        {
            return Ok((cur.max, new));
        }
    }
    Err(StoreError::Contention(DEFAULT_ATTEMPTS))
}

/// locksmith `status`: the value as stored.
pub fn status<S: SemaphoreStore>(store: &S) -> Result<Semaphore, StoreError<S::Error>> {
    Ok(store.get().map_err(StoreError::Store)?.0)
}

/// A test double: the JSON text and a revision counter behind a mutex. It stores the bytes
/// locksmith would see, so every write is also parsed back. `conflicts` makes that many
/// compare-and-swaps lose (as if another writer got in first, bumping the revision).
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    value: Option<String>,
    revision: i64,
    conflicts: u32,
    writes: Vec<String>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_value(json: &str) -> Self {
        let s = Self::new();
        let mut i = s.inner.lock().unwrap();
        i.value = Some(json.into());
        i.revision = 1;
        drop(i);
        s
    }

    /// The next `n` compare-and-swaps fail as lost races.
    pub fn inject_conflicts(&self, n: u32) {
        self.inner.lock().unwrap().conflicts = n;
    }

    /// Every value written, in order (the revision history).
    pub fn history(&self) -> Vec<String> {
        self.inner.lock().unwrap().writes.clone()
    }
}

impl SemaphoreStore for MemStore {
    type Error = ParseError;

    fn get(&self) -> Result<(Semaphore, Revision), ParseError> {
        let i = self.inner.lock().unwrap();
        match &i.value {
            None => Ok((Semaphore::initial(), Revision(0))),
            Some(v) => Ok((Semaphore::from_json(v.as_bytes())?, Revision(i.revision))),
        }
    }

    fn compare_and_swap(&self, expected: Revision, new: &Semaphore) -> Result<bool, ParseError> {
        let mut i = self.inner.lock().unwrap();
        if i.conflicts > 0 {
            i.conflicts -= 1;
            i.revision += 1;
            return Ok(false);
        }
        let current = if i.value.is_some() { i.revision } else { 0 };
        if current != expected.0 {
            return Ok(false);
        }
        let json = new.to_json();
        i.revision += 1;
        i.value = Some(json.clone());
        i.writes.push(json);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_key_is_created_with_locksmiths_initial_value() {
        let s = MemStore::new();
        assert_eq!(status(&s).unwrap(), Semaphore::initial());
        assert!(s.history().is_empty());
        lock(&s, "a").unwrap();
        assert_eq!(
            s.history(),
            vec![r#"{"semaphore":0,"max":1,"holders":["a"]}"#]
        );
    }

    #[test]
    fn lost_races_are_retried_then_bounded() {
        let s = MemStore::new();
        s.inject_conflicts(3);
        assert_eq!(lock(&s, "a").unwrap().holders(), ["a"]);
        s.inject_conflicts(DEFAULT_ATTEMPTS);
        assert!(matches!(
            unlock(&s, "a"),
            Err(StoreError::Contention(DEFAULT_ATTEMPTS))
        ));
        assert!(status(&s).unwrap().holds("a"));
    }

    #[test]
    fn lock_errors_are_not_retried_and_write_nothing() {
        let s = MemStore::with_value(r#"{"semaphore":0,"max":1,"holders":["a"]}"#);
        assert_eq!(lock(&s, "a").unwrap_err().to_string(), "semaphore is at 0");
        assert_eq!(
            unlock(&s, "b").unwrap_err().to_string(),
            "holder does not exist"
        );
        assert!(s.history().is_empty());
        // Keel's idempotent acquire by the holder: success, and no write either.
        let op = Op::Acquire {
            holder: "a".into(),
            now: 0,
            ttl_secs: None,
        };
        update(&s, &op, DEFAULT_ATTEMPTS).unwrap();
        assert!(s.history().is_empty());
    }

    #[test]
    fn set_max_reports_old_and_new() {
        let s = MemStore::new();
        let (old, new) = set_max(&s, 3).unwrap();
        assert_eq!((old, new.max, new.semaphore), (1, 3, 3));
        assert_eq!(set_max(&s, 3).unwrap().0, 3);
        assert_eq!(s.history().len(), 1);
    }

    #[test]
    fn a_parse_error_is_the_stores() {
        let s = MemStore::with_value("asdf");
        assert!(matches!(lock(&s, "a"), Err(StoreError::Store(_))));
    }

    #[test]
    fn concurrent_lockers_never_exceed_max() {
        // 8 threads each lock, hold, unlock 20 times over max=2; every value ever written has
        // at most two holders, and the count always equals max - holders.
        let s = MemStore::new();
        set_max(&s, 2).unwrap();
        std::thread::scope(|sc| {
            for t in 0..8 {
                let s = &s;
                sc.spawn(move || {
                    let me = format!("m{t}");
                    let mut done = 0;
                    while done < 20 {
                        match update(s, &Op::Lock(me.clone()), 1000) {
                            Ok(_) => {
                                std::thread::yield_now();
                                update(s, &Op::Unlock(me.clone()), 1000).unwrap();
                                done += 1;
                            }
                            Err(StoreError::Lock(_)) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
        });
        let hist = s.history();
        assert_eq!(hist.len(), 1 + 8 * 20 * 2);
        for v in hist {
            let v = Semaphore::from_json(v.as_bytes()).unwrap();
            assert!(v.holders().len() <= 2, "{v:?}");
            assert_eq!(v.semaphore, v.max - v.holders().len() as i64);
        }
        assert_eq!(status(&s).unwrap().holders(), [] as [String; 0]);
    }
}
