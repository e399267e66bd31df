//! squall-launcher: the Lambda entry point. Wires settings from the environment into
//! the launcher on AWS ([`squall_launcher::Launcher::on_aws`]) and serves invocations
//! with `lambda_runtime`. The handler's logic lives in the library.
//!
//! Errors a retry can help with (the store or EC2 failing) are returned as errors, so
//! Lambda retries the invocation; a bad event or configuration answers normally with
//! the reason, since retrying cannot fix it.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use squall::backend::aws::Aws;
use squall_launcher::{Launcher, Settings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .init();
    let settings = Settings::from_env(|k| std::env::var(k).ok())?;
    // Each AWS operation within the invocation's 60 s (see `Budget::LAUNCHER`).
    let aws = Aws::from_env_within(squall::backend::aws::retry::Budget::LAUNCHER).await;
    let launcher = Launcher::on_aws(&aws, settings);
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
