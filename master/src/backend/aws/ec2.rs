//! EC2 `Compute` (aws-sdk-ec2): one RunInstances call per fleet group, a fallback
//! ladder on capacity errors ([`super::ladder`]), waiting until running, and teardown by
//! tag.
//!
//! Every launch carries the squall tags on instances and volumes, IMDSv2 required,
//! `InstanceInitiatedShutdownBehavior=terminate`, no public IP unless asked, and a
//! client token per ladder rung derived from the run and group, so a retried call never
//! doubles a fleet. How to reach the instances is the transport's business; retry
//! decisions are [`super::retry`]'s.

use super::ladder::{Rung, climb, is_capacity_error, ladder};
use super::retry::{self as aws, AwsError};
use crate::error::Message;
use crate::seam::compute::{Compute, ComputeError, Instance, InstanceState, LaunchRequest};
use async_trait::async_trait;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceStateName,
    InstanceType, MarketType, ResourceType, ShutdownBehavior, SpotInstanceType, SpotMarketOptions,
    Tag, TagSpecification, VolumeType,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The tag holding a launch's idempotency token.
pub const LAUNCH_TOKEN_TAG: &str = "squall:launch-token";
/// EC2 accepts at most 16 KB of user-data (before base64).
pub const USER_DATA_LIMIT: usize = 16 * 1024;
/// Instance ids per TerminateInstances call.
pub const TERMINATE_BATCH: usize = 1000;

/// Launch settings that do not come from the playbook.
#[derive(Debug, Clone, Default)]
pub struct Ec2Settings {
    /// Subnet for groups that do not name one.
    pub subnet: Option<String>,
    /// Security groups for groups that do not name any.
    pub security_groups: Vec<String>,
    /// AMI for groups that do not name one.
    pub image: Option<String>,
    /// Instance type for groups that do not name one.
    pub instance_type: Option<String>,
    /// How long to wait for launched instances to be running; zero returns them as
    /// soon as RunInstances answered (pending), without waiting.
    pub running_deadline: Duration,
}

/// EC2 as a [`Compute`]. See the module docs.
#[derive(Debug, Clone)]
pub struct Ec2Compute {
    client: aws_sdk_ec2::Client,
    settings: Ec2Settings,
}

impl Ec2Compute {
    pub fn new(client: aws_sdk_ec2::Client, settings: Ec2Settings) -> Self {
        Ec2Compute { client, settings }
    }

    /// The root device name of an image (e.g. `/dev/xvda`), to size its volume.
    async fn root_device(&self, image: &str) -> Result<String, ComputeError> {
        let out = self
            .client
            .describe_images()
            .image_ids(image)
            .send()
            .await
            .map_err(|e| failed("DescribeImages", e))?;
        out.images()
            .first()
            .and_then(|i| i.root_device_name())
            .map(str::to_owned)
            .ok_or_else(|| {
                ComputeError::refused(
                    "DescribeImages",
                    Message(format!("image {image} not found")),
                )
            })
    }

