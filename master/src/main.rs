//! The `squall` command line: parses arguments, sets up logging, and calls the library.
//!
//! No logic lives here beyond wiring; exit codes are defined in `squall::exit`.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use squall::compute::{self, Compute, InstanceState, tags};
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
    /// Terminate local instances whose deadline has passed (or all of one run).
    Sweep {
        #[arg(long, env = "SQUALL_HOME", default_value = ".squall")]
        home: PathBuf,
        /// Terminate every instance of this run, deadline or not.
        #[arg(long)]
        run: Option<String>,
    },
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
        Command::Sweep { home, run } => sweep(&home, run.as_deref()),
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

fn sweep(home: &Path, run: Option<&str>) -> anyhow::Result<u8> {
    let compute = local::LocalCompute::new(home.join("instances"));
    let rt = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    rt.block_on(async {
        if let Some(run) = run {
            let n = compute::teardown_run(&compute, run).await?;
            println!("terminated {n} instance(s) of run {run}");
            return Ok(exit::OK);
        }
        let now = runner::now_ms() / 1000;
        let mut expired = Vec::new();
        for inst in compute.list_by_tag(tags::ROLE, "worker").await? {
            let past = inst
                .tag(tags::DEADLINE)
                .and_then(|d| d.parse::<u64>().ok())
                .is_some_and(|d| d <= now);
            if past && inst.state != InstanceState::Terminated {
                expired.push(inst.id);
            }
        }
        compute.terminate(&expired).await?;
        println!(
            "terminated {} instance(s) past their deadline",
            expired.len()
        );
        Ok(exit::OK)
    })
}
