//! The `Control` seam on AWS: SSM Parameter Store (SecureString) holds a run's
//! secrets while it lives; EventBridge Scheduler holds its watchdog schedule, whose
//! target is the launcher function (assumed through the stack's scheduler role).
//!
//! Absent is never an error here: deleting what is gone, or reading what was never
//! written, answers plainly, so cleanups can be repeated.

use super::retry::AwsError;
use crate::seam::control::{Control, ControlError, Secret};
use async_trait::async_trait;
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
use aws_sdk_ssm::types::ParameterType;

/// Where the watchdog schedules send their input.
#[derive(Debug, Clone, Default)]
pub struct ScheduleTarget {
    /// The launcher function's ARN (`SQUALL_WATCH_TARGET`).
    pub function_arn: String,
    /// The role EventBridge Scheduler assumes to invoke it (`SQUALL_WATCH_ROLE`).
    pub role_arn: String,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AwsControl {
    ssm: aws_sdk_ssm::Client,
    scheduler: aws_sdk_scheduler::Client,
    target: ScheduleTarget,
}

impl AwsControl {
    pub fn new(conf: &aws_config::SdkConfig, target: ScheduleTarget) -> AwsControl {
        AwsControl {
            ssm: aws_sdk_ssm::Client::new(conf),
            scheduler: aws_sdk_scheduler::Client::new(conf),
            target,
        }
    }
}

fn failed(op: &'static str, name: &str, e: AwsError) -> ControlError {
    ControlError {
        op,
        name: name.to_owned(),
        source: Box::new(e),
    }
}

#[async_trait]
impl Control for AwsControl {
    async fn put_secret(&self, name: &str, value: &str) -> Result<(), ControlError> {
        self.ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| failed("PutParameter", name, AwsError::from_sdk(e)))?;
        Ok(())
    }

    async fn get_secret(&self, name: &str) -> Result<Option<Secret>, ControlError> {
        match self
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(out) => Ok(out.parameter.and_then(|p| p.value).map(Secret::new)),
            Err(e) => {
                let e = AwsError::from_sdk(e);
                if e.code() == Some("ParameterNotFound") {
                    return Ok(None);
                }
                Err(failed("GetParameter", name, e))
            }
        }
    }

    async fn delete_secret(&self, name: &str) -> Result<(), ControlError> {
        match self.ssm.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = AwsError::from_sdk(e);
                if e.code() == Some("ParameterNotFound") {
                    return Ok(());
                }
                Err(failed("DeleteParameter", name, e))
            }
        }
    }

    async fn create_schedule(
        &self,
        name: &str,
        every_minutes: u32,
        until_unix: u64,
        input: &str,
    ) -> Result<(), ControlError> {
        let target = Target::builder()
            .arn(&self.target.function_arn)
            .role_arn(&self.target.role_arn)
            .input(input)
            .build()
            .map_err(|e| ControlError {
                op: "CreateSchedule",
                name: name.to_owned(),
                source: Box::new(e),
            })?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| ControlError {
                op: "CreateSchedule",
                name: name.to_owned(),
                source: Box::new(e),
            })?;
        let unit = if every_minutes == 1 {
            "minute"
        } else {
            "minutes"
        };
        match self
            .scheduler
            .create_schedule()
            .name(name)
            .schedule_expression(format!("rate({every_minutes} {unit})"))
            .flexible_time_window(window)
            .end_date(aws_smithy_types::DateTime::from_secs(until_unix as i64))
            .target(target)
            .description("squall: watches one run's master; deleted when the run is recorded")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = AwsError::from_sdk(e);
                if e.code() == Some("ConflictException") {
                    return Ok(()); // created by an earlier delivery of the same trigger
                }
                Err(failed("CreateSchedule", name, e))
            }
        }
    }

    async fn delete_schedule(&self, name: &str) -> Result<(), ControlError> {
        match self.scheduler.delete_schedule().name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = AwsError::from_sdk(e);
                if e.code() == Some("ResourceNotFoundException") {
                    return Ok(());
                }
                Err(failed("DeleteSchedule", name, e))
            }
        }
    }

    async fn schedule_exists(&self, name: &str) -> Result<bool, ControlError> {
        match self.scheduler.get_schedule().name(name).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = AwsError::from_sdk(e);
                if e.code() == Some("ResourceNotFoundException") {
                    return Ok(false);
                }
                Err(failed("GetSchedule", name, e))
            }
        }
    }
}
