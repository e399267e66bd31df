//! EC2 `Compute` (aws-sdk-ec2): one RunInstances call per fleet group, a fallback
//! ladder on capacity errors, waiting until running, and teardown by tag.
//!
//! Every launch carries the squall tags on instances and volumes, IMDSv2 required,
//! `InstanceInitiatedShutdownBehavior=terminate`, no public IP unless asked, and a
//! client token per ladder rung derived from the run and group, so a retried call never
//! doubles a fleet. How to reach the instances is the transport's business; retry
//! decisions are [`crate::aws::retryable`]'s.

use crate::aws;
use crate::compute::{Compute, ComputeError, Instance, InstanceState, LaunchRequest};
use crate::playbook::Market;
use async_trait::async_trait;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceStateName,
    InstanceType, MarketType, ResourceType, ShutdownBehavior, SpotInstanceType, SpotMarketOptions,
    Tag, TagSpecification, VolumeType,
};
use std::collections::BTreeMap;
use std::future::Future;
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

/// One rung of the fallback ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    pub instance_type: String,
    pub spot: bool,
}

/// The order in which capacity is tried: spot across every type first (cheapest), then
/// on-demand across every type.
pub fn ladder(types: &[String], market: Market) -> Vec<Rung> {
    let markets: &[bool] = match market {
        Market::OnDemand => &[false],
        Market::Spot => &[true],
        Market::SpotOrOnDemand => &[true, false],
    };
    markets
        .iter()
        .flat_map(|spot| {
            types.iter().map(|t| Rung {
                instance_type: t.clone(),
                spot: *spot,
            })
        })
        .collect()
}

/// Error codes meaning "not this capacity, try another rung".
const CAPACITY: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "Unsupported",
];

/// Whether an error code means the rung lacks capacity (another rung may work).
pub fn is_capacity_error(code: Option<&str>) -> bool {
    code.is_some_and(|c| CAPACITY.contains(&c))
}

/// Walks `rungs` in order, calling `try_rung` until one launches; a capacity error
/// moves to the next rung, any other error stops. Generic over the call so the ladder
/// is tested without EC2.
pub async fn climb<F, Fut>(
    group: &str,
    rungs: &[Rung],
    mut try_rung: F,
) -> Result<(Rung, Vec<Instance>), ComputeError>
where
    F: FnMut(usize, Rung) -> Fut,
    Fut: Future<Output = Result<Vec<Instance>, ComputeError>>,
{
    let mut tried = Vec::new();
    for (i, rung) in rungs.iter().enumerate() {
        match try_rung(i, rung.clone()).await {
            Ok(instances) => return Ok((rung.clone(), instances)),
            Err(ComputeError::Capacity { detail, .. }) => {
                let market = if rung.spot { "spot" } else { "on-demand" };
                tracing::warn!(
                    group,
                    "no capacity for {} {market}: {detail}",
                    rung.instance_type
                );
                tried.push(format!("{} {market}: {detail}", rung.instance_type));
            }
            Err(e) => return Err(e),
        }
    }
    Err(ComputeError::Capacity {
        group: group.to_owned(),
        detail: format!("every option failed: {}", tried.join("; ")),
    })
}

impl Ec2Compute {
    pub fn new(client: aws_sdk_ec2::Client, settings: Ec2Settings) -> Self {
        Ec2Compute { client, settings }
    }

