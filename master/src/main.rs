//! The `squall` command line: parses arguments, sets up logging, and calls the library.
//!
//! No logic lives here beyond wiring; exit codes are defined in `squall::exit`.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use squall::compute::{self, Compute};
use squall::{exit, local, playbook, runid, runner, ssh};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "squall", version, about = "Burst orchestrator for long jobs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a playbook to the end on the local backend.
    Run {
        /// The playbook file.
        playbook: PathBuf,
        /// Override a playbook variable: NAME=VALUE (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Where local instances and the local store live.
        #[arg(long, env = "SQUALL_HOME", default_value = ".squall")]
        home: PathBuf,
        /// Use this run id instead of a fresh one.
        #[arg(long)]
        run_id: Option<String>,
        /// The squall-worker binary to install on hosts (default: next to squall).
        #[arg(long, env = "SQUALL_WORKER_BIN")]
        agent: Option<PathBuf>,
        /// Plain log lines even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Run on the hosts of this static inventory, over SSH, instead of local
        /// instances.
        #[arg(long, value_name = "FILE")]
        inventory: Option<PathBuf>,
        /// How long to keep retrying an SSH connection that is refused or times out
        /// (e.g. 20s, 3m).
        #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
        connect_deadline: Duration,
    },
    /// Check playbooks and print every problem with its file, line and column.
    Validate {
        #[arg(required = true)]
        playbooks: Vec<PathBuf>,
    },
    /// Terminate instances whose deadline has passed (or all of one run) and record it
    /// in their runs: local instances, or EC2 ones with `--store s3://BUCKET`.
    Sweep {
        #[arg(long, env = "SQUALL_HOME", default_value = ".squall")]
        home: PathBuf,
        /// Sweep EC2 (in the default region) and record in this bucket.
        #[arg(long, value_name = "s3://BUCKET")]
        store: Option<String>,
        /// Terminate every instance of this run, deadline or not.
        #[arg(long)]
        run: Option<String>,
    },
    /// List runs, newest first.
    Runs {
        #[command(flatten)]
        at: StoreArgs,
        /// Only runs started within this long (e.g. 7d, 12h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<Duration>,
        /// Only runs with this status (succeeded, failed, deadline_exceeded, cancelled,
        /// abandoned, running, stale, launched).
        #[arg(long)]
        status: Option<String>,
        /// JSON lines for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A run's phase, stages, hosts and heartbeat.
    Status {
        run: String,
        #[command(flatten)]
        at: StoreArgs,
        /// Refresh every 2 s until the run ends.
        #[arg(long)]
        watch: bool,
    },
    /// Print a run's logs straight from its archives, prefixed `HOST TASK STREAM|`.
    Logs {
        run: String,
        #[command(flatten)]
        at: StoreArgs,
        #[arg(long)]
        host: Option<String>,
        /// A task id or its prefix (e.g. s1-u3).
        #[arg(long)]
        task: Option<String>,
        /// Only lines containing this text.
        #[arg(long, value_name = "PATTERN")]
        grep: Option<String>,
        /// Keep printing new lines of a live run (from its log snapshots) until it ends.
        #[arg(long)]
        follow: bool,
        /// Unpack every archive into DIR/HOST/ instead of printing.
        #[arg(long, value_name = "DIR")]
        extract: Option<PathBuf>,
    },
    /// Write (again) a run's report.html from its record and archives.
    Report {
        run: String,
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Start a run on AWS as the launcher Lambda would: upload the playbook, claim the
    /// run, start its master, and return.
    Launch(LaunchArgs),
    /// The master of a run on EC2 (started by the master's user-data): runs the run at
    /// s3://BUCKET/runs/RUN_ID/ to the end, then terminates this instance.
    Master {
        /// s3://BUCKET/runs/RUN_ID/
        #[arg(long)]
        run: String,
        /// Where the master keeps its keys, files and log.
        #[arg(long, default_value = "/var/lib/squall")]
        work_dir: PathBuf,
        /// The squall-worker agent to install on workers (default: next to squall).
        #[arg(long, env = "SQUALL_WORKER_BIN")]
        agent: Option<PathBuf>,
        /// How long to keep retrying SSH to a booting worker.
        #[arg(long, env = "SQUALL_CONNECT_DEADLINE", value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        connect_deadline: Duration,
        /// How long launched workers may take to be running.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        running_deadline: Duration,
        /// How often status.json is rewritten.
        #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
        heartbeat: Duration,
        /// How often every live worker's logs are snapshotted into the bucket.
        #[arg(long, env = "SQUALL_SNAPSHOT_EVERY", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
        snapshot_every: Duration,
        /// How long a worker reached before may stay unreachable before it is lost.
        #[arg(long, env = "SQUALL_RECONNECT_DEADLINE", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
        reconnect_deadline: Duration,
    },
}

/// Where `runs`, `status`, `logs` and `report` read runs.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The store: s3://BUCKET[/PREFIX], or a folder (default: the local store under
    /// --home).
    #[arg(long)]
    store: Option<String>,
    #[arg(long, env = "SQUALL_HOME", default_value = ".squall")]
    home: PathBuf,
}

