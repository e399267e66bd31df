//! What the launcher needs besides the event: the bucket, the master's subnet, security
//! groups, image and type, which uploads and schedules start which playbook; read from
//! the Lambda's environment (the same variables `squall launch` takes as flags).
//!
//! Only reading settings; using them is [`super::launch`]'s job.

use super::launch::LaunchError;
use std::collections::BTreeMap;

/// What the launcher needs besides the event; read from environment variables by
/// [`Settings::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The bucket holding playbooks, runs and the squall binary (`SQUALL_BUCKET`).
    pub bucket: String,
    /// Subnet of the master (`SQUALL_SUBNET`).
    pub subnet: String,
    /// Security groups of the master (`SQUALL_SECURITY_GROUPS`, comma-separated).
    pub security_groups: Vec<String>,
    /// Instance profile of the master (`SQUALL_MASTER_PROFILE`).
    pub master_profile: Option<String>,
    /// AMI of the master (`SQUALL_IMAGE`).
    pub image: String,
    /// Instance type of the master (`SQUALL_MASTER_TYPE`, default `t3.small`).
    pub master_type: String,
    /// Upload prefixes and the playbook each starts (`SQUALL_UPLOADS`:
    /// `inbox/=playbooks/nightly.yml,scans/=playbooks/scan.yml`).
    pub uploads: Vec<(String, String)>,
    /// Schedule rule names and the playbook each starts (`SQUALL_SCHEDULES`:
    /// `squall-nightly=playbooks/nightly.yml`).
    pub schedules: BTreeMap<String, String>,
    /// Key of the `squall` binary the master runs (`SQUALL_BINARY_KEY`, default
    /// `bin/squall`).
    pub binary_key: String,
    /// Key of the `squall-worker` agent the master installs on workers
    /// (`SQUALL_AGENT_KEY`, default `bin/squall-worker`).
    pub agent_key: String,
    /// Security groups of the workers (`SQUALL_WORKER_SECURITY_GROUPS`,
    /// comma-separated; default: the master's). They must let the master in on port 22.
    pub worker_security_groups: Vec<String>,
    /// A run whose heartbeat is older than this, with no record, is taken over by its
    /// watchdog (`SQUALL_STALE_AFTER`, default 3m).
    pub stale_after: std::time::Duration,
    /// A launch attempt's claim this old, neither launched nor noted failed, is taken
    /// over by a later delivery (`SQUALL_STALE_CLAIM`, default 3m; it must stay above
    /// the launcher's own timeout).
    pub stale_claim: std::time::Duration,
    /// The longest a launch may take once its attempt is claimed
    /// (`SQUALL_LAUNCH_BUDGET`; none: no bound): past it the attempt is noted failed so
    /// that the next delivery takes over at once. Below the launcher function's timeout.
    pub launch_budget: Option<std::time::Duration>,
    /// The launcher function each run's watchdog schedule invokes
    /// (`SQUALL_WATCH_TARGET`, an ARN); no schedule is made without it.
    pub watch_target: Option<String>,
    /// The role EventBridge Scheduler assumes to invoke it (`SQUALL_WATCH_ROLE`).
    pub watch_role: Option<String>,
    /// The stack the launcher belongs to (`SQUALL_STACK`): every instance of its runs
    /// is tagged `squall:stack` with it, and the stack's roles end only those.
    pub stack: Option<String>,
    /// The SSM path the stack's master may read secrets under (`SQUALL_SECRETS_PREFIX`,
    /// the stack's `SecretsPrefix`): a playbook's `ssm:` secret elsewhere is refused
    /// before launch.
    pub secrets_prefix: Option<String>,
}

/// How long a run's heartbeat may be silent before its watchdog takes over.
pub const DEFAULT_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(180);

impl Settings {
    /// Reads settings through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, LaunchError> {
        let need = |k: &str| {
            get(k)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| LaunchError::permanent(format!("missing setting {k}")))
        };
        let pairs = |k: &str| -> Result<Vec<(String, String)>, LaunchError> {
            get(k)
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|p| {
                    p.split_once('=')
                        .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
                        .ok_or_else(|| {
                            LaunchError::permanent(format!(
                                "{k}: expected NAME=PLAYBOOK, found `{p}`"
                            ))
                        })
                })
                .collect()
        };
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let duration =
            |k: &str, default: std::time::Duration| match get(k).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => crate::plan::duration::Dur::parse(v.trim())
                    .map(|d| d.0)
                    .map_err(|e| LaunchError::permanent(format!("{k}: {e}"))),
            };
        let security_groups = list(need("SQUALL_SECURITY_GROUPS")?);
        Ok(Settings {
            bucket: need("SQUALL_BUCKET")?,
            subnet: need("SQUALL_SUBNET")?,
            worker_security_groups: get("SQUALL_WORKER_SECURITY_GROUPS")
                .map(list)
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| security_groups.clone()),
            security_groups,
            master_profile: get("SQUALL_MASTER_PROFILE").filter(|s| !s.is_empty()),
            image: need("SQUALL_IMAGE")?,
            master_type: get("SQUALL_MASTER_TYPE").unwrap_or_else(|| "t3.small".into()),
            uploads: pairs("SQUALL_UPLOADS")?,
            schedules: pairs("SQUALL_SCHEDULES")?.into_iter().collect(),
            binary_key: get("SQUALL_BINARY_KEY").unwrap_or_else(|| "bin/squall".into()),
            agent_key: get("SQUALL_AGENT_KEY").unwrap_or_else(|| "bin/squall-worker".into()),
            stale_after: duration("SQUALL_STALE_AFTER", DEFAULT_STALE_AFTER)?,
            launch_budget: match get("SQUALL_LAUNCH_BUDGET").filter(|v| !v.trim().is_empty()) {
                None => None,
                Some(_) => Some(duration("SQUALL_LAUNCH_BUDGET", std::time::Duration::ZERO)?),
            },
            stale_claim: duration(
                "SQUALL_STALE_CLAIM",
                std::time::Duration::from_secs(super::launch::STALE_CLAIM_SECS),
            )?,
            watch_target: get("SQUALL_WATCH_TARGET").filter(|s| !s.trim().is_empty()),
            watch_role: get("SQUALL_WATCH_ROLE").filter(|s| !s.trim().is_empty()),
            stack: get("SQUALL_STACK").filter(|s| !s.trim().is_empty()),
            secrets_prefix: get("SQUALL_SECRETS_PREFIX").filter(|s| !s.trim().is_empty()),
        })
    }
}
