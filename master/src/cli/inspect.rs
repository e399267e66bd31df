//! `squall runs`, `squall status`, `squall logs` and `squall report`: reading runs back
//! from a store (local or S3).
//!
//! Wiring and printing only: reading is [`crate::inspect`]'s.

use super::{StoreArgs, parse_duration};
use crate::exit;
use crate::inspect::{self, Known, logs, report};
use crate::runner::now_ms;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// `squall runs`' arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub at: StoreArgs,
    /// Only runs started within this long (e.g. 7d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Only runs with this status (succeeded, failed, deadline_exceeded, cancelled,
    /// abandoned, running, stale, launched).
    #[arg(long)]
    pub status: Option<String>,
    /// JSON lines for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `squall status`' arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    pub run: String,
    #[command(flatten)]
    pub at: StoreArgs,
    /// Refresh every 2 s until the run ends.
    #[arg(long)]
    pub watch: bool,
}

/// `squall logs`' arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    pub run: String,
    #[command(flatten)]
    pub at: StoreArgs,
    #[arg(long)]
    pub host: Option<String>,
    /// A task id or its prefix (e.g. s1-u3).
    #[arg(long)]
    pub task: Option<String>,
    /// Only lines containing this text.
    #[arg(long, value_name = "PATTERN")]
    pub grep: Option<String>,
    /// Keep printing new lines of a live run (from its log snapshots) until it ends.
    #[arg(long)]
    pub follow: bool,
    /// Unpack every archive into DIR/HOST/ instead of printing.
    #[arg(long, value_name = "DIR")]
    pub extract: Option<PathBuf>,
}

/// `squall report`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    pub run: String,
    #[command(flatten)]
    pub at: StoreArgs,
}

/// `squall runs`: the runs, newest first, as a table or JSON lines.
pub async fn runs(args: RunsArgs) -> anyhow::Result<u8> {
    let store = args.at.open().await?;
    let now = now_ms();
    let filter = inspect::RunFilter {
        since_ms: args.since.map(|d| now.saturating_sub(d.as_millis() as u64)),
        status: args.status,
    };
    let rows = inspect::runs(store.as_ref(), &filter, now).await?;
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print!("{}", inspect::table(&rows));
    }
    Ok(exit::OK)
}

/// `squall status`: a run's state, once or (`--watch`) until it ends.
pub async fn status(args: StatusArgs) -> anyhow::Result<u8> {
    let store = args.at.open().await?;
    let live = args.watch && std::io::stdout().is_terminal();
    loop {
        let Some(k) = inspect::known(store.as_ref(), &args.run).await? else {
            eprintln!("squall: no run `{}` in {}", args.run, store.locate("runs/"));
            return Ok(exit::USAGE);
        };
        let text = inspect::status_text(&args.run, &k, now_ms());
        if live {
            // Clear the screen and redraw.
            print!("\x1b[2J\x1b[H{text}");
        } else {
            print!("{text}");
        }
        if !args.watch || inspect::ended(&k) {
            return Ok(exit::OK);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !live {
            println!("--");
        }
    }
}

/// `squall logs`: log lines straight out of the archives (or unpacked with
/// `--extract`).
pub async fn logs(args: LogsArgs) -> anyhow::Result<u8> {
    let store = args.at.open().await?;
    if inspect::known(store.as_ref(), &args.run).await?.is_none() {
        eprintln!("squall: no run `{}` in {}", args.run, store.locate("runs/"));
        return Ok(exit::USAGE);
    }
    if let Some(dir) = &args.extract {
        let n = logs::extract(store.as_ref(), &args.run, dir).await?;
        println!("extracted {n} archive(s) into {}", dir.display());
        return Ok(exit::OK);
    }
    let filter = logs::LogFilter {
        host: args.host,
        task: args.task,
        grep: args.grep,
    };
    if args.follow {
        logs::follow(store.as_ref(), &args.run, &filter, Duration::from_secs(5)).await?;
    } else {
        logs::print_logs(store.as_ref(), &args.run, &filter, &mut Default::default()).await?;
    }
    Ok(exit::OK)
}

/// `squall report`: writes a run's report.html again.
pub async fn report(args: ReportArgs) -> anyhow::Result<u8> {
    let store = args.at.open().await?;
    let Some(Known::Recorded(rec)) = inspect::known(store.as_ref(), &args.run).await? else {
        eprintln!("squall: run `{}` has no run.json yet", args.run);
        return Ok(exit::USAGE);
    };
    // The archives' logs were masked by the agents that wrote them.
    let key = report::publish(store.as_ref(), &rec, &Default::default()).await?;
    println!("{}", store.locate(&key));
    Ok(exit::OK)
}