/// `squall launch`'s arguments; each has the launcher Lambda's environment variable.
#[derive(Debug, clap::Args)]
struct LaunchArgs {
    /// The playbook file.
    playbook: PathBuf,
    /// Override a playbook variable: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// The bucket for playbooks, runs and binaries.
    #[arg(long, env = "SQUALL_BUCKET")]
    bucket: String,
    /// Send the run to this deployed launcher Lambda instead of launching from here.
    #[arg(long, value_name = "FUNCTION")]
    via_lambda: Option<String>,
    /// Upload this squall and its squall-worker to the bucket for the master (they
    /// must be Linux builds for the master's architecture).
    #[arg(long)]
    upload_binaries: bool,
    #[arg(long, env = "SQUALL_SUBNET", required_unless_present = "via_lambda")]
    subnet: Option<String>,
    /// The master's security groups (comma-separated).
    #[arg(
        long,
        env = "SQUALL_SECURITY_GROUPS",
        required_unless_present = "via_lambda"
    )]
    security_groups: Option<String>,
    /// The workers' security groups (comma-separated; default: the master's).
    #[arg(long, env = "SQUALL_WORKER_SECURITY_GROUPS")]
    worker_security_groups: Option<String>,
    /// The AMI of the master (and of workers whose group names none).
    #[arg(long, env = "SQUALL_IMAGE", required_unless_present = "via_lambda")]
    image: Option<String>,
    /// The master's instance profile.
    #[arg(long, env = "SQUALL_MASTER_PROFILE")]
    master_profile: Option<String>,
    #[arg(long, env = "SQUALL_MASTER_TYPE", default_value = "t3.small")]
    master_type: String,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let result = match cli.command {
        Command::Validate { playbooks } => Ok(validate(&playbooks)),
        Command::Run {
            playbook,
            vars,
            home,
            run_id,
            agent,
            no_progress,
            inventory,
            connect_deadline,
        } => run(&RunArgs {
            file: &playbook,
            vars: &vars,
            home: &home,
            run_id,
            agent,
            no_progress,
            inventory: inventory.as_deref(),
            connect_deadline,
        }),
        Command::Sweep { home, store, run } => sweep(&home, store.as_deref(), run.as_deref()),
        Command::Launch(args) => launch(&args),
        Command::Runs {
            at,
            since,
            status,
            json,
        } => inspect_runs(&at, since, status, json),
        Command::Status { run, at, watch } => inspect_status(&at, &run, watch),
        Command::Logs {
            run,
            at,
            host,
            task,
            grep,
            follow,
            extract,
        } => inspect_logs(
            &at,
            &run,
            squall::inspect::LogFilter { host, task, grep },
            follow,
            extract.as_deref(),
        ),
        Command::Report { run, at } => inspect_report(&at, &run),
        Command::Master {
            run,
            work_dir,
            agent,
            connect_deadline,
            running_deadline,
            heartbeat,
            snapshot_every,
            reconnect_deadline,
        } => master(squall::cloud::MasterOptions {
            run_url: run,
            master_log: work_dir.join("master.log"),
            work_dir,
            agent_binary: match agent {
                Some(a) => a,
                None => match default_agent() {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("squall: error: {e:#}");
                        return ExitCode::from(exit::ERROR);
                    }
                },
            },
            connect_deadline,
            running_deadline,
            heartbeat_every: heartbeat,
            snapshot_every,
            reconnect_deadline,
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("squall: error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

fn validate(files: &[PathBuf]) -> u8 {
    let mut code = exit::OK;
    for file in files {
        match playbook::load(file, &BTreeMap::new()) {
            Ok(pb) => println!(
                "{}: ok ({} stage(s), {} group(s))",
                file.display(),
                pb.playbook.stages.value.len(),
                pb.playbook.fleet.value.len()
            ),
            Err(e) => {
                eprintln!("{e}");
                code = exit::USAGE;
            }
        }
    }
    code
}

fn parse_vars(vars: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    vars.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--var expects NAME=VALUE, found `{kv}`"),
        })
        .collect()
}

fn default_agent() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("failed to find the squall executable")?;
    let agent = exe.with_file_name("squall-worker");
    if agent.is_file() {
        Ok(agent)
    } else {
        bail!(
            "failed to find the squall-worker agent at {} (build it, or pass --agent)",
            agent.display()
        )
    }
}

