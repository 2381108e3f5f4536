//! The host-wide budget of open registrations: a token bucket that knows nothing about who
//! asks (no IPs), so a flood spends the budget but never learns or stores anything.

use std::sync::Mutex;
use std::time::Instant;

/// `per_hour` accounts an hour, at most `per_hour` at once.
pub struct RateLimit {
    /// Tokens refilled per second.
    per_second: f64,
    /// The bucket's size.
    capacity: f64,
    /// Tokens left and when they were counted.
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn per_hour(per_hour: u32) -> RateLimit {
        let capacity = f64::from(per_hour);
        RateLimit {
            per_second: capacity / 3600.0,
            capacity,
            bucket: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> bool {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (tokens, counted) = *bucket;
        let elapsed = now.saturating_duration_since(counted).as_secs_f64();
        let tokens = (tokens + elapsed * self.per_second).min(self.capacity);
        let (left, taken) = if tokens >= 1.0 {
            (tokens - 1.0, true)
        } else {
            (tokens, false)
        };
        *bucket = (left, now.max(counted));
        taken
    }

    /// How long until the next token, for tests and messages.
    #[cfg(test)]
    fn refill_time(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_the_budget_then_refills() {
        let limit = RateLimit::per_hour(2);
        let start = Instant::now();
        assert!(limit.try_take_at(start));
        assert!(limit.try_take_at(start));
        assert!(!limit.try_take_at(start));
        assert!(limit.try_take_at(start + limit.refill_time()));
        assert!(!limit.try_take_at(start + limit.refill_time()));
    }

    #[test]
    fn zero_refuses_everything() {
        assert!(!RateLimit::per_hour(0).try_take());
    }
}
