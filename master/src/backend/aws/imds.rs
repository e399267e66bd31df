//! The EC2 instance metadata service (IMDSv2) through aws-config's client: this
//! instance's id. The endpoint is the SDK's (overridable with
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`, as for every AWS SDK), so tests point it at a
//! local IMDS with no test-only branch here.
//!
//! What the master does with its id is [`crate::cloud::master`]'s business.

use std::time::Duration;

/// The instance id could not be read from the metadata service.
#[derive(Debug, thiserror::Error)]
#[error("reading the instance id from the instance metadata service")]
pub struct ImdsError(#[source] aws_config::imds::client::error::ImdsError);

/// This instance's id.
pub async fn own_instance_id() -> Result<String, ImdsError> {
    let client = aws_config::imds::Client::builder()
        .max_attempts(5)
        .connect_timeout(Duration::from_secs(2))
        .build();
    client
        .get("/latest/meta-data/instance-id")
        .await
        .map(String::from)
        .map_err(ImdsError)
}
