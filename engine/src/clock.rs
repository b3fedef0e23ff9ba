//! Time, as the engine sees it: always through a [`Clock`] the embedder passes.
//!
//! Nothing in the engine reads the system time directly, so tests run on a [`ManualClock`]
//! and a failing seed replays exactly.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug {
    /// The current time in milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `millis`.
    pub fn new(millis: u64) -> Self {
        ManualClock {
            now: Arc::new(AtomicU64::new(millis)),
        }
    }

    /// Sets the time to `millis`.
    pub fn set(&self, millis: u64) {
        self.now.store(millis, Ordering::SeqCst);
    }

    /// Moves the time forward by `millis`.
    pub fn advance(&self, millis: u64) {
        self.now.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(10);
        let shared = clock.clone();
        assert_eq!(clock.now_millis(), 10);
        shared.advance(5);
        assert_eq!(clock.now_millis(), 15);
        clock.set(3);
        assert_eq!(shared.now_millis(), 3);
        assert!(SystemClock.now_millis() > 1_600_000_000_000);
    }
}