/// `squall run`'s arguments.
#[derive(Debug)]
struct RunArgs<'a> {
    file: &'a Path,
    vars: &'a [String],
    home: &'a Path,
    run_id: Option<String>,
    agent: Option<PathBuf>,
    no_progress: bool,
    inventory: Option<&'a Path>,
    connect_deadline: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    playbook::Dur::parse(s)
        .map(|d| d.0)
        .ok_or_else(|| format!("expected a duration like 20s or 3m, found `{s}`"))
}

/// The backends for a run: local instances, or an inventory's hosts over SSH. With an
/// inventory, the playbook's groups become the inventory's (see `Inventory::apply`).
/// `None` when the inventory is invalid (already reported).
fn backends(
    home: &Path,
    inventory: Option<&Path>,
    connect_deadline: Duration,
    pb: &mut playbook::Loaded,
) -> anyhow::Result<Option<(runner::Backends, Option<Arc<ssh::SshTransport>>)>> {
    let Some(inv_file) = inventory else {
        return Ok(Some((local::backends(home), None)));
    };
    let inv = match squall::inventory::load(inv_file, &home.join("ssh"))
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
    let transport = Arc::new(ssh::SshTransport::new(
        ssh::SshOptions {
            control_dir,
            connect_deadline,
            ..ssh::SshOptions::default()
        },
        None,
    ));
    let compute = squall::inventory::InventoryCompute::new(inv, transport.clone());
    let b = runner::Backends {
        compute: Arc::new(compute),
        transport: transport.clone(),
        store: Arc::new(local::LocalStore::new(home.join("store"))),
    };
    Ok(Some((b, Some(transport))))
}

fn run(args: &RunArgs<'_>) -> anyhow::Result<u8> {
    let RunArgs {
        file, vars, home, ..
    } = *args;
    let overrides = parse_vars(vars)?;
    let mut pb = match playbook::load(file, &overrides) {
        Ok(pb) => pb,
        Err(e @ playbook::LoadError::Invalid(_)) => {
            eprintln!("{e}");
            return Ok(exit::USAGE);
        }
        Err(e) => return Err(e.into()),
    };
    let agent_binary = match &args.agent {
        Some(a) => a.clone(),
        None => default_agent()?,
    };
    std::fs::create_dir_all(home)
        .with_context(|| format!("failed to create {}", home.display()))?;
    let home = home
        .canonicalize()
        .with_context(|| format!("failed to resolve {}", home.display()))?;
    let now = runner::now_ms() / 1000;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| runid::manual(&pb.playbook.name.value, now, runid::nonce()));
    if !runid::valid(&run_id) {
        eprintln!(
            "squall: invalid run id `{run_id}`: expected lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 48 characters"
        );
        return Ok(exit::USAGE);
    }
    let Some((run_backends, ssh_transport)) =
        backends(&home, args.inventory, args.connect_deadline, &mut pb)?
    else {
        return Ok(exit::USAGE);
    };
    let log_dir = home.join("master-logs");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("failed to create {}", log_dir.display()))?;
    let master_log = log_dir.join(format!("{run_id}.log"));
    let live = !args.no_progress && std::io::stderr().is_terminal();
    init_tracing(&master_log, live)?;

    let trigger = BTreeMap::from([
        ("kind".to_owned(), serde_json::json!("manual")),
        (
            "user".to_owned(),
            serde_json::json!(std::env::var("USER").unwrap_or_default()),
        ),
    ]);
    let opts = runner::RunOptions {
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
    };
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    let summary = rt.block_on(async {
        let summary = runner::run(Arc::new(pb), run_backends, opts).await;
        if let Some(ssh) = ssh_transport {
            ssh.close_all().await;
        }
        summary
    })?;
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