    /// The root device name of an image (e.g. `/dev/xvda`), to size its volume.
    async fn root_device(&self, image: &str) -> Result<String, ComputeError> {
        let out = aws::with_retries("DescribeImages", || {
            self.client.describe_images().image_ids(image).send()
        })
        .await
        .map_err(|e| failed("DescribeImages", &e))?;
        out.images()
            .first()
            .and_then(|i| i.root_device_name())
            .map(str::to_owned)
            .ok_or_else(|| ComputeError::Failed {
                op: "DescribeImages",
                detail: format!("image {image} not found"),
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
                    .http_put_response_hop_limit(2)
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
        let out = aws::with_retries("RunInstances", || call.clone().send())
            .await
            .map_err(|e| {
                if is_capacity_error(aws::code(&e)) {
                    ComputeError::Capacity {
                        group: req.group.clone(),
                        detail: aws::describe(&e),
                    }
                } else {
                    failed("RunInstances", &e)
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
            let page = aws::with_retries("DescribeInstances", || {
                self.client
                    .describe_instances()
                    .filters(filter.clone())
                    .set_next_token(token.clone())
                    .max_results(1000)
                    .send()
            })
            .await
            .map_err(|e| failed("DescribeInstances", &e))?;
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
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
>(
    op: &'static str,
    e: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> ComputeError {
    ComputeError::Failed {
        op,
        detail: aws::describe(e),
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
            return Err(ComputeError::Failed {
                op: "RunInstances",
                detail: format!(
                    "user-data of group `{}` is {} bytes, over EC2's limit of {USER_DATA_LIMIT}",
                    req.group,
                    req.user_data.len()
                ),
            });
        }
        let image = req
            .spec
            .image
            .clone()
            .or_else(|| self.settings.image.clone())
            .ok_or_else(|| ComputeError::Failed {
                op: "RunInstances",
                detail: format!(
                    "group `{}` has no image and no default image is configured",
                    req.group
                ),
            })?;
        let types = match (&req.spec.instance_type, &self.settings.instance_type) {
            (Some(t), _) => t.0.clone(),
            (None, Some(t)) => vec![t.clone()],
            (None, None) => vec!["t3.micro".to_owned()],
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
            return Err(ComputeError::Failed {
                op: "RunInstances",
                detail: format!(
                    "{} of the {} required instances of group `{}` are running; {}",
                    running.len(),
                    req.spec.min(),
                    req.group,
                    failures.join("; ")
                ),
            });
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
            let r = aws::with_retries("TerminateInstances", || {
                self.client
                    .terminate_instances()
                    .set_instance_ids(Some(chunk.to_vec()))
                    .send()
            })
            .await;
            match r {
                Ok(_) => {}
                // Already gone: terminating is idempotent.
                Err(e) if aws::code(&e).is_some_and(|c| c.starts_with("InvalidInstanceID")) => {}
                Err(e) => return Err(failed("TerminateInstances", &e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_tries_spot_across_types_before_on_demand() {
        let types = vec!["g5.xlarge".to_owned(), "g4dn.xlarge".to_owned()];
        let rungs: Vec<(String, bool)> = ladder(&types, Market::SpotOrOnDemand)
            .into_iter()
            .map(|r| (r.instance_type, r.spot))
            .collect();
        assert_eq!(
            rungs,
            [
                ("g5.xlarge".into(), true),
                ("g4dn.xlarge".into(), true),
                ("g5.xlarge".into(), false),
                ("g4dn.xlarge".into(), false)
            ]
        );
        assert_eq!(ladder(&types, Market::OnDemand).len(), 2);
        assert!(ladder(&types, Market::Spot).iter().all(|r| r.spot));
    }

    fn instance(id: &str) -> Instance {
        Instance {
            id: id.into(),
            state: InstanceState::Running,
            address: "127.200.1.9".into(),
            tags: BTreeMap::new(),
            instance_type: None,
        }
    }

    type Answer = Result<Vec<Instance>, ComputeError>;
    type Tried = std::sync::Arc<std::sync::Mutex<Vec<(usize, Rung)>>>;

    /// A scripted launcher: each rung's answer in order, recording the rungs tried.
    fn scripted(
        answers: Vec<Answer>,
    ) -> (Tried, impl FnMut(usize, Rung) -> std::future::Ready<Answer>) {
        let tried = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = tried.clone();
        let mut answers = answers.into_iter();
        let f = move |i, rung| {
            log.lock().unwrap().push((i, rung));
            std::future::ready(answers.next().unwrap_or(Err(ComputeError::Failed {
                op: "RunInstances",
                detail: "unscripted".into(),
            })))
        };
        (tried, f)
    }

    fn capacity() -> ComputeError {
        ComputeError::Capacity {
            group: "gpu".into(),
            detail: "InsufficientInstanceCapacity: no g5 in us-east-1a".into(),
        }
    }

    #[tokio::test]
    async fn a_capacity_error_on_a_rung_falls_to_the_next() {
        let rungs = ladder(
            &["g5.xlarge".to_owned(), "g4dn.xlarge".to_owned()],
            Market::SpotOrOnDemand,
        );
        let (tried, f) = scripted(vec![
            Err(capacity()),
            Err(capacity()),
            Ok(vec![instance("i-1")]),
        ]);
        let (rung, got) = climb("gpu", &rungs, f).await.unwrap();
        assert_eq!(got, [instance("i-1")]);
        assert_eq!(
            rung,
            Rung {
                instance_type: "g5.xlarge".into(),
                spot: false
            },
            "spot g5, spot g4dn, then on-demand g5"
        );
        let indices: Vec<usize> = tried.lock().unwrap().iter().map(|(i, _)| *i).collect();
        assert_eq!(
            indices,
            [0, 1, 2],
            "each rung has its own index, hence its own client token"
        );
    }

    #[tokio::test]
    async fn any_other_error_stops_the_ladder() {
        let rungs = ladder(&["a".to_owned(), "b".to_owned()], Market::OnDemand);
        let denied = ComputeError::Failed {
            op: "RunInstances",
            detail: "UnauthorizedOperation".into(),
        };
        let (tried, f) = scripted(vec![Err(denied), Ok(vec![instance("never")])]);
        let e = climb("gpu", &rungs, f).await.unwrap_err();
        assert!(e.to_string().contains("UnauthorizedOperation"), "{e}");
        assert_eq!(tried.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn running_out_of_rungs_says_what_each_one_answered() {
        let rungs = ladder(&["a".to_owned()], Market::SpotOrOnDemand);
        let (_, f) = scripted(vec![Err(capacity()), Err(capacity())]);
        let e = climb("gpu", &rungs, f).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("a spot: InsufficientInstanceCapacity") && text.contains("a on-demand"),
            "{text}"
        );
    }

    #[test]
    fn capacity_codes() {
        assert!(is_capacity_error(Some("InsufficientInstanceCapacity")));
        assert!(is_capacity_error(Some("SpotMaxPriceTooLow")));
        assert!(!is_capacity_error(Some("UnauthorizedOperation")));
        assert!(!is_capacity_error(None));
    }
}
