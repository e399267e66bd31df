//! `squall run` and `squall validate`: a playbook run to the end on the embedded local
//! backend or on a static inventory's hosts over SSH, and playbooks checked.
//!
//! Wiring only: the run itself is [`crate::runner`]'s.

use super::{default_agent, init_tracing, parse_duration, parse_vars};
use crate::backend::inventory::{self, InventoryCompute};
use crate::backend::local::{self, LocalStore};
use crate::backend::ssh::{SshOptions, SshTransport};
use crate::exit;
use crate::plan::url::DataUrl;
use crate::plan::{self, LoadError, Plan};
use crate::record::runid;
use crate::runner::{self, RunOptions, preflight};
use crate::seam::Backends;
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `squall run`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The playbook file.
    pub playbook: PathBuf,
    /// Override a playbook variable: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Where local instances and the local store live.
    #[arg(long, env = "SQUALL_HOME", default_value = ".squall")]
    pub home: PathBuf,
    /// Use this run id instead of a fresh one.
    #[arg(long)]
    pub run_id: Option<String>,
    /// The squall-worker binary to install on hosts (default: next to squall).
    #[arg(long, env = "SQUALL_WORKER_BIN")]
    pub agent: Option<PathBuf>,
    /// Plain log lines even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Run on the hosts of this static inventory, over SSH, instead of local
    /// instances.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// How long to keep retrying an SSH connection that is refused or times out
    /// (e.g. 20s, 3m).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub connect_deadline: Duration,
    /// Run as if an upload of this object started the run: sets `trigger.url` (and
    /// `trigger.bucket`, `trigger.key` for an s3:// URL), so an upload playbook can be
    /// tried locally. A local path is allowed.
    #[arg(long, value_name = "URL")]
    pub trigger_url: Option<String>,
    /// Run every item of cached stages again (their entries are rewritten).
    #[arg(long)]
    pub no_cache: bool,
}

/// The trigger of a local run: manual, or an upload of `url`.
fn local_trigger(
    url: Option<&str>,
) -> Result<BTreeMap<String, serde_json::Value>, plan::url::BadUrl> {
    use serde_json::json;
    let user = json!(std::env::var("USER").unwrap_or_default());
    let Some(url) = url else {
        return Ok(BTreeMap::from([
            ("kind".to_owned(), json!("manual")),
            ("user".to_owned(), user),
        ]));
    };
    let mut t = BTreeMap::from([
        ("kind".to_owned(), json!("s3")),
        ("url".to_owned(), json!(url)),
        ("user".to_owned(), user),
    ]);
    match DataUrl::parse(url)? {
        DataUrl::S3 { bucket, key } => {
            t.insert("bucket".into(), json!(bucket));
            t.insert("key".into(), json!(key));
        }
        DataUrl::Local(p) => {
            t.insert("bucket".into(), json!(""));
            t.insert("key".into(), json!(p.display().to_string()));
        }
    }
    Ok(t)
}

