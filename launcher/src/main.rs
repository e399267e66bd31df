//! squall-launcher: the Lambda entry point. Wires settings from the environment, an S3
//! store and EC2 compute into [`squall_launcher::Launcher`] and serves invocations with
//! `lambda_runtime`. The handler's logic lives in the library.
//!
//! Errors a retry can help with (the store or EC2 failing) are returned as errors, so
//! Lambda retries the invocation; a bad event or configuration answers normally with
//! the reason, since retrying cannot fix it.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use squall::ec2::{Ec2Compute, Ec2Settings};
use squall::s3::S3Store;
use squall_launcher::{Launcher, Settings};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
    let settings = Settings::from_env(|k| std::env::var(k).ok())?;
    let conf = squall::aws::sdk_config(None).await;
    let launcher = Launcher {
        store: Arc::new(S3Store::new(
            squall::aws::s3_client(&conf),
            settings.bucket.clone(),
            "",
        )),
        compute: Arc::new(Ec2Compute::new(
            squall::aws::ec2_client(&conf),
            Ec2Settings {
                subnet: Some(settings.subnet.clone()),
                security_groups: settings.security_groups.clone(),
                image: Some(settings.image.clone()),
                instance_type: Some(settings.master_type.clone()),
                // The launcher does not wait for the master to run: it returns once
                // RunInstances answered.
                running_deadline: Duration::ZERO,
            },
        )),
        settings,
    };
    let launcher = &launcher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match squall_launcher::handle(launcher, &event.payload, now).await {
            Ok(handled) => Ok::<Value, Error>(json!(handled)),
            Err(e) if e.retryable => Err(e.into()),
            Err(e) => Ok(json!({ "error": e.message, "retryable": false })),
        }
    }))
    .await
}
