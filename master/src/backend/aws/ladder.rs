//! The capacity ladder: the order in which a group's capacity is tried (spot across
//! every instance type, then on-demand across every type) and the walk down it, where a
//! capacity error moves to the next rung and any other error stops.
//!
//! Generic over the call that tries a rung, so it is tested with a scripted closure;
//! the EC2 call itself is [`super::ec2`]'s.

use crate::error::Message;
use crate::plan::Market;
use crate::seam::compute::{ComputeError, Instance};
use std::future::Future;

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
            Err(ComputeError::Capacity { source, .. }) => {
                let market = if rung.spot { "spot" } else { "on-demand" };
                let detail = crate::error::chain(source.as_ref());
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
    Err(ComputeError::capacity(
        group,
        Message(format!("every option failed: {}", tried.join("; "))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seam::compute::InstanceState;
    use std::collections::BTreeMap;

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
            std::future::ready(answers.next().unwrap_or(Err(ComputeError::failed(
                "RunInstances",
                Message("unscripted".into()),
            ))))
        };
        (tried, f)
    }

    fn capacity() -> ComputeError {
        ComputeError::capacity(
            "gpu",
            Message("InsufficientInstanceCapacity: no g5 in us-east-1a".into()),
        )
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
        let denied = ComputeError::failed("RunInstances", Message("UnauthorizedOperation".into()));
        let (tried, f) = scripted(vec![Err(denied), Ok(vec![instance("never")])]);
        let e = climb("gpu", &rungs, f).await.unwrap_err();
        let text = crate::error::chain(&e);
        assert!(text.contains("UnauthorizedOperation"), "{text}");
        assert_eq!(tried.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn running_out_of_rungs_says_what_each_one_answered() {
        let rungs = ladder(&["a".to_owned()], Market::SpotOrOnDemand);
        let (_, f) = scripted(vec![Err(capacity()), Err(capacity())]);
        let e = climb("gpu", &rungs, f).await.unwrap_err();
        let text = crate::error::chain(&e);
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

/// EC2 answers a capacity error with HTTP 500, which the SDK would retry as a passing
/// server error, backing off on a rung that has no capacity: for a launch it is final
/// (the ladder moves on to the next type or market at once). Registered on the EC2
/// client ([`super::ec2_client`]); it runs after the SDK's own classifiers.
#[derive(Debug, Default)]
pub struct CapacityIsFinal;

impl aws_smithy_runtime_api::client::retries::classifiers::ClassifyRetry for CapacityIsFinal {
    fn classify_retry(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::InterceptorContext,
    ) -> aws_smithy_runtime_api::client::retries::classifiers::RetryAction {
        use aws_sdk_ec2::error::ProvideErrorMetadata;
        use aws_smithy_runtime_api::client::retries::classifiers::RetryAction;
        let code = match ctx.output_or_error() {
            Some(Err(e)) => e
                .as_operation_error()
                .and_then(|e| {
                    e.downcast_ref::<aws_sdk_ec2::operation::run_instances::RunInstancesError>()
                })
                .and_then(|e| e.code()),
            _ => None,
        };
        if is_capacity_error(code) {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "EC2 capacity errors are final for a rung"
    }

    fn priority(
        &self,
    ) -> aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority {
        use aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority;
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}
