//! AWS: the ONE function that builds SDK configuration ([`sdk_config`], the standard
//! chain honouring `AWS_ENDPOINT_URL`, `AWS_REGION` and `AWS_PROFILE`; path-style S3
//! when an endpoint is overridden), the clients built from it, and the AWS
//! implementations of the seams: [`ec2`] (Compute), [`s3`] (Store), plus the instance
//! metadata service ([`imds`]), Lambda invocations ([`lambda`]) and the control plane
//! of a run's life (SSM secrets and Scheduler schedules, [`control`]).
//!
//! Only this folder names `aws_*` crates: the rest of squall reaches AWS through
//! [`Aws`] and the seam traits. Retry decisions are [`retry`]'s.
//!
//! Retries happen in ONE layer, the SDK's own ([`retry::retry_config`]): a bounded
//! number of attempts with jittered backoff, adaptive (client-side rate limiting) for
//! EC2, whose API throttles per account, and a bound on each operation's total time.
//! Nothing in squall wraps a call in another retry loop, except the one call the SDK
//! cannot retry safely (a conditional create, see [`s3`]).

pub mod control;
pub mod ec2;
pub mod imds;
pub mod ladder;
pub mod lambda;
pub mod retry;
pub mod s3;

use aws_config::BehaviorVersion;

/// SDK configuration from the standard chain; `region` overrides the chain's. Retries
/// and timeouts are squall's ([`with_squall_defaults`]).
pub async fn sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    sdk_config_within(region, retry::Budget::MASTER).await
}

/// Like [`sdk_config`], with each operation held to `budget`.
pub async fn sdk_config_within(
    region: Option<&str>,
    budget: retry::Budget,
) -> aws_config::SdkConfig {
    let mut loader = with_budget(aws_config::defaults(BehaviorVersion::latest()), budget);
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_owned()));
    }
    loader.load().await
}

/// `loader` with squall's retries and timeouts ([`retry::retry_config`],
/// [`retry::timeout_config`]).
pub fn with_squall_defaults(loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
    with_budget(loader, retry::Budget::MASTER)
}

/// `loader` with squall's retries and timeouts within `budget`.
pub fn with_budget(
    loader: aws_config::ConfigLoader,
    budget: retry::Budget,
) -> aws_config::ConfigLoader {
    loader
        .retry_config(retry::retry_config_for(retry::Mode::Standard, budget))
        .timeout_config(retry::timeout_config_for(budget))
}

/// An S3 client for `conf`: path-style when the endpoint is overridden.
pub fn s3_client(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(conf)
        .force_path_style(conf.endpoint_url().is_some())
        .retry_partition(retry::partition("squall-s3"))
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// An EC2 client for `conf`: adaptive retries (EC2 throttles per account, so every
/// call of the process slows down together when it does).
pub fn ec2_client(conf: &aws_config::SdkConfig) -> aws_sdk_ec2::Client {
    // The configuration's own attempts and backoff, in adaptive mode.
    let retries = conf
        .retry_config()
        .cloned()
        .unwrap_or_else(|| retry::retry_config(retry::Mode::Standard))
        .with_retry_mode(aws_smithy_types::retry::RetryMode::Adaptive);
    let ec2 = aws_sdk_ec2::config::Builder::from(conf)
        .retry_config(retries)
        .retry_classifier(ladder::CapacityIsFinal)
        .retry_partition(retry::partition("squall-ec2"))
        .build();
    aws_sdk_ec2::Client::from_conf(ec2)
}

/// A Lambda client (for `squall launch --via-lambda`).
pub fn lambda_client(conf: &aws_config::SdkConfig) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(conf)
}

/// AWS as the rest of squall sees it: one configuration, and the seams built on it.
#[derive(Debug, Clone)]
pub struct Aws {
    conf: aws_config::SdkConfig,
}

impl Aws {
    /// Configuration from the standard chain (see [`sdk_config`]).
    pub async fn from_env() -> Aws {
        Aws {
            conf: sdk_config(None).await,
        }
    }

    /// Like [`Aws::from_env`], each operation held to `budget` (the launcher Lambda's).
    pub async fn from_env_within(budget: retry::Budget) -> Aws {
        Aws {
            conf: sdk_config_within(None, budget).await,
        }
    }

    /// The S3 store at `bucket` under `prefix` (`""` or ending in `/`).
    pub fn store(&self, bucket: &str, prefix: &str) -> s3::S3Store {
        s3::S3Store::new(s3_client(&self.conf), bucket, prefix)
    }

    /// EC2 compute with `settings` for what the playbook leaves open.
    pub fn compute(&self, settings: ec2::Ec2Settings) -> ec2::Ec2Compute {
        ec2::Ec2Compute::new(ec2_client(&self.conf), settings)
    }

    /// Secrets and watchdog schedules (SSM Parameter Store, EventBridge Scheduler).
    pub fn control(&self, target: control::ScheduleTarget) -> control::AwsControl {
        control::AwsControl::new(&self.conf, target)
    }

    /// Invokes a Lambda function with a JSON payload; returns its answer.
    pub async fn invoke(
        &self,
        function: &str,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value, lambda::LambdaError> {
        lambda::invoke(&lambda_client(&self.conf), function, payload).await
    }
}
