//! Invoking a Lambda function (aws-sdk-lambda), for `squall launch --via-lambda`: a
//! manual start goes through exactly the path an S3 event takes.
//!
//! What the payload says is the launcher's business ([`crate::cloud::launch`]).

use super::retry::AwsError;
use serde_json::Value;

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// The call itself failed.
    #[error("invoking {function}")]
    Call {
        function: String,
        #[source]
        source: AwsError,
    },
    /// The function ran and reported an error.
    #[error("{function} failed ({kind}): {answer}")]
    Function {
        function: String,
        kind: String,
        answer: Value,
    },
}

/// Invokes `function` with `payload` and returns its JSON answer (or its text as a
/// JSON string when it is not JSON).
pub async fn invoke(
    client: &aws_sdk_lambda::Client,
    function: &str,
    payload: &Value,
) -> Result<Value, LambdaError> {
    let out = client
        .invoke()
        .function_name(function)
        .payload(aws_sdk_lambda::primitives::Blob::new(payload.to_string()))
        .send()
        .await
        .map_err(|e| LambdaError::Call {
            function: function.to_owned(),
            source: AwsError::from_sdk(e),
        })?;
    let body = out
        .payload()
        .map(|b| b.as_ref().to_vec())
        .unwrap_or_default();
    let answer: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    match out.function_error() {
        Some(kind) => Err(LambdaError::Function {
            function: function.to_owned(),
            kind: kind.to_owned(),
            answer,
        }),
        None => Ok(answer),
    }
}
