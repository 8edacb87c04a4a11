//! When the agent checks next: update_engine's schedule (`update_check_scheduler.cc`) as an
//! explicit state machine. The first check comes 7 min ± 5 after start; then every 45 min ± 5,
//! or the server's PollInterval (± a ninth of it) when it sent one; after a server error (5xx) or a
//! network failure the interval doubles per failure (± half of it), capped at 4 h.
//! [`next_wake`] is pure: the caller passes the clock and the jitter.

use std::time::Duration;

use super::check::{CheckReport, CheckResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// Started, no check yet.
    Starting,
    /// The last check ended normally (no update, staged, a refused offer).
    Idle,
    /// The last `failures` checks in a row failed at the server or on the network.
    BackingOff { failures: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub first: Duration,
    pub first_fuzz: Duration,
    pub interval: Duration,
    pub fuzz: Duration,
    pub max_backoff: Duration,
}

impl Default for Timing {
    /// update_engine's values.
    fn default() -> Self {
        Timing {
            first: Duration::from_secs(7 * 60),
            first_fuzz: Duration::from_secs(10 * 60),
            interval: Duration::from_secs(45 * 60),
            fuzz: Duration::from_secs(10 * 60),
            max_backoff: Duration::from_secs(4 * 3600),
        }
    }
}

/// The state after a check.
pub fn after_check(state: AgentState, report: &CheckReport) -> AgentState {
    let failed = matches!(
        report.result,
        CheckResult::ServerError | CheckResult::UpdateFailed
    ) && report.server_or_network;
    match (failed, state) {
        (false, _) => AgentState::Idle,
        (true, AgentState::BackingOff { failures }) => AgentState::BackingOff {
            failures: failures.saturating_add(1),
        },
        (true, _) => AgentState::BackingOff { failures: 1 },
    }
}

/// The delay until the next check. `poll_interval` is the server's last PollInterval (seconds);
/// `jitter` in [-1, 1] spreads machines out (random in the agent, fixed in tests).
pub fn next_wake(
    state: AgentState,
    poll_interval: Option<u32>,
    timing: &Timing,
    jitter: f64,
) -> Duration {
    let j = jitter.clamp(-1.0, 1.0);
    let spread = |base: Duration, fuzz: Duration| -> Duration {
        let secs = base.as_secs_f64() + j * fuzz.as_secs_f64() / 2.0;
        Duration::from_secs_f64(secs.max(1.0))
    };
    let interval = poll_interval
        .filter(|p| *p > 0)
        .map_or(timing.interval, |p| Duration::from_secs(u64::from(p)));
    match state {
        AgentState::Starting => spread(timing.first, timing.first_fuzz),
        AgentState::Idle => {
            let fuzz = if poll_interval.is_some() {
                interval / 9 * 2
            } else {
                timing.fuzz
            };
            spread(interval, fuzz)
        }
        AgentState::BackingOff { failures } => {
            let factor = 1u32 << failures.min(16);
            let base = interval.saturating_mul(factor).min(timing.max_backoff);
            spread(base, base).min(timing.max_backoff)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mins(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    fn report(result: CheckResult, server_or_network: bool) -> CheckReport {
        CheckReport {
            result,
            status: "IDLE",
            server: String::new(),
            group: String::new(),
            running_version: String::new(),
            offered_version: None,
            message: String::new(),
            poll_interval: None,
            events_sent: vec![],
            events_queued: 0,
            exit_code: 0,
            server_or_network,
        }
    }

    #[test]
    fn first_check_is_2_to_12_minutes_after_start() {
        let t = Timing::default();
        assert_eq!(next_wake(AgentState::Starting, None, &t, -1.0), mins(2));
        assert_eq!(next_wake(AgentState::Starting, None, &t, 0.0), mins(7));
        assert_eq!(next_wake(AgentState::Starting, None, &t, 1.0), mins(12));
        assert_eq!(next_wake(AgentState::Starting, Some(60), &t, 1.0), mins(12));
    }

    #[test]
    fn then_every_45_minutes_or_the_servers_poll_interval() {
        let t = Timing::default();
        assert_eq!(next_wake(AgentState::Idle, None, &t, -1.0), mins(40));
        assert_eq!(next_wake(AgentState::Idle, None, &t, 1.0), mins(50));
        assert_eq!(next_wake(AgentState::Idle, Some(900), &t, 0.0), mins(15));
        assert_eq!(
            next_wake(AgentState::Idle, Some(900), &t, 1.0),
            mins(15) + Duration::from_secs(100)
        );
        assert_eq!(next_wake(AgentState::Idle, Some(0), &t, 0.0), mins(45));
    }

    #[test]
    fn failures_double_up_to_four_hours() {
        let t = Timing::default();
        let at = |n| next_wake(AgentState::BackingOff { failures: n }, None, &t, 0.0);
        assert_eq!(at(1), mins(90));
        assert_eq!(at(2), mins(180));
        assert_eq!(at(3), mins(240));
        assert_eq!(at(30), mins(240));
        let most = next_wake(AgentState::BackingOff { failures: 2 }, None, &t, 1.0);
        assert_eq!(most, mins(240));
        let least = next_wake(AgentState::BackingOff { failures: 1 }, None, &t, -1.0);
        assert_eq!(least, mins(45));
    }

    #[test]
    fn the_state_machine_backs_off_only_on_server_and_network_failures() {
        let s = after_check(
            AgentState::Starting,
            &report(CheckResult::ServerError, true),
        );
        assert_eq!(s, AgentState::BackingOff { failures: 1 });
        let s = after_check(s, &report(CheckResult::UpdateFailed, true));
        assert_eq!(s, AgentState::BackingOff { failures: 2 });
        // A wrong answer (garbage, a bad payload) is not the network: the normal interval.
        let s2 = after_check(s, &report(CheckResult::ServerError, false));
        assert_eq!(s2, AgentState::Idle);
        assert_eq!(
            after_check(s, &report(CheckResult::NoUpdate, false)),
            AgentState::Idle
        );
        assert_eq!(
            after_check(AgentState::Idle, &report(CheckResult::Staged, false)),
            AgentState::Idle
        );
    }
}
