//! The S3 store's conditional create (`If-None-Match: *`): the one AWS call squall
//! retries itself, with the SDK's retries off, because a retry after a lost answer
//! must tell its own object from someone else's (by its body). Part of
//! [`super::S3Store`].

use super::{S3Store, aws, err};
use crate::seam::store::{Store, StoreError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use std::time::Duration;

/// The longest a conditional create goes on trying (each try is bounded by the client's
/// own attempt timeout).
const CREATE_WITHIN: Duration = Duration::from_secs(30);

impl S3Store {
    /// Writes `body` at `key` only if nothing is there (see the module docs).
    pub(super) async fn create_once(&self, key: &str, body: Vec<u8>) -> Result<bool, StoreError> {
        let full = self.full(key)?;
        // Not retried blindly, so not by the SDK either: if a first attempt landed but its
        // answer was lost, a retry would see our own object and wrongly report someone
        // else's claim. After an ambiguous failure, the object's body tells whose claim it
        // is. (This loop is the only retry loop around an AWS call in squall.)
        let body = Bytes::from(body);
        let mut ambiguous = false;
        let started = std::time::Instant::now();
        for attempt in 0..aws::MAX_ATTEMPTS {
            // Tried again only within CREATE_WITHIN (a claim or a journal batch is worth
            // little late, and a launcher's time is short).
            if attempt > 0 && started.elapsed() >= CREATE_WITHIN {
                break;
            }
            let r = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .if_none_match("*")
                .body(ByteStream::from(body.clone()))
                .customize()
                .config_override(
                    aws_sdk_s3::config::Builder::default()
                        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
                )
                .send()
                .await;
            match r {
                Ok(_) => return Ok(true),
                Err(e)
                    if matches!(
                        aws::code(&e),
                        Some("PreconditionFailed" | "ConditionalRequestConflict")
                    ) =>
                {
                    return if ambiguous {
                        Ok(self.get(key).await?.as_deref() == Some(&body[..]))
                    } else {
                        Ok(false)
                    };
                }
                Err(e) if aws::retryable(&e) && attempt + 1 < aws::MAX_ATTEMPTS => {
                    ambiguous = true;
                    // Short waits: a claim or a journal batch is worth little late.
                    tokio::time::sleep(aws::backoff(attempt).min(Duration::from_secs(2))).await;
                }
                Err(e) => return Err(err("create", key, e)),
            }
        }
        Err(StoreError::failed(
            "create",
            key,
            crate::error::Message("no answer after retries".into()),
        ))
    }
}
