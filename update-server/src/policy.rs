//! Rollout policy: whether a group may grant one more machine an update now (Nebraska's
//! `enforceRolloutPolicy`), and when safe mode pauses a group.

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::store::{Instance, Policy, RolloutCounts};

/// Why an update is held back; the client is told `noupdate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Paused,
    OutsideOfficeHours,
    MaxUpdatesPerPeriod,
    MaxUpdatesInProgress,
    /// This machine is already downloading or installing an update.
    InProgressOnInstance,
    /// The group's time zone cannot be loaded.
    BadTimeZone(String),
}

impl Hold {
    /// Nebraska's names for these (its `error-…` app statuses), for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Hold::Paused => "updatesDisabled",
            Hold::OutsideOfficeHours => "outsideOfficeHours",
            Hold::MaxUpdatesPerPeriod => "maxUpdatesPerPeriodLimitReached",
            Hold::MaxUpdatesInProgress => "maxConcurrentUpdatesLimitReached",
            Hold::InProgressOnInstance => "updateInProgressOnInstance",
            Hold::BadTimeZone(_) => "badTimeZone",
        }
    }
}

/// Monday to Friday, 09:00 to 17:00 in `tz`, at unix time `now`.
pub fn in_office_hours(now: i64, tz: &str) -> Result<bool, String> {
    let zone = TimeZone::get(tz).map_err(|e| format!("time zone {tz:?}: {e}"))?;
    let t = Timestamp::from_second(now).map_err(|e| e.to_string())?;
    let local = zone.to_datetime(t);
    let weekday = !matches!(local.weekday(), Weekday::Saturday | Weekday::Sunday);
    Ok(weekday && (9..17).contains(&local.hour()))
}

/// Check a time zone name when a policy is set.
pub fn check_time_zone(tz: &str) -> Result<(), String> {
    in_office_hours(0, tz).map(|_| ())
}

/// May `instance` (None: first contact) be granted an update to `target` now?
pub fn decide(
    policy: &Policy,
    counts: &RolloutCounts,
    instance: Option<&Instance>,
    target: &str,
    now: i64,
) -> Result<(), Hold> {
    if policy.paused {
        return Err(Hold::Paused);
    }
    if let Some(i) = instance {
        let current = i.target_version.as_deref() == Some(target)
            && i.granted_at
                .is_some_and(|at| at >= now - policy.update_timeout_seconds);
        if current {
            match i.status.as_str() {
                // It asked again before starting: same grant, already counted.
                "granted" => return Ok(()),
                "downloading" | "downloaded" | "installed" => {
                    return Err(Hold::InProgressOnInstance)
                }
                _ => {}
            }
        }
    }
    if policy.office_hours {
        match in_office_hours(now, &policy.timezone) {
            Ok(true) => {}
            Ok(false) => return Err(Hold::OutsideOfficeHours),
            Err(e) => return Err(Hold::BadTimeZone(e)),
        }
    }
    let mut max = policy.max_updates_per_period;
    if policy.safe_mode && counts.completed == 0 {
        // Nobody has this version yet: one machine at a time until one succeeds.
        max = Some(max.map_or(1, |m| m.min(1)));
    }
    if let Some(m) = max {
        if counts.granted_in_period >= m {
            return Err(Hold::MaxUpdatesPerPeriod);
        }
        if counts.in_progress >= m {
            return Err(Hold::MaxUpdatesInProgress);
        }
    }
    Ok(())
}

