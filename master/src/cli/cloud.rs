//! `squall launch`, `squall master` and `squall sweep`: starting a run on AWS as the
//! launcher Lambda does, the master's entry point on EC2, and sweeping what outlived its
//! deadline (local instances or EC2).
//!
//! Wiring only: the logic is [`crate::cloud`]'s.

use super::{default_agent, init_tracing, parse_duration, parse_vars};
use crate::backend::aws::Aws;
use crate::backend::aws::ec2::Ec2Settings;
use crate::backend::aws::s3::S3Store;
use crate::backend::local::{LocalCompute, LocalStore};
use crate::cloud::launch::{LaunchStatus, Launcher, Settings, Trigger, invoke_launcher};
use crate::cloud::master::{MasterOptions, run_master};
use crate::cloud::{sweep, upload};
use crate::exit;
use crate::record::{keys, runid};
use crate::runner::now_ms;
use crate::seam::{Compute, Store, compute};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `squall launch`'s arguments; each has the launcher Lambda's environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchArgs {
    /// The playbook file.
    pub playbook: PathBuf,
    /// Override a playbook variable: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// The bucket for playbooks, runs and binaries.
    #[arg(long, env = "SQUALL_BUCKET")]
    pub bucket: String,
    /// Send the run to this deployed launcher Lambda instead of launching from here.
    #[arg(long, value_name = "FUNCTION")]
    pub via_lambda: Option<String>,
    /// Upload this squall and its squall-worker to the bucket for the master (they
    /// must be Linux builds for the master's architecture).
    #[arg(long)]
    pub upload_binaries: bool,
    /// Run every item of cached stages again (their entries are rewritten).
    #[arg(long)]
    pub no_cache: bool,
    #[arg(long, env = "SQUALL_SUBNET", required_unless_present = "via_lambda")]
    pub subnet: Option<String>,
    /// The master's security groups (comma-separated).
    #[arg(
        long,
        env = "SQUALL_SECURITY_GROUPS",
        required_unless_present = "via_lambda"
    )]
    pub security_groups: Option<String>,
    /// The workers' security groups (comma-separated; default: the master's).
    #[arg(long, env = "SQUALL_WORKER_SECURITY_GROUPS")]
    pub worker_security_groups: Option<String>,
    /// The AMI of the master (and of workers whose group names none).
    #[arg(long, env = "SQUALL_IMAGE", required_unless_present = "via_lambda")]
    pub image: Option<String>,
    /// The master's instance profile.
    #[arg(long, env = "SQUALL_MASTER_PROFILE")]
    pub master_profile: Option<String>,
    #[arg(long, env = "SQUALL_MASTER_TYPE", default_value = "t3.small")]
    pub master_type: String,
    /// The deployed stack whose roles the master runs with: every instance is tagged
    /// with it, as the stack's IAM requires (the `StackName` of infra/template.yaml).
    #[arg(long, env = "SQUALL_STACK")]
    pub stack: Option<String>,
}

/// `squall master`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterArgs {
    /// s3://BUCKET/runs/RUN_ID/
    #[arg(long)]
    pub run: String,
    /// Where the master keeps its keys, files and log.
    #[arg(long, default_value = "/var/lib/squall")]
    pub work_dir: PathBuf,
    /// The squall-worker agent to install on workers (default: next to squall).
    #[arg(long, env = "SQUALL_WORKER_BIN")]
    pub agent: Option<PathBuf>,
    /// How long to keep retrying SSH to a booting worker.
    #[arg(long, env = "SQUALL_CONNECT_DEADLINE", value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub connect_deadline: Duration,
    /// How long launched workers may take to be running.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub running_deadline: Duration,
    /// How often status.json is rewritten.
    #[arg(long, env = "SQUALL_HEARTBEAT_EVERY", value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// This master's generation: 1 for the first; a watchdog starts generation N+1
    /// when generation N goes silent, which resumes the run from its journal.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub generation: u32,
    /// How often the run's journal is flushed to the bucket (at most 5s).
    #[arg(long, env = "SQUALL_JOURNAL_EVERY", value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub journal_every: Duration,
    /// How often every live worker's logs are snapshotted into the bucket.
    #[arg(long, env = "SQUALL_SNAPSHOT_EVERY", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub snapshot_every: Duration,
    /// How long a worker reached before may stay unreachable before it is lost.
    #[arg(long, env = "SQUALL_RECONNECT_DEADLINE", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub reconnect_deadline: Duration,
}

