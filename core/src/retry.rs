//! Retries of idempotent backend calls, decided by [`Error::is_retryable`].
//!
//! Backends say whether a failure is worth retrying when they convert it into an
//! [`Error`] (a daemon that does not answer, a proxy restarting, a serialization
//! failure in the database); [`RetryPolicy::run`] reads that flag and nothing else,
//! never the message text. It retries a bounded number of times, pausing between
//! attempts with exponential backoff and jitter (so several callers hit by one outage
//! do not come back in lock-step).
//!
//! Only wrap operations that are safe to repeat: reading a status, listing, writing a
//! route by id ([`crate::Router::upsert`] replaces, [`crate::Router::remove`] of a
//! missing route succeeds). The engine wraps exactly those; it never retries a build
//! or an instance start, which would run twice.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use wharf_core::{retry::RetryPolicy, Error, ErrorKind};
//!
//! let policy = RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(5));
//! let calls = AtomicU32::new(0);
//! // Fails twice with a retryable error, then answers.
//! let answer = policy
//!     .run(|| async {
//!         match calls.fetch_add(1, Ordering::SeqCst) {
//!             0 | 1 => Err(Error::unavailable("proxy restarting")),
//!             _ => Ok("routed"),
//!         }
//!     })
//!     .await;
//! assert_eq!(answer.unwrap(), "routed");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//!
//! // A refusal is not retried.
//! calls.store(0, Ordering::SeqCst);
//! let refused: Result<(), _> = policy
//!     .run(|| async {
//!         calls.fetch_add(1, Ordering::SeqCst);
//!         Err(Error::invalid("bad hostname"))
//!     })
//!     .await;
//! assert_eq!(refused.unwrap_err().kind(), ErrorKind::InvalidInput);
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! # });
//! ```

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// How often and how patiently to retry an idempotent operation.
///
/// The pause before retry `n` (1-based) is drawn uniformly from `[d/2, d]` where
/// `d = min(initial_backoff * 2^(n-1), max_backoff)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, pausing about 100 ms, 200 ms and 400 ms (at most 2 s) between them:
    /// rides out a proxy reload or a daemon restart without holding a deployment up
    /// for long when the backend is really down.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in all (at least 1), the first pause
    /// `initial_backoff`, doubling up to `max_backoff`.
    pub fn new(max_attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            max_backoff: max_backoff.max(initial_backoff),
        }
    }

    /// One attempt, no retry.
    pub fn none() -> Self {
        Self::new(1, Duration::ZERO, Duration::ZERO)
    }

    /// The most attempts made (the first included).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The pause before retry `n` (1 for the first retry), jitter included.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = n.saturating_sub(1).min(31);
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let half = full / 2;
        half + half.mul_f64(unit_random())
    }

    /// Runs `op` until it succeeds, fails with an error that is not retryable, or has
    /// been tried [`max_attempts`](Self::max_attempts) times. The last error is
    /// returned; when retries were made, its message says how many attempts failed.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) if attempt >= self.max_attempts => return Err(gave_up(e, attempt)),
                Err(e) => {
                    let pause = self.backoff(attempt);
                    tracing::debug!(error = %e, attempt, ?pause, "retryable failure; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }
}

fn gave_up(e: Error, attempts: u32) -> Error {
    if attempts > 1 {
        e.context(format!("gave up after {attempts} attempts"))
    } else {
        e
    }
}

/// A number in `[0, 1)` from the OS generator (through `uuid`, already a dependency).
fn unit_random() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair().0 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy::new(attempts, Duration::from_millis(1), Duration::from_millis(4))
    }

    /// Fails `failures` times with `err`, then answers with the attempt number.
    async fn flaky(calls: &AtomicU32, failures: u32, err: fn() -> Error) -> Result<u32> {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= failures {
            Err(err())
        } else {
            Ok(n)
        }
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let got = quick(4)
            .run(|| flaky(&calls, 3, || Error::timeout("slow")))
            .await;
        assert_eq!(got.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_failure_that_is_not_retryable_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        // Unavailable is retryable by default; the flag, not the kind, decides.
        let err = quick(4)
            .run(|| {
                flaky(&calls, 1, || {
                    Error::unavailable("bad creds").with_retryable(false)
                })
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.message(), "bad creds");
    }

    #[tokio::test]
    async fn retries_stop_at_the_bound_with_the_last_error() {
        let calls = AtomicU32::new(0);
        let err = quick(3)
            .run(|| flaky(&calls, u32::MAX, || Error::unavailable("down")))
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(err.is_retryable());
        assert_eq!(err.message(), "gave up after 3 attempts: down");
    }

    #[tokio::test]
    async fn no_retry_policy_tries_once() {
        let calls = AtomicU32::new(0);
        let err = RetryPolicy::none()
            .run(|| flaky(&calls, 1, || Error::unavailable("down")))
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.message(), "down");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let p = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_millis(1000));
        for (n, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)] {
            for _ in 0..50 {
                let d = p.backoff(n).as_millis();
                assert!(
                    (full / 2..=full).contains(&d),
                    "retry {n}: {d} ms not in [{}, {full}]",
                    full / 2
                );
            }
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(3)).collect();
        assert!(distinct.len() > 1, "no jitter: {distinct:?}");
        assert_eq!(
            RetryPolicy::new(0, Duration::ZERO, Duration::ZERO).max_attempts(),
            1
        );
    }
}
