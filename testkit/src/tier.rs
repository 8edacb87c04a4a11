//! Which tier of the suite is running: `ci/test.sh` runs the CI tier (the default, what CI's
//! 90-minute budget holds); `ci/test.sh --full` sets `KEEL_TIER=full` and also runs the tests
//! marked `#[ignore = "full tier…"]`. A test that checks several variants of one path (both
//! firmwares, many power cuts) asks [`full`] how many to do; the README's table says which
//! scenario runs where.

/// True when `KEEL_TIER=full`.
pub fn full() -> bool {
    std::env::var("KEEL_TIER").is_ok_and(|t| t == "full")
}

/// `ci` in the CI tier, `full` in the full one: the tier's value of a count or a list.
pub fn pick<T>(ci: T, full: T) -> T {
    if self::full() {
        full
    } else {
        ci
    }
}
