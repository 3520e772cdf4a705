//! The retry policy every provider shares: exponential backoff with full
//! jitter, honouring the server's `Retry-After`, bounded both in attempts
//! and in total time.

use std::future::Future;
use std::time::Duration;

use crate::transport::{ErrorKind, TransportError};

/// How often and how patiently to retry temporary failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 0 counts as 1.
    pub max_attempts: u32,
    /// The whole run's deadline, attempts included: an attempt still
    /// running then is cut off, and no wait is started that would end
    /// later.
    pub max_elapsed: Duration,
    /// The delay after the first failure, before jitter.
    pub base_delay: Duration,
    /// The longest backoff delay (a server's `Retry-After` may ask for more).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::standard()
    }
}

impl RetryPolicy {
    /// 5 attempts within 2 minutes, backoff 1 s doubling, capped at 32 s.
    pub fn standard() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(120),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(32),
        }
    }

    /// The delay before attempt `attempt + 1` (attempts count from 1).
    ///
    /// Exponential with jitter: `base_delay * 2^(attempt-1)`, capped at
    /// `max_delay`, then a random value between half of that and all of
    /// it. If the server gave `retry_after`, the delay is at least that,
    /// even beyond `max_delay` ([`run`](Self::run) still keeps to
    /// `max_elapsed`).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let doublings = attempt.saturating_sub(1);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        let ceiling = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let jittered = jitter(ceiling);
        match retry_after {
            Some(asked) => jittered.max(asked),
            None => jittered,
        }
    }

    /// Runs `op(attempt)` (attempts count from 1) until it succeeds, fails
    /// with an error that is not [temporary](TransportError::is_temporary),
    /// the attempts run out, or `max_elapsed` from the start is reached:
    /// an attempt still running then is dropped (a temporary failure whose
    /// outcome is unknown), and no wait is started that would end later.
    ///
    /// `on_retry(attempt, &error, delay)` is called before each wait. A
    /// non-temporary error is returned as it is. When giving up on a
    /// temporary one, the error returned says so ("gave up after 5 attempts
    /// in 31s: server busy"), has the last error as its source too, and keeps
    /// [`ErrorKind::Temporary`] and the last `retry_after`.
    pub async fn run<T, F, Fut>(
        &self,
        mut op: F,
        mut on_retry: impl FnMut(u32, &TransportError, Duration),
    ) -> Result<T, TransportError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, TransportError>>,
    {
        let start = tokio::time::Instant::now();
        let max_attempts = self.max_attempts.max(1);
        let mut attempt = 1;
        let mut previous: Option<String> = None;
        loop {
            let deadline = start + self.max_elapsed;
            let error = match tokio::time::timeout_at(deadline, op(attempt)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if !error.is_temporary() => return Err(error),
                Ok(Err(error)) => error,
                Err(_) => {
                    // The attempt that ran out says nothing; the one before
                    // it may name the cause (a stall, say).
                    let before = previous
                        .map(|text| format!("; attempt {} had failed: {text}", attempt - 1))
                        .unwrap_or_default();
                    let cut = TransportError::new(
                        ErrorKind::Temporary,
                        format!(
                            "attempt {attempt} was still running when the overall limit of {} s ran out{before}",
                            self.max_elapsed.as_secs()
                        ),
                    )
                    .with_unknown_outcome();
                    return Err(give_up(attempt, start.elapsed(), cut));
                }
            };
            if attempt >= max_attempts {
                return Err(give_up(attempt, start.elapsed(), error));
            }
            let delay = self.delay(attempt, error.retry_after());
            if start.elapsed().saturating_add(delay) > self.max_elapsed {
                return Err(give_up(attempt, start.elapsed(), error));
            }
            on_retry(attempt, &error, delay);
            previous = Some(error.to_string());
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// The error for giving up after `attempts` over `elapsed`, wrapping `last`.
fn give_up(attempts: u32, elapsed: Duration, last: TransportError) -> TransportError {
    let seconds = elapsed.as_secs() + u64::from(elapsed.subsec_millis() >= 500);
    let plural = if attempts == 1 { "" } else { "s" };
    let retry_after = last.retry_after();
    let mut error = TransportError::new(
        ErrorKind::Temporary,
        // Also the source: `error_chain` and the CLI's report say it once.
        format!("gave up after {attempts} attempt{plural} in {seconds}s: {last}"),
    );
    if last.is_outcome_unknown() {
        error = error.with_unknown_outcome();
    }
    if let Some(delay) = retry_after {
        error = error.with_retry_after(delay);
    }
    error.with_source(last)
}

/// A random duration in `[ceiling / 2, ceiling]`.
fn jitter(ceiling: Duration) -> Duration {
    let low = ceiling / 2;
    let span = (ceiling - low).as_nanos();
    // Without randomness, waiting the full delay is the safe choice.
    let Ok(random) = getrandom::u64() else {
        return ceiling;
    };
    let offset = u128::from(random) % (span + 1);
    low + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::sync::Mutex;

    fn temporary() -> TransportError {
        TransportError::new(ErrorKind::Temporary, "server busy")
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(120),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_two_temporary_errors() {
        let mut calls = Vec::new();
        let mut retries = Vec::new();
        let result = fast()
            .run(
                |attempt| {
                    calls.push(attempt);
                    async move {
                        if attempt < 3 {
                            Err(temporary())
                        } else {
                            Ok("sent")
                        }
                    }
                },
                |attempt, error, delay| retries.push((attempt, error.to_string(), delay)),
            )
            .await;
        assert_eq!(result.unwrap(), "sent");
        assert_eq!(calls, [1, 2, 3]);
        assert_eq!(retries.len(), 2);
        assert_eq!(retries[0].0, 1);
        assert_eq!(retries[1].0, 2);
        assert_eq!(retries[0].1, "server busy");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_stops_at_once() {
        let mut calls = 0;
        let error = fast()
            .run(
                |_| {
                    calls += 1;
                    async { Err::<(), _>(TransportError::new(ErrorKind::Rejected, "no such user")) }
                },
                |_, _, _| panic!("no retry"),
            )
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(error.kind(), ErrorKind::Rejected);
        assert_eq!(error.to_string(), "no such user");
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_capped_and_the_final_error_says_so() {
        let calls = Mutex::new(0);
        let start = tokio::time::Instant::now();
        let error = fast()
            .run(
                |_| {
                    *calls.lock().unwrap() += 1;
                    async { Err::<(), _>(temporary().with_retry_after(Duration::from_millis(1))) }
                },
                |_, _, _| {},
            )
            .await
            .unwrap_err();
        assert_eq!(*calls.lock().unwrap(), 5);
        assert_eq!(error.kind(), ErrorKind::Temporary);
        assert!(error.is_temporary());
        // Rounded to the nearest second.
        let elapsed = (start.elapsed().as_millis() + 500) / 1000;
        assert_eq!(
            crate::transport::error_chain(&error),
            format!("gave up after 5 attempts in {elapsed}s: server busy")
        );
        assert_eq!(error.source().unwrap().to_string(), "server busy");
        assert_eq!(error.retry_after(), Some(Duration::from_millis(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_standard_policy_gives_up_within_its_budget() {
        let policy = RetryPolicy::standard();
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let error = policy
            .run(
                |_| {
                    calls += 1;
                    async { Err::<(), _>(temporary()) }
                },
                |_, _, _| {},
            )
            .await
            .unwrap_err();
        assert_eq!(calls, 5);
        // 4 waits: at most 1 + 2 + 4 + 8 s, at least half that.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(7500), "{elapsed:?}");
        assert!(elapsed <= Duration::from_secs(15), "{elapsed:?}");
        assert!(
            error
                .to_string()
                .starts_with("gave up after 5 attempts in ")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_off_an_attempt_that_hangs() {
        let policy = RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(10),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
        };
        let start = tokio::time::Instant::now();
        let error = policy
            .run(
                |_| async { std::future::pending::<Result<(), TransportError>>().await },
                |_, _, _| {},
            )
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(error.kind(), ErrorKind::Temporary);
        assert!(error.is_outcome_unknown());
        assert_eq!(
            crate::transport::error_chain(&error),
            "gave up after 1 attempt in 10s: attempt 1 was still running when the overall limit of 10 s ran out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_off_attempt_names_the_failure_before_it() {
        let policy = RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(10),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
        };
        let error = policy
            .run(
                |attempt| async move {
                    if attempt == 1 {
                        return Err(TransportError::new(
                            ErrorKind::Temporary,
                            "upload.example:443 stalled",
                        ));
                    }
                    std::future::pending::<Result<(), TransportError>>().await
                },
                |_, _, _| {},
            )
            .await
            .unwrap_err();
        assert!(
            crate::transport::error_chain(&error).ends_with(
                "attempt 2 was still running when the overall limit of 10 s ran out; \
                 attempt 1 had failed: upload.example:443 stalled"
            ),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_ends_past_max_elapsed() {
        let policy = RetryPolicy {
            max_attempts: 100,
            max_elapsed: Duration::from_secs(10),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
        };
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let error = policy
            .run(
                |_| {
                    calls += 1;
                    async { Err::<(), _>(temporary()) }
                },
                |_, _, delay| {
                    assert!(start.elapsed() + delay <= Duration::from_secs(10));
                },
            )
            .await
            .unwrap_err();
        assert!(start.elapsed() <= Duration::from_secs(10));
        assert!(calls < 100, "stopped early, after {calls}");
        assert!(error.is_temporary());
        assert!(
            error
                .to_string()
                .starts_with(&format!("gave up after {calls} attempts in ")),
            "{error}"
        );

        // A Retry-After beyond the budget: give up now instead of sleeping.
        let start = tokio::time::Instant::now();
        let error = policy
            .run(
                |_| async { Err::<(), _>(temporary().with_retry_after(Duration::from_secs(60))) },
                |_, _, _| panic!("must not wait"),
            )
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The first line names the cause; the chain says it once.
        assert_eq!(
            error.to_string(),
            "gave up after 1 attempt in 0s: server busy"
        );
        assert_eq!(
            crate::transport::error_chain(&error),
            "gave up after 1 attempt in 0s: server busy"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let asked = Duration::from_secs(7);
        let mut delays = Vec::new();
        let start = tokio::time::Instant::now();
        let result = fast()
            .run(
                |attempt| async move {
                    if attempt == 1 {
                        Err(temporary().with_retry_after(asked))
                    } else {
                        Ok(())
                    }
                },
                |_, _, delay| delays.push(delay),
            )
            .await;
        result.unwrap();
        assert_eq!(delays.len(), 1);
        assert!(delays[0] >= asked, "{:?}", delays[0]);
        assert!(start.elapsed() >= asked);
    }

    #[test]
    fn delay_stays_within_bounds() {
        let policy = RetryPolicy::standard();
        for attempt in 1..=8u32 {
            let ceiling = Duration::from_secs(1u64 << (attempt - 1)).min(policy.max_delay);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..500 {
                let delay = policy.delay(attempt, None);
                assert!(delay >= ceiling / 2, "attempt {attempt}: {delay:?}");
                assert!(delay <= ceiling, "attempt {attempt}: {delay:?}");
                seen.insert(delay);
            }
            assert!(seen.len() > 100, "jitter varies: {}", seen.len());
        }
        // Retry-After may exceed max_delay; a short one does not shorten it.
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(300))),
            Duration::from_secs(300)
        );
        assert!(policy.delay(6, Some(Duration::from_secs(1))) >= Duration::from_secs(16));
        // Extremes do not overflow.
        assert!(policy.delay(0, None) <= Duration::from_secs(1));
        assert!(policy.delay(u32::MAX, None) <= policy.max_delay);
        let huge = RetryPolicy {
            base_delay: Duration::MAX,
            max_delay: Duration::MAX,
            ..policy
        };
        assert!(huge.delay(40, None) >= Duration::MAX / 2);
    }
}
