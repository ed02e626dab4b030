//! A circuit breaker per model: after `threshold` consecutive failures the model is skipped for
//! `cooldown`; then one probe request is let through, and its result closes or reopens it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is in flight since then. If it never reports (its client went away), another
    /// probe is allowed after a cooldown.
    HalfOpen {
        since: Instant,
    },
}

impl State {
    /// The value exported in the `triage_circuit_state` gauge.
    pub fn gauge(&self) -> i64 {
        match self {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }
}

#[derive(Debug)]
pub struct Breakers {
    threshold: u32,
    cooldown: Duration,
    states: Mutex<HashMap<String, State>>,
}

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Breakers {
        Breakers {
            threshold,
            cooldown,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a call to `model` may go ahead now, and the state after asking.
    pub fn allow(&self, model: &str, now: Instant) -> (bool, State) {
        let mut states = self.states.lock().expect("breaker lock");
        let state = states
            .entry(model.to_string())
            .or_insert(State::Closed { failures: 0 });
        let allowed = match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::HalfOpen { since: until }
                if now >= until + self.probe_grace(state) =>
            {
                *state = State::HalfOpen { since: now };
                true
            }
            _ => false,
        };
        (allowed, *state)
    }

    /// An open circuit waits until `until`; a stuck probe waits a cooldown after it started.
    fn probe_grace(&self, state: &State) -> Duration {
        match state {
            State::HalfOpen { .. } => self.cooldown,
            _ => Duration::ZERO,
        }
    }

    /// Whether calls to `model` are being refused right now (the policy leaves such models out).
    pub fn is_open(&self, model: &str, now: Instant) -> bool {
        let states = self.states.lock().expect("breaker lock");
        matches!(states.get(model), Some(State::Open { until }) if now < *until)
    }

    pub fn record_success(&self, model: &str) -> State {
        self.set(model, |_| State::Closed { failures: 0 })
    }

    pub fn record_failure(&self, model: &str, now: Instant) -> State {
        let (threshold, cooldown) = (self.threshold, self.cooldown);
        self.set(model, |state| match state {
            State::Closed { failures } if failures + 1 < threshold => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: now + cooldown,
            },
        })
    }

    fn set(&self, model: &str, next: impl FnOnce(State) -> State) -> State {
        let mut states = self.states.lock().expect("breaker lock");
        let state = states
            .entry(model.to_string())
            .or_insert(State::Closed { failures: 0 });
        *state = next(*state);
        *state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_probes_once() {
        let b = Breakers::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..2 {
            b.record_failure("m", t0);
        }
        assert!(b.allow("m", t0).0, "two failures stay closed");
        assert!(matches!(b.record_failure("m", t0), State::Open { .. }));
        assert!(!b.allow("m", t0 + Duration::from_secs(9)).0);
        let (allowed, state) = b.allow("m", t0 + Duration::from_secs(10));
        assert!(allowed && matches!(state, State::HalfOpen { .. }));
        assert!(
            !b.allow("m", t0 + Duration::from_secs(11)).0,
            "only one probe at a time"
        );
        assert_eq!(b.record_success("m"), State::Closed { failures: 0 });
        assert!(b.allow("m", t0 + Duration::from_secs(11)).0);
    }

    #[test]
    fn failed_probe_reopens_and_success_resets_the_count() {
        let b = Breakers::new(2, Duration::from_secs(5));
        let t0 = Instant::now();
        b.record_failure("m", t0);
        b.record_success("m");
        b.record_failure("m", t0);
        assert!(b.allow("m", t0).0, "success reset the count");
        b.record_failure("m", t0);
        assert!(!b.allow("m", t0).0);
        let probe_time = t0 + Duration::from_secs(5);
        assert!(b.allow("m", probe_time).0);
        assert!(matches!(
            b.record_failure("m", probe_time),
            State::Open { until } if until == probe_time + Duration::from_secs(5)
        ));
    }

    #[test]
    fn abandoned_probe_is_replaced_after_a_cooldown() {
        let b = Breakers::new(1, Duration::from_secs(5));
        let t0 = Instant::now();
        b.record_failure("m", t0);
        let probe = t0 + Duration::from_secs(5);
        assert!(b.allow("m", probe).0);
        assert!(!b.allow("m", probe + Duration::from_secs(4)).0);
        assert!(b.allow("m", probe + Duration::from_secs(5)).0);
    }
}
