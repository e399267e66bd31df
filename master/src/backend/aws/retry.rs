//! The ONE place that decides how AWS calls are retried: the SDK's retry layer as squall
//! configures it ([`retry_config`], [`timeout_config`], [`partition`]), whether an error
//! that came out of it is passing trouble ([`retryable`], for decisions above a single
//! call, such as whether a failed launch is worth another delivery), and [`AwsError`],
//! the typed error every AWS call of squall turns into (the service's code and message,
//! or what failed on the way, with its causes).
//!
//! Which calls to make is the backends' business ([`super::ec2`], [`super::s3`]).

use crate::error::BoxError;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::retry::{ReconnectMode, RetryConfig};
use aws_smithy_types::timeout::TimeoutConfig;
use std::fmt;
use std::time::Duration;

/// Attempts per AWS operation in all, the first one included: the SDK's, the only
/// retry layer (a store write or a launch is never retried around it).
pub const MAX_ATTEMPTS: u32 = 8;

/// The longest one operation may take, every attempt and backoff included (a streamed
/// body's reading is not part of it: that is the caller's).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest one attempt may wait for its answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// How much time and how many attempts each AWS operation gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub attempts: u32,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    pub max_backoff: Duration,
}

impl Budget {
    /// A master's (and the command line's): a run is long, an operation may wait.
    pub const MASTER: Budget = Budget {
        attempts: MAX_ATTEMPTS,
        attempt_timeout: ATTEMPT_TIMEOUT,
        operation_timeout: OPERATION_TIMEOUT,
        max_backoff: MAX_BACKOFF,
    };

    /// The launcher Lambda's: its whole invocation has 60 s, so that a throttled
    /// operation fails in time for the launcher to note it (and the next delivery to
    /// take over) instead of Lambda ending it mid-call.
    pub const LAUNCHER: Budget = Budget {
        attempts: 5,
        attempt_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(20),
        max_backoff: Duration::from_secs(4),
    };
}

/// The first retry's backoff ceiling (doubling up to [`MAX_BACKOFF`], fully jittered);
/// `SQUALL_AWS_BACKOFF` overrides it (a knob so fault tests stay short).
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

/// The longest backoff between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// How a client retries: adaptive adds client-side rate limiting after throttling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Standard,
    Adaptive,
}

/// The first retry's backoff: [`INITIAL_BACKOFF`] or `SQUALL_AWS_BACKOFF`.
fn initial_backoff() -> Duration {
    std::env::var("SQUALL_AWS_BACKOFF")
        .ok()
        .and_then(|v| crate::plan::Dur::parse(v.trim()).ok())
        .map_or(INITIAL_BACKOFF, |d| d.0.min(MAX_BACKOFF))
}

/// The SDK's retry layer as squall uses it: the master's [`Budget`] of attempts,
/// jittered exponential backoff, a fresh connection after a transient error.
pub fn retry_config(mode: Mode) -> RetryConfig {
    retry_config_for(mode, Budget::MASTER)
}

/// The SDK's retry layer within `budget`.
pub fn retry_config_for(mode: Mode, budget: Budget) -> RetryConfig {
    match mode {
        Mode::Standard => RetryConfig::standard(),
        Mode::Adaptive => RetryConfig::adaptive(),
    }
    .with_max_attempts(budget.attempts)
    .with_initial_backoff(initial_backoff().min(budget.max_backoff))
    .with_max_backoff(budget.max_backoff)
    .with_reconnect_mode(ReconnectMode::ReconnectOnTransientError)
}

/// Timeouts: connecting, each attempt, and the whole operation (the master's
/// [`Budget`]).
pub fn timeout_config() -> TimeoutConfig {
    timeout_config_for(Budget::MASTER)
}

/// Timeouts within `budget`.
pub fn timeout_config_for(budget: Budget) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10).min(budget.attempt_timeout))
        .operation_attempt_timeout(budget.attempt_timeout)
        .operation_timeout(budget.operation_timeout)
        .build()
}

/// Timeouts for one request that does long work server-side (a CopyObject of up to
/// 5 GB): 15 minutes per attempt, 40 in all.
pub fn long_timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(900))
        .operation_timeout(Duration::from_secs(2400))
        .build()
}

/// A client's retry partition, without the SDK's process-wide retry quota: squall
/// bounds its own concurrency toward AWS, every operation is bounded by
/// [`MAX_ATTEMPTS`] and [`OPERATION_TIMEOUT`], and a quota drained by one bad minute
/// would fail the very calls that must still go through (teardown, the record).
pub fn partition(name: &'static str) -> RetryPartition {
    RetryPartition::custom(name)
        .token_bucket(TokenBucket::unlimited())
        .build()
}