fn init_tracing(log_file: &Path, live: bool) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let file = std::fs::File::create(log_file)
        .with_context(|| format!("failed to create {}", log_file.display()))?;
    let console_level = if live { "warn" } else { "info" };
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(
            EnvFilter::try_from_env("SQUALL_LOG").unwrap_or_else(|_| EnvFilter::new(console_level)),
        );
    let to_file = tracing_subscriber::fmt::layer()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .with_filter(EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(console)
        .with(to_file)
        .try_init()
        .context("failed to set up logging")
}

use tracing_subscriber::Layer as _;

fn sweep(home: &Path, store: Option<&str>, run: Option<&str>) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async {
        let (compute, store): (Arc<dyn Compute>, Arc<dyn squall::store::Store>) = match store {
            None => (
                Arc::new(local::LocalCompute::new(home.join("instances"))),
                Arc::new(local::LocalStore::new(home.join("store"))),
            ),
            Some(url) => {
                let Some((bucket, prefix)) = squall::s3::S3Store::parse_url(url) else {
                    eprintln!("squall: --store expects s3://BUCKET, found `{url}`");
                    return Ok(exit::USAGE);
                };
                let conf = squall::aws::sdk_config(None).await;
                (
                    Arc::new(squall::ec2::Ec2Compute::new(
                        squall::aws::ec2_client(&conf),
                        squall::ec2::Ec2Settings::default(),
                    )),
                    Arc::new(squall::s3::S3Store::new(
                        squall::aws::s3_client(&conf),
                        bucket,
                        prefix,
                    )),
                )
            }
        };
        if let Some(run) = run {
            let n = compute::teardown_run(compute.as_ref(), run).await?;
            println!("terminated {n} instance(s) of run {run}");
            return Ok(exit::OK);
        }
        let report = squall::sweep::sweep(
            compute.as_ref(),
            Some(store.as_ref()),
            runner::now_ms() / 1000,
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
    })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn launch(args: &LaunchArgs) -> anyhow::Result<u8> {
    use squall::launch::{Launcher, Settings, Trigger};
    let overrides = parse_vars(&args.vars)?;
    let pb = match playbook::load(&args.playbook, &overrides) {
        Ok(pb) => pb,
        Err(e @ playbook::LoadError::Invalid(_)) => {
            eprintln!("{e}");
            return Ok(exit::USAGE);
        }
        Err(e) => return Err(e.into()),
    };
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async {
        let conf = squall::aws::sdk_config(None).await;
        let store = squall::s3::S3Store::new(squall::aws::s3_client(&conf), &args.bucket, "");
        if args.upload_binaries {
            let squall_bin =
                std::env::current_exe().context("failed to find the squall executable")?;
            for (path, key) in [
                (squall_bin, "bin/squall"),
                (default_agent()?, "bin/squall-worker"),
            ] {
                let mut f = tokio::fs::File::open(&path)
                    .await
                    .with_context(|| format!("failed to open {}", path.display()))?;
                squall::store::Store::put_stream(&store, key, &mut f).await?;
            }
        }
        let key = squall::launch::upload_playbook(&store, &pb)
            .await
            .map_err(anyhow::Error::msg)?;
        let trigger = Trigger::Direct {
            playbook: key,
            vars: overrides.clone(),
            request: format!("{}-{}", runner::now_ms(), runid::nonce()),
        };
        if let Some(function) = &args.via_lambda {
            let answer = squall::launch::invoke_lambda(
                &squall::aws::lambda_client(&conf),
                function,
                &trigger,
            )
            .await
            .map_err(anyhow::Error::msg)?;
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
        };
        let launcher = Launcher {
            compute: Arc::new(squall::ec2::Ec2Compute::new(
                squall::aws::ec2_client(&conf),
                squall::ec2::Ec2Settings {
                    subnet: Some(settings.subnet.clone()),
                    security_groups: settings.security_groups.clone(),
                    image: Some(settings.image.clone()),
                    instance_type: Some(settings.master_type.clone()),
                    running_deadline: Duration::ZERO,
                },
            )),
            store: Arc::new(store.clone()),
            settings,
        };
        let outcome = launcher
            .handle_trigger(&trigger, runner::now_ms() / 1000)
            .await?;
        let run = outcome.run_id.clone().unwrap_or_default();
        println!("run {run} {}", outcome.status);
        if let Some(m) = &outcome.master {
            println!("  master:  {m}");
        }
        if let Some(r) = &outcome.reason {
            println!("  reason:  {r}");
        }
        let locate = |k: String| squall::store::Store::locate(&store, &k);
        println!("  status:  {}", locate(squall::store::keys::status(&run)));
        println!(
            "  record:  {}",
            locate(squall::store::keys::run_record(&run))
        );
        Ok(if outcome.status == "launched" {
            exit::OK
        } else {
            exit::ERROR
        })
    })
}

