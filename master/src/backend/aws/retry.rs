//! The ONE place that decides whether an AWS error is worth retrying, the jittered
//! backoff between attempts, and [`AwsError`], the typed error every AWS call of squall
//! turns into (the service's code and message, or what failed on the way, with its
//! causes).
//!
//! Which calls to make is the backends' business ([`super::ec2`], [`super::s3`]).

use crate::error::BoxError;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

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

/// How many attempts [`with_retries`] makes in all.
pub const ATTEMPTS: u32 = 6;

/// Runs `call` until it succeeds, fails for good ([`retryable`] says no) or has been
/// tried [`ATTEMPTS`] times, sleeping a jittered, doubling backoff in between.
pub async fn with_retries<T, E, R, F, Fut>(what: &str, mut call: F) -> Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt + 1 < ATTEMPTS && retryable(&e) => {
                let delay = backoff(attempt);
                tracing::warn!(
                    "{what} failed ({}), retrying in {} ms",
                    describe(&e),
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// "Full jitter" backoff: a random delay up to 200 ms * 2^attempt, capped at 20 s.
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