/// A failed AWS call. Its message is the service's `code: message` when the service
/// answered, else what went wrong on the way (with its causes as the error's source).
#[derive(Debug)]
pub struct AwsError {
    code: Option<String>,
    message: Option<String>,
    retryable: bool,
    /// The SDK's error, when the service did not answer with a code.
    transport: Option<BoxError>,
}

impl AwsError {
    /// Classifies and keeps an SDK error.
    pub fn from_sdk<E, R>(err: SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        let retryable = retryable(&err);
        match &err {
            SdkError::ServiceError(e) if e.err().code().is_some() => AwsError {
                code: e.err().code().map(str::to_owned),
                message: e.err().message().map(str::to_owned),
                retryable,
                transport: None,
            },
            SdkError::ServiceError(e) => AwsError {
                code: None,
                message: Some(e.err().to_string()),
                retryable,
                transport: None,
            },
            _ => AwsError {
                code: None,
                message: None,
                retryable,
                transport: Some(Box::new(err)),
            },
        }
    }

    /// The service's error code, if it gave one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether retrying the call can help (see [`retryable`]).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.message, &self.transport) {
            (Some(c), Some(m), _) => write!(f, "{c}: {m}"),
            (Some(c), None, _) => f.write_str(c),
            (None, Some(m), _) => f.write_str(m),
            (None, None, Some(t)) => write!(f, "{t}"),
            (None, None, None) => f.write_str("the AWS call failed"),
        }
    }
}

impl std::error::Error for AwsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The SDK error's own causes (a dispatch failure's IO error, ...): its top-level
        // text is this error's message already.
        self.transport.as_deref().and_then(|t| t.source())
    }
}

/// Error codes that mean "slow down" across EC2 and S3.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "BandwidthLimitExceeded",
];

/// Error codes that mean the service had a passing problem.
const TRANSIENT: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Whether retrying the call can help: throttling, 5xx, timeouts, dropped connections.
/// Everything else (bad parameters, missing permissions, capacity) is final here.
pub fn retryable<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool
where
    R: fmt::Debug,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or_default();
            THROTTLING.contains(&code) || TRANSIENT.contains(&code) || status_is_5xx(err)
        }
        _ => false,
    }
}

fn status_is_5xx<E, R: fmt::Debug>(err: &SdkError<E, R>) -> bool {
    // The raw response's status, when there is one.
    match err {
        SdkError::ServiceError(e) => format!("{:?}", e.raw()).contains("StatusCode(5"),
        _ => false,
    }
}

/// `code: message` of an AWS error (or what failed on the way, with its causes), for
/// people.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R>(
    err: &SdkError<E, R>,
) -> String
where
    R: fmt::Debug + 'static,
{
    match err {
        SdkError::ServiceError(e) => {
            let inner = e.err();
            match (inner.code(), inner.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_owned(),
                _ => inner.to_string(),
            }
        }
        other => crate::error::chain(other),
    }
}

/// The error code of an AWS error, if the service gave one.
pub fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// "Full jitter" backoff for the one loop the SDK does not run (a conditional create,
/// whose retries must be told apart): a random delay up to 200 ms * 2^attempt, capped at
/// 20 s.
pub fn backoff(attempt: u32) -> Duration {
    let cap = (200u64 << attempt.min(10)).min(20_000);
    Duration::from_millis(jitter(cap))
}

fn jitter(upto: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    // A cheap mix of the clock: good enough to spread retries, not for anything else.
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
    (mixed >> 11) % upto.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest of many backoffs for `attempt`, in ms.
    fn largest(attempt: u32) -> u128 {
        (0..500)
            .map(|_| backoff(attempt).as_millis())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        // Full jitter under a cap that doubles from 200 ms and stops at 20 s.
        let caps: [(u32, u128); 6] = [
            (0, 200),
            (1, 400),
            (3, 1_600),
            (6, 12_800),
            (7, 20_000),
            (19, 20_000),
        ];
        for (attempt, cap) in caps {
            assert!(largest(attempt) < cap, "attempt {attempt}: under {cap} ms");
        }
        // It grows: later attempts wait past what the first ever waits.
        assert!(largest(3) >= 200, "attempt 3 waits past 200 ms at times");
        assert!(largest(7) >= 12_800, "attempt 7 waits past 12.8 s at times");
        // And it is jittered: not the same delay every time.
        let distinct: std::collections::BTreeSet<u128> =
            (0..50).map(|_| backoff(6).as_millis()).collect();
        assert!(distinct.len() > 10, "{distinct:?}");
    }
}