fn master(opts: squall::cloud::MasterOptions) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("failed to create {}", opts.work_dir.display()))?;
    init_tracing(&opts.master_log, false)?;
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    Ok(rt.block_on(squall::cloud::run_master(opts))?)
}

/// The store `--store` names: `s3://BUCKET[/PREFIX]`, a folder, or the local store.
async fn open_store(at: &StoreArgs) -> anyhow::Result<Arc<dyn squall::store::Store>> {
    Ok(match at.store.as_deref() {
        None => Arc::new(local::LocalStore::new(at.home.join("store"))),
        Some(url) if url.starts_with("s3://") => {
            let Some((bucket, prefix)) = squall::s3::S3Store::parse_url(url) else {
                bail!("--store expects s3://BUCKET[/PREFIX], found `{url}`");
            };
            let conf = squall::aws::sdk_config(None).await;
            Arc::new(squall::s3::S3Store::new(
                squall::aws::s3_client(&conf),
                bucket,
                prefix,
            ))
        }
        Some(dir) => Arc::new(local::LocalStore::new(dir)),
    })
}

fn inspect_runs(
    at: &StoreArgs,
    since: Option<Duration>,
    status: Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async {
        let store = open_store(at).await?;
        let now = runner::now_ms();
        let filter = squall::inspect::RunFilter {
            since_ms: since.map(|d| now.saturating_sub(d.as_millis() as u64)),
            status,
        };
        let rows = squall::inspect::runs(store.as_ref(), &filter, now).await?;
        if json {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        } else {
            print!("{}", squall::inspect::table(&rows));
        }
        Ok(exit::OK)
    })
}

fn inspect_status(at: &StoreArgs, run: &str, watch: bool) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async {
        let store = open_store(at).await?;
        let live = watch && std::io::stdout().is_terminal();
        loop {
            let Some(k) = squall::inspect::known(store.as_ref(), run).await? else {
                eprintln!("squall: no run `{run}` in {}", store.locate("runs/"));
                return Ok(exit::USAGE);
            };
            let text = squall::inspect::status_text(run, &k, runner::now_ms());
            if live {
                // Clear the screen and redraw.
                print!("\x1b[2J\x1b[H{text}");
            } else {
                print!("{text}");
            }
            if !watch || squall::inspect::ended(&k) {
                return Ok(exit::OK);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            if !live {
                println!("--");
            }
        }
    })
}

fn inspect_logs(
    at: &StoreArgs,
    run: &str,
    filter: squall::inspect::LogFilter,
    follow: bool,
    extract: Option<&Path>,
) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async {
        let store = open_store(at).await?;
        if squall::inspect::known(store.as_ref(), run).await?.is_none() {
            eprintln!("squall: no run `{run}` in {}", store.locate("runs/"));
            return Ok(exit::USAGE);
        }
        if let Some(dir) = extract {
            let n = squall::inspect::extract(store.as_ref(), run, dir)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("extracted {n} archive(s) into {}", dir.display());
            return Ok(exit::OK);
        }
        let mut seen = BTreeMap::new();
        loop {
            squall::inspect::print_logs(store.as_ref(), run, &filter, &mut seen)
                .await
                .map_err(anyhow::Error::msg)?;
            let done = squall::inspect::known(store.as_ref(), run)
                .await?
                .is_some_and(|k| squall::inspect::ended(&k));
            if !follow || done {
                if follow {
                    // The final archives may hold lines the last snapshots had not.
                    squall::inspect::print_logs(store.as_ref(), run, &filter, &mut seen)
                        .await
                        .map_err(anyhow::Error::msg)?;
                }
                return Ok(exit::OK);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}

fn inspect_report(at: &StoreArgs, run: &str) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async {
        let store = open_store(at).await?;
        let Some(squall::inspect::Known::Recorded(rec)) =
            squall::inspect::known(store.as_ref(), run).await?
        else {
            eprintln!("squall: run `{run}` has no run.json yet");
            return Ok(exit::USAGE);
        };
        let tails = squall::inspect::stderr_tails(store.as_ref(), &rec, 20).await;
        let key = squall::store::keys::report(run);
        store
            .put(&key, squall::report::render(&rec, &tails).into_bytes())
            .await?;
        println!("{}", store.locate(&key));
        Ok(exit::OK)
    })
}
