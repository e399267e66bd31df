//! The `squall` command line: parses arguments, starts one runtime, and calls the
//! library's commands ([`squall::cli`]). Wiring only; exit codes are `squall::exit`'s.

use clap::{Parser, Subcommand};
use squall::cli;
use squall::exit;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "squall", version, about = "Burst orchestrator for long jobs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a playbook to the end on the local backend.
    Run(cli::run::RunArgs),
    /// Check playbooks and print every problem with its file, line and column.
    Validate {
        #[arg(required = true)]
        playbooks: Vec<PathBuf>,
    },
    /// Terminate instances whose deadline has passed (or all of one run) and record it
    /// in their runs: local instances, or EC2 ones with `--store s3://BUCKET`.
    Sweep(cli::cloud::SweepArgs),
    /// List runs, newest first.
    Runs(cli::inspect::RunsArgs),
    /// A run's phase, stages, hosts and heartbeat.
    Status(cli::inspect::StatusArgs),
    /// Print a run's logs straight from its archives, prefixed `HOST TASK STREAM|`.
    Logs(cli::inspect::LogsArgs),
    /// Write (again) a run's report.html from its record and archives.
    Report(cli::inspect::ReportArgs),
    /// Start a run on AWS as the launcher Lambda would: upload the playbook, claim the
    /// run, start its master, and return.
    Launch(cli::cloud::LaunchArgs),
    /// The master of a run on EC2 (started by the master's user-data): runs the run at
    /// s3://BUCKET/runs/RUN_ID/ to the end, then terminates this instance.
    Master(cli::cloud::MasterArgs),
    /// Print a completion script for SHELL (e.g. `squall completions bash >
    /// ~/.local/share/bash-completion/completions/squall`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(dispatch(cli.command)));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let text = format!("{e:#}");
            let text = match squall::runner::secrets::log_masks() {
                Some(m) => m.mask(&text).into_owned(),
                None => text,
            };
            eprintln!("squall: error: {text}");
            ExitCode::from(exit::ERROR)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "squall", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Validate { playbooks } => Ok(cli::run::validate(&playbooks).await),
        Command::Run(args) => cli::run::run(args).await,
        Command::Sweep(args) => cli::cloud::sweep(args).await,
        Command::Launch(args) => cli::cloud::launch(args).await,
        Command::Master(args) => cli::cloud::master(args).await,
        Command::Runs(args) => cli::inspect::runs(args).await,
        Command::Status(args) => cli::inspect::status(args).await,
        Command::Logs(args) => cli::inspect::logs(args).await,
        Command::Report(args) => cli::inspect::report(args).await,
    }
}
