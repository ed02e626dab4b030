//! Where dispatch reads the time for its circuit breakers, so that tests can move it ahead
//! instead of sleeping through a cooldown. Timeouts on upstream calls use tokio's timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The system clock plus an offset that only grows: time passes as usual, and a test can
/// jump ahead (past a breaker's cooldown, say) with [`ShiftedClock::advance`].
#[derive(Default)]
pub struct ShiftedClock {
    ahead_ns: AtomicU64,
}

impl ShiftedClock {
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.ahead_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.ahead_ns.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_runs_ahead_by_what_it_was_advanced() {
        let clock = ShiftedClock::default();
        let before = Instant::now();
        clock.advance(Duration::from_secs(60));
        let now = clock.now();
        assert!(now >= before + Duration::from_secs(60));
        assert!(now < Instant::now() + Duration::from_secs(61));
    }
}
