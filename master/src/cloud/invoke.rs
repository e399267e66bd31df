//! Sending a run to the deployed launcher Lambda (`squall launch --via-lambda`): a
//! manual start goes through exactly the path an S3 event takes.

use super::trigger::Trigger;
use crate::backend::aws::Aws;
use serde_json::Value;

/// Why a run could not be sent to the deployed launcher.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("only direct invocations can be sent to the launcher")]
    NotDirect,
    #[error(transparent)]
    Lambda(#[from] crate::backend::aws::lambda::LambdaError),
}

/// Invokes the deployed launcher Lambda with a direct invocation, for
/// `squall launch --via-lambda`; returns the function's answer.
pub async fn invoke_launcher(
    aws: &Aws,
    function: &str,
    trigger: &Trigger,
) -> Result<Value, InvokeError> {
    let Trigger::Direct {
        playbook,
        vars,
        request,
        no_cache,
    } = trigger
    else {
        return Err(InvokeError::NotDirect);
    };
    let payload = serde_json::json!({ "playbook": playbook, "vars": vars, "request_id": request, "no_cache": no_cache });
    Ok(aws.invoke(function, &payload).await?)
}
