//! Polling with backoff against a deadline (never a tight loop).

use std::time::Duration;

use tokio::time::{sleep, Instant};

pub(crate) struct Backoff {
    delay: Duration,
    max: Duration,
    deadline: Instant,
}

impl Backoff {
    /// 0.5 s, doubling up to 3 s, until `timeout` from now.
    pub(crate) fn new(timeout: Duration) -> Backoff {
        Backoff {
            delay: Duration::from_millis(500),
            max: Duration::from_secs(3),
            deadline: Instant::now() + timeout,
        }
    }

    /// Sleep before the next attempt; `false` once the deadline has passed
    /// (the caller then gives up).
    pub(crate) async fn wait(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        sleep(self.delay.min(self.deadline - now)).await;
        self.delay = (self.delay * 2).min(self.max);
        true
    }
}