/// `squall sweep`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    #[arg(long, env = "SQUALL_HOME", default_value = ".squall")]
    pub home: PathBuf,
    /// Sweep EC2 (in the default region) and record in this bucket.
    #[arg(long, value_name = "s3://BUCKET")]
    pub store: Option<String>,
    /// Terminate every instance of this run, deadline or not.
    #[arg(long)]
    pub run: Option<String>,
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `squall launch`: validate locally, upload, then launch here or through the Lambda.
pub async fn launch(args: LaunchArgs) -> anyhow::Result<u8> {
    let overrides = parse_vars(&args.vars)?;
    let request = format!("{}-{}", now_ms(), runid::nonce());
    // The trigger is known before anything is uploaded: a playbook that needs an upload
    // (`trigger.url`) is refused here, as the launcher would.
    let fields = Trigger::Direct {
        playbook: String::new(),
        vars: overrides.clone(),
        request: request.clone(),
        no_cache: args.no_cache,
    }
    .fields();
    let Some(pb) = super::run::load_for_trigger(&args.playbook, &overrides, Some(&fields))? else {
        return Ok(exit::USAGE);
    };
    // A master on EC2 reads secrets from SSM only.
    if let Err(e) = crate::plan::secrets::check_for_ec2(&pb, None) {
        eprintln!("{e}");
        return Ok(exit::USAGE);
    }
    let aws = Aws::from_env().await;
    // Every source known now is checked before the upload, as the master will read it:
    // no absolute local path.
    let checks = crate::runner::preflight::Checks {
        trigger: Some(&fields),
        allow_absolute: false,
        s3: true,
    };
    // The stack's master role launches and ends only instances tagged with the stack.
    if args.master_profile.is_some() && args.stack.is_none() && args.via_lambda.is_none() {
        eprintln!(
            "squall: --master-profile runs the master as a deployed stack's role, which launches and ends only instances tagged with the stack: give --stack STACK_NAME (or SQUALL_STACK); nothing was launched"
        );
        return Ok(exit::USAGE);
    }
    let data = crate::backend::data::Stores::with_aws(aws.clone());
    if let Err(e) = crate::runner::preflight::check(&pb, &data, checks).await {
        eprintln!("{e}");
        return Ok(exit::USAGE);
    }
    let store = aws.store(&args.bucket, "");
    let key = match upload::upload_playbook(&store, &pb).await {
        Ok(key) => key,
        Err(e @ upload::UploadError::NotLiteral(_)) => {
            eprintln!("{e}");
            return Ok(exit::USAGE);
        }
        Err(e) => return Err(e.into()),
    };
    if args.upload_binaries {
        let squall = std::env::current_exe().context("failed to find the squall executable")?;
        upload::upload_binaries(&store, &squall, &default_agent()?).await?;
    }
    let trigger = Trigger::Direct {
        playbook: key,
        vars: overrides.clone(),
        request,
        no_cache: args.no_cache,
    };
    if let Some(function) = &args.via_lambda {
        let answer = invoke_launcher(&aws, function, &trigger).await?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
        let launched = answer["runs"]
            .as_array()
            .is_some_and(|r| r.iter().all(|o| o["status"] == "launched"));
        return Ok(if launched { exit::OK } else { exit::ERROR });
    }
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .ok_or_else(|| anyhow::anyhow!("--{what} is required without --via-lambda"))
    };
    let security_groups = split_list(&need(&args.security_groups, "security-groups")?);
    let settings = Settings {
        bucket: args.bucket.clone(),
        subnet: need(&args.subnet, "subnet")?,
        worker_security_groups: args
            .worker_security_groups
            .as_deref()
            .map(split_list)
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| security_groups.clone()),
        security_groups,
        master_profile: args.master_profile.clone(),
        image: need(&args.image, "image")?,
        master_type: args.master_type.clone(),
        uploads: Vec::new(),
        schedules: BTreeMap::new(),
        binary_key: "bin/squall".into(),
        agent_key: "bin/squall-worker".into(),
        stale_after: crate::cloud::settings::DEFAULT_STALE_AFTER,
        stale_claim: Duration::from_secs(crate::cloud::launch::STALE_CLAIM_SECS),
        launch_budget: None,
        watch_target: std::env::var("SQUALL_WATCH_TARGET")
            .ok()
            .filter(|s| !s.is_empty()),
        watch_role: std::env::var("SQUALL_WATCH_ROLE")
            .ok()
            .filter(|s| !s.is_empty()),
        stack: args.stack.clone().filter(|s| !s.is_empty()),
        secrets_prefix: None,
    };
    let outcome = Launcher::on_aws(&aws, settings)
        .handle_trigger(&trigger, now_ms() / 1000)
        .await?;
    let run = outcome.run_id.clone().unwrap_or_default();
    println!("run {run} {}", outcome.status);
    if let Some(m) = &outcome.master {
        println!("  master:  {m}");
    }
    if let Some(r) = &outcome.reason {
        println!("  reason:  {r}");
    }
    println!("  status:  {}", store.locate(&keys::status(&run)));
    println!("  record:  {}", store.locate(&keys::run_record(&run)));
    Ok(if outcome.status == LaunchStatus::Launched {
        exit::OK
    } else {
        exit::ERROR
    })
}