/// Safe mode: should the group pause itself now?
pub fn safe_mode_trips(policy: &Policy, counts: &RolloutCounts) -> bool {
    policy.safe_mode && !policy.paused && counts.failed >= policy.safe_mode_failures.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-01 is a Tuesday.
    const TUESDAY_0830_UTC: i64 = 1_796_113_800;

    #[test]
    fn office_hours_follow_the_zone() {
        assert!(!in_office_hours(TUESDAY_0830_UTC, "UTC").unwrap());
        // 09:30 in Berlin (UTC+1 in December).
        assert!(in_office_hours(TUESDAY_0830_UTC, "Europe/Berlin").unwrap());
        // 03:30 in New York.
        assert!(!in_office_hours(TUESDAY_0830_UTC, "America/New_York").unwrap());
        // Saturday 10:30 UTC.
        assert!(!in_office_hours(TUESDAY_0830_UTC + 4 * 86_400 + 7_200, "UTC").unwrap());
        assert!(in_office_hours(TUESDAY_0830_UTC + 7_200, "UTC").unwrap());
        assert!(check_time_zone("Mars/Olympus").is_err());
    }

    fn counts(granted: u32, in_progress: u32, completed: u32) -> RolloutCounts {
        RolloutCounts {
            granted_in_period: granted,
            in_progress,
            completed,
            ..Default::default()
        }
    }

    #[test]
    fn limits_pause_and_safe_mode() {
        let now = TUESDAY_0830_UTC;
        let mut p = Policy::default();
        assert_eq!(decide(&p, &counts(100, 100, 0), None, "2.0.0", now), Ok(()));
        p.max_updates_per_period = Some(2);
        assert_eq!(decide(&p, &counts(1, 1, 0), None, "2.0.0", now), Ok(()));
        assert_eq!(
            decide(&p, &counts(2, 0, 0), None, "2.0.0", now),
            Err(Hold::MaxUpdatesPerPeriod)
        );
        assert_eq!(
            decide(&p, &counts(0, 2, 0), None, "2.0.0", now),
            Err(Hold::MaxUpdatesInProgress)
        );
        p.safe_mode = true;
        assert_eq!(
            decide(&p, &counts(1, 0, 0), None, "2.0.0", now),
            Err(Hold::MaxUpdatesPerPeriod)
        );
        assert_eq!(decide(&p, &counts(1, 0, 1), None, "2.0.0", now), Ok(()));
        p.office_hours = true;
        assert_eq!(
            decide(&p, &counts(0, 0, 1), None, "2.0.0", now),
            Err(Hold::OutsideOfficeHours)
        );
        p.timezone = "Europe/Berlin".into();
        assert_eq!(decide(&p, &counts(0, 0, 1), None, "2.0.0", now), Ok(()));
        p.paused = true;
        assert_eq!(
            decide(&p, &counts(0, 0, 1), None, "2.0.0", now),
            Err(Hold::Paused)
        );

        let mut failed = RolloutCounts::default();
        let mut p = Policy {
            safe_mode: true,
            safe_mode_failures: 2,
            ..Default::default()
        };
        failed.failed = 1;
        assert!(!safe_mode_trips(&p, &failed));
        failed.failed = 2;
        assert!(safe_mode_trips(&p, &failed));
        p.safe_mode = false;
        assert!(!safe_mode_trips(&p, &failed));
    }

    #[test]
    fn a_machine_mid_update_is_not_granted_again_until_it_times_out() {
        let now = TUESDAY_0830_UTC;
        let p = Policy {
            max_updates_per_period: Some(1),
            ..Default::default()
        };
        let mut i = Instance {
            machine_id: "m".into(),
            app_id: "a".into(),
            alias: None,
            group: "g".into(),
            version: "1.0.0".into(),
            status: "granted".into(),
            error_code: None,
            first_seen: 0,
            last_seen: now,
            hidden: false,
            granted_at: Some(now - 60),
            target_version: Some("2.0.0".into()),
        };
        // Asking again after a grant: the same grant, even at the limit.
        assert_eq!(decide(&p, &counts(1, 1, 0), Some(&i), "2.0.0", now), Ok(()));
        i.status = "downloading".into();
        assert_eq!(
            decide(&p, &counts(1, 1, 0), Some(&i), "2.0.0", now),
            Err(Hold::InProgressOnInstance)
        );
        i.granted_at = Some(now - 7200);
        assert_eq!(decide(&p, &counts(0, 0, 0), Some(&i), "2.0.0", now), Ok(()));
    }
}