    async fn run_rung(
        &self,
        req: &LaunchRequest,
        image: &str,
        root_device: Option<&str>,
        index: usize,
        rung: &Rung,
    ) -> Result<Vec<Instance>, ComputeError> {
        let spec = &req.spec;
        let tags: Vec<Tag> = req
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .chain([Tag::builder()
                .key(LAUNCH_TOKEN_TAG)
                .value(&req.client_token)
                .build()])
            .collect();
        let tag_spec = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let mut ni = InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .associate_public_ip_address(spec.public_ip)
            .delete_on_termination(true);
        if let Some(subnet) = spec.subnet.as_ref().or(self.settings.subnet.as_ref()) {
            ni = ni.subnet_id(subnet);
        }
        let groups = spec
            .security_groups
            .clone()
            .unwrap_or_else(|| self.settings.security_groups.clone());
        for g in groups {
            ni = ni.groups(g);
        }
        // A retried call of the same rung is idempotent; another rung is another request.
        let token = format!("{}-{index}", req.client_token);
        let token: String = token
            .chars()
            .rev()
            .take(64)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        // A worker's metadata answers the instance itself only (hop limit 1): a container
        // on it cannot reach the metadata service (the master's keeps 2).
        let hops = if req
            .tags
            .get(crate::seam::compute::tags::ROLE)
            .map(String::as_str)
            == Some("worker")
        {
            1
        } else {
            2
        };
        let mut call = self
            .client
            .run_instances()
            .image_id(image)
            .instance_type(InstanceType::from(rung.instance_type.as_str()))
            .min_count(spec.min() as i32)
            .max_count(spec.count as i32)
            .client_token(token)
            .network_interfaces(ni.build())
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(hops)
                    .build(),
            )
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume));
        if !req.user_data.is_empty() {
            call = call.user_data(aws_smithy_types::base64::encode(req.user_data.as_bytes()));
        }
        if let Some(profile) = &req.instance_profile {
            let p = IamInstanceProfileSpecification::builder();
            call = call.iam_instance_profile(
                if profile.starts_with("arn:") {
                    p.arn(profile)
                } else {
                    p.name(profile)
                }
                .build(),
            );
        }
        if let (Some(gb), Some(dev)) = (spec.volume_gb, root_device) {
            call = call.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(dev)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(gb as i32)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        if rung.spot {
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = call.send().await.map_err(|e| {
            if is_capacity_error(aws::code(&e)) {
                ComputeError::capacity(req.group.clone(), AwsError::from_sdk(e))
            } else {
                failed("RunInstances", e)
            }
        })?;
        Ok(out.instances().iter().map(to_instance).collect())
    }

    /// Polls until every instance is running (or gone), with backoff, until the
    /// deadline. Returns (running, failed with why).
    async fn wait_running(
        &self,
        ids: &[String],
    ) -> Result<(Vec<Instance>, Vec<String>), ComputeError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            let found = self.describe(ids).await?;
            let running: Vec<Instance> = found
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .cloned()
                .collect();
            let gone: Vec<&Instance> = found
                .iter()
                .filter(|i| i.state.is_gone() || i.state == InstanceState::Stopped)
                .collect();
            if running.len() + gone.len() == ids.len() {
                let failed = gone
                    .iter()
                    .map(|i| {
                        format!(
                            "{} is {:?}{}",
                            i.id,
                            i.state,
                            i.tag("squall:state-reason")
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                return Ok((running, failed));
            }
            if start.elapsed() >= self.settings.running_deadline {
                let pending: Vec<&str> = found
                    .iter()
                    .filter(|i| i.state == InstanceState::Pending)
                    .map(|i| i.id.as_str())
                    .collect();
                return Ok((
                    running,
                    vec![format!(
                        "still pending after {}s: {}",
                        start.elapsed().as_secs(),
                        pending.join(", ")
                    )],
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn describe_filtered(&self, filter: Filter) -> Result<Vec<Instance>, ComputeError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_instances()
                .filters(filter.clone())
                .set_next_token(token.clone())
                .max_results(1000)
                .send()
                .await
                .map_err(|e| failed("DescribeInstances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().map(to_instance));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }
}

fn failed<
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    op: &'static str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> ComputeError {
    let e = AwsError::from_sdk(e);
    // The same launch token with other parameters: an earlier attempt's launch landed
    // (and is found by its tags), not a refusal.
    if e.is_retryable() || e.code() == Some("IdempotentParameterMismatch") {
        ComputeError::failed(op, e)
    } else {
        ComputeError::refused(op, e)
    }
}

fn to_instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    let state = match i.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(InstanceStateName::Terminated) => InstanceState::Terminated,
        Some(InstanceStateName::Stopped | InstanceStateName::Stopping) => InstanceState::Stopped,
        _ => InstanceState::Pending,
    };
    let mut tags: BTreeMap<String, String> = i
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    if let Some(reason) = i.state_reason().and_then(|r| r.message()) {
        // Not an EC2 tag: carried along for messages about instances that failed.
        tags.insert("squall:state-reason".into(), reason.to_owned());
    }
    Instance {
        id: i.instance_id().unwrap_or_default().to_owned(),
        state,
        address: i.private_ip_address().unwrap_or_default().to_owned(),
        tags,
        instance_type: i.instance_type().map(|t| t.as_str().to_owned()),
    }
}

#[async_trait]
impl Compute for Ec2Compute {
    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, ComputeError> {
        if req.user_data.len() > USER_DATA_LIMIT {
            return Err(ComputeError::refused(
                "RunInstances",
                Message(format!(
                    "user-data of group `{}` is {} bytes, over EC2's limit of {USER_DATA_LIMIT}",
                    req.group,
                    req.user_data.len()
                )),
            ));
        }
        let image = req
            .spec
            .image
            .clone()
            .or_else(|| self.settings.image.clone())
            .ok_or_else(|| {
                ComputeError::refused(
                    "RunInstances",
                    Message(format!(
                        "group `{}` has no image and no default image is configured",
                        req.group
                    )),
                )
            })?;
        let types = match (&req.spec.instance_type, &self.settings.instance_type) {
            (Some(t), _) => t.0.clone(),
            (None, Some(t)) => vec![t.clone()],
            (None, None) => vec![crate::plan::prices::DEFAULT_INSTANCE_TYPE.to_owned()],
        };
        let root_device = match req.spec.volume_gb {
            Some(_) => Some(self.root_device(&image).await?),
            None => None,
        };
        // Idempotency that does not rest on ClientToken alone (which holds for concurrent
        // calls on EC2, but not across a master restart hours later, nor in emulators):
        // a launch that already happened is found by its token tag and returned.
        let existing: Vec<Instance> = self
            .list_by_tag(LAUNCH_TOKEN_TAG, &req.client_token)
            .await?
            .into_iter()
            .filter(|i| !i.state.is_gone())
            .collect();
        if !existing.is_empty() {
            tracing::info!(group = %req.group, "launch already done: {} instance(s) carry its token", existing.len());
            if self.settings.running_deadline.is_zero() {
                return Ok(existing);
            }
            let ids: Vec<String> = existing.iter().map(|i| i.id.clone()).collect();
            let (running, _) = self.wait_running(&ids).await?;
            return Ok(running);
        }
        let rungs = ladder(&types, req.spec.market);
        let (rung, launched) = climb(&req.group, &rungs, |i, rung| {
            let image = image.clone();
            let root_device = root_device.clone();
            async move {
                self.run_rung(req, &image, root_device.as_deref(), i, &rung)
                    .await
            }
        })
        .await?;
        tracing::info!(group = %req.group, "launched {} {} instance(s){}", launched.len(), rung.instance_type, if rung.spot { " on spot" } else { "" });
        if self.settings.running_deadline.is_zero() {
            return Ok(launched);
        }
        let ids: Vec<String> = launched.iter().map(|i| i.id.clone()).collect();
        let (running, failures) = self.wait_running(&ids).await?;
        if !failures.is_empty() {
            tracing::warn!(group = %req.group, "instances that did not start: {}", failures.join("; "));
        }
        if (running.len() as u32) < req.spec.min() {
            return Err(ComputeError::failed(
                "RunInstances",
                Message(format!(
                    "{} of the {} required instances of group `{}` are running; {}",
                    running.len(),
                    req.spec.min(),
                    req.group,
                    failures.join("; ")
                )),
            ));
        }
        Ok(running)
    }

    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, ComputeError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(TERMINATE_BATCH) {
            let filter = Filter::builder()
                .name("instance-id")
                .set_values(Some(chunk.to_vec()))
                .build();
            out.extend(self.describe_filtered(filter).await?);
        }
        Ok(out)
    }

    async fn list_by_tag(&self, key: &str, value: &str) -> Result<Vec<Instance>, ComputeError> {
        let filter = Filter::builder()
            .name(format!("tag:{key}"))
            .values(value)
            .build();
        self.describe_filtered(filter).await
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), ComputeError> {
        for chunk in ids.chunks(TERMINATE_BATCH) {
            let r = self
                .client
                .terminate_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await;
            match r {
                Ok(_) => {}
                // Already gone: terminating is idempotent.
                Err(e) if aws::code(&e).is_some_and(|c| c.starts_with("InvalidInstanceID")) => {}
                Err(e) => return Err(failed("TerminateInstances", e)),
            }
        }
        Ok(())
    }
}