/// `squall master`: the master of a run on EC2, logging to its work dir.
pub async fn master(args: MasterArgs) -> anyhow::Result<u8> {
    let agent_binary = match args.agent {
        Some(a) => a,
        None => default_agent()?,
    };
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("failed to create {}", args.work_dir.display()))?;
    let master_log = args.work_dir.join("master.log");
    init_tracing(&master_log, false)?;
    Ok(run_master(MasterOptions {
        run_url: args.run,
        master_log,
        work_dir: args.work_dir,
        agent_binary,
        connect_deadline: args.connect_deadline,
        running_deadline: args.running_deadline,
        heartbeat_every: args.heartbeat,
        snapshot_every: args.snapshot_every,
        reconnect_deadline: args.reconnect_deadline,
        generation: args.generation,
        journal_every: args.journal_every,
    })
    .await?)
}

/// `squall sweep`: instances past their deadline (or all of one run) terminated from
/// their tags, recorded in their runs.
pub async fn sweep(args: SweepArgs) -> anyhow::Result<u8> {
    type Control = Option<Arc<dyn crate::seam::control::Control>>;
    let (compute, store, control): (Arc<dyn Compute>, Arc<dyn Store>, Control) = match &args.store {
        None => (
            Arc::new(LocalCompute::new(args.home.join("instances"))),
            Arc::new(LocalStore::new(args.home.join("store"))),
            None,
        ),
        Some(url) => {
            let Some((bucket, prefix)) = S3Store::parse_url(url) else {
                eprintln!("squall: --store expects s3://BUCKET, found `{url}`");
                return Ok(exit::USAGE);
            };
            let aws = Aws::from_env().await;
            (
                Arc::new(aws.compute(Ec2Settings::default())),
                Arc::new(aws.store(&bucket, &prefix)),
                // An abandoned run's login key and watchdog go with it.
                Some(Arc::new(aws.control(Default::default()))),
            )
        }
    };
    if let Some(run) = &args.run {
        let n = compute::teardown_run(compute.as_ref(), run).await?;
        println!("terminated {n} instance(s) of run {run}");
        return Ok(exit::OK);
    }
    let report = sweep::sweep(
        compute.as_ref(),
        Some(store.as_ref()),
        control.as_deref(),
        std::env::var("SQUALL_STACK")
            .ok()
            .as_deref()
            .filter(|s| !s.is_empty()),
        now_ms() / 1000,
    )
    .await?;
    println!(
        "terminated {} instance(s) past their deadline",
        report.count()
    );
    for (run, ids) in &report.terminated {
        println!("  run {run}: {}", ids.join(", "));
    }
    for run in &report.abandoned {
        println!("  run {run} recorded as abandoned");
    }
    for e in &report.errors {
        eprintln!("squall: warning: {e}");
    }
    Ok(if report.errors.is_empty() {
        exit::OK
    } else {
        exit::ERROR
    })
}
