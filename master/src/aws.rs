//! AWS plumbing shared by the EC2 and S3 backends: the ONE function that builds SDK
//! configuration, and the ONE function that decides whether an AWS error is worth
//! retrying, with jittered backoff.
//!
//! Configuration comes from the standard chain (environment, profile, IMDS on EC2) and
//! honours `AWS_ENDPOINT_URL`, `AWS_REGION` and `AWS_PROFILE`; S3 uses path-style
//! addressing when an endpoint is overridden (emulators like moto). What to call is the
//! backends' business ([`crate::ec2`], [`crate::s3`]).

use aws_config::BehaviorVersion;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;
use std::future::Future;
use std::time::Duration;

/// SDK configuration from the standard chain; `region` overrides the chain's.
pub async fn sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_owned()));
    }
    loader.load().await
}

/// An S3 client for `conf`: path-style when the endpoint is overridden.
pub fn s3_client(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(conf)
        .force_path_style(conf.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// An EC2 client for `conf`.
pub fn ec2_client(conf: &aws_config::SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(conf)
}

/// A Lambda client (for `squall launch --via-lambda`).
pub fn lambda_client(conf: &aws_config::SdkConfig) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(conf)
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
    R: std::fmt::Debug,
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

fn status_is_5xx<E, R: std::fmt::Debug>(err: &SdkError<E, R>) -> bool {
    // The raw response's status, when there is one.
    match err {
        SdkError::ServiceError(e) => format!("{:?}", e.raw()).contains("StatusCode(5"),
        _ => false,
    }
}

/// `code: message` of an AWS error, for people.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R>(
    err: &SdkError<E, R>,
) -> String
where
    R: std::fmt::Debug + 'static,
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
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
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
    R: std::fmt::Debug + 'static,
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

    #[test]
    fn backoff_is_bounded_and_grows() {
        for attempt in 0..20 {
            let cap = (200u64 << attempt.min(10)).min(20_000);
            assert!(backoff(attempt).as_millis() < u128::from(cap.max(1)));
        }
    }
}