/// `squall validate FILE...`: every problem of every playbook, local `copy` sources and
/// listings included (S3 ones are checked by `squall run` and the launcher).
pub async fn validate(files: &[PathBuf]) -> u8 {
    let mut code = exit::OK;
    let data = crate::backend::data::Stores::new();
    for file in files {
        let checked = match plan::load(file, &BTreeMap::new()) {
            Ok(pb) => {
                let checks = preflight::Checks {
                    trigger: None,
                    allow_absolute: true,
                    s3: false,
                };
                preflight::check(&pb, &data, checks)
                    .await
                    .map(|()| pb)
                    .map_err(LoadError::Invalid)
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok(pb) => println!(
                "{}: ok ({} stage(s), {} group(s))",
                file.display(),
                pb.stages.len(),
                pb.fleet.len()
            ),
            Err(e) => {
                eprintln!("{e}");
                code = exit::USAGE;
            }
        }
    }
    code
}

/// Loads a playbook for a command; `Ok(None)` when it is invalid (already reported).
pub fn load_or_report(
    file: &Path,
    overrides: &BTreeMap<String, String>,
) -> anyhow::Result<Option<Plan>> {
    load_for_trigger(file, overrides, None)
}

/// [`load_or_report`] for a known trigger.
pub fn load_for_trigger(
    file: &Path,
    overrides: &BTreeMap<String, String>,
    trigger: Option<&BTreeMap<String, serde_json::Value>>,
) -> anyhow::Result<Option<Plan>> {
    match plan::load_for(file, overrides, trigger) {
        Ok(pb) => Ok(Some(pb)),
        Err(e @ LoadError::Invalid(_)) => {
            eprintln!("{e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The backends for a run: local instances, or an inventory's hosts over SSH. With an
/// inventory, the playbook's groups become the inventory's (see `Inventory::apply`).
/// `None` when the inventory is invalid (already reported).
fn backends(
    home: &Path,
    inventory_file: Option<&Path>,
    connect_deadline: Duration,
    pb: &mut Plan,
) -> anyhow::Result<Option<(Backends, Option<Arc<SshTransport>>)>> {
    let Some(inv_file) = inventory_file else {
        return Ok(Some((local::backends(home), None)));
    };
    let inv = match inventory::load(inv_file, &home.join("ssh"))
        .and_then(|inv| inv.apply(pb, inv_file).map(|()| inv))
    {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("{e}");
            return Ok(None);
        }
    };
    let control_dir = std::env::temp_dir().join(format!("squall-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&control_dir)
        .with_context(|| format!("failed to create {}", control_dir.display()))?;
    let transport = Arc::new(SshTransport::new(
        SshOptions {
            control_dir,
            connect_deadline,
            ..SshOptions::default()
        },
        None,
    ));
    let compute = InventoryCompute::new(inv, transport.clone());
    let b = Backends {
        compute: Arc::new(compute),
        transport: transport.clone(),
        store: Arc::new(LocalStore::new(home.join("store"))),
        data: Arc::new(crate::backend::data::Stores::new()),
    };
    Ok(Some((b, Some(transport))))
}

/// The playbook's secrets, read where squall runs (`ssm:` ones with the AWS
/// configuration of the environment).
async fn read_secrets(pb: &Plan) -> Result<plan::secrets::Secrets, plan::Invalid> {
    use plan::secrets::SecretSource;
    let control = if pb
        .secrets
        .values()
        .any(|d| matches!(d.source, SecretSource::Ssm(_)))
    {
        let aws = crate::backend::aws::Aws::from_env().await;
        Some(aws.control(Default::default()))
    } else {
        None
    };
    runner::secrets::resolve(
        pb,
        control
            .as_ref()
            .map(|c| c as &dyn crate::seam::control::Control),
    )
    .await
}

/// `squall run`: the playbook to the end; prints where its record and logs are.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let overrides = parse_vars(&args.vars)?;
    let trigger = match local_trigger(args.trigger_url.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("squall: --trigger-url: {e}");
            return Ok(exit::USAGE);
        }
    };
    let Some(mut pb) = load_for_trigger(&args.playbook, &overrides, Some(&trigger))? else {
        return Ok(exit::USAGE);
    };
    let agent_binary = match &args.agent {
        Some(a) => a.clone(),
        None => default_agent()?,
    };
    std::fs::create_dir_all(&args.home)
        .with_context(|| format!("failed to create {}", args.home.display()))?;
    let home = args
        .home
        .canonicalize()
        .with_context(|| format!("failed to resolve {}", args.home.display()))?;
    let now = runner::now_ms() / 1000;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| runid::manual(&pb.name, now, runid::nonce()));
    if !runid::valid(&run_id) {
        eprintln!(
            "squall: invalid run id `{run_id}`: expected lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 48 characters"
        );
        return Ok(exit::USAGE);
    }
    let Some((run_backends, ssh_transport)) = backends(
        &home,
        args.inventory.as_deref(),
        args.connect_deadline,
        &mut pb,
    )?
    else {
        return Ok(exit::USAGE);
    };
    let log_dir = home.join("master-logs");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("failed to create {}", log_dir.display()))?;
    let master_log = log_dir.join(format!("{run_id}.log"));
    let live = !args.no_progress && std::io::stderr().is_terminal();
    init_tracing(&master_log, live)?;

    let checks = preflight::Checks {
        trigger: Some(&trigger),
        allow_absolute: true,
        s3: true,
    };
    if let Err(e) = preflight::check(&pb, run_backends.data.as_ref(), checks).await {
        eprintln!("{e}");
        return Ok(exit::USAGE);
    }
    // Secrets are read now, before anything launches, and masked from here on in the
    // master's log.
    let secrets = match read_secrets(&pb).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit::USAGE);
        }
    };
    runner::secrets::mask_logs(secrets.masks());
    let opts = RunOptions {
        run_id: run_id.clone(),
        trigger,
        agent_binary,
        wait_poll_secs: 5,
        heartbeat_every: Duration::from_secs(15),
        progress_bar: live,
        master_log: Some(master_log),
        handle_signals: true,
        worker_user_data: BTreeMap::new(),
        snapshot_every: None,
        allow_absolute_sources: true,
        use_cache: !args.no_cache,
        journal: None,
        stack: None,
        secrets,
        transfers: None,
    };
    let summary = runner::run(Arc::new(pb), run_backends, opts).await;
    if let Some(ssh) = ssh_transport {
        ssh.close_all().await;
    }
    let summary = summary?;
    let rec = &summary.record;
    let took = rec.ended_at_ms.unwrap_or(rec.started_at_ms) - rec.started_at_ms;
    println!(
        "run {} {} in {:.1}s",
        rec.run_id,
        rec.status.as_str(),
        took as f64 / 1000.0
    );
    if let Some(reason) = &rec.reason {
        println!("  reason:  {reason}");
    }
    println!("  record:  {}", summary.record_location);
    println!("  report:  {}", summary.report_location);
    for (i, (host, at)) in summary.archives.iter().enumerate() {
        let label = if i == 0 { "  logs:" } else { "" };
        println!("{label:<9}{at}  ({host})");
    }
    Ok(exit::for_status(rec.status))
}
