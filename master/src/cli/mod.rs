//! The commands of the `squall` binary, as library functions: each submodule holds one
//! command family's arguments (clap) and what it does. `main.rs` only parses the command
//! line, starts one runtime and calls in here; exit codes are [`crate::exit`]'s.
//!
//! This is the one layer whose errors are `anyhow` (with context, printed with their
//! whole chain by the binary); everything it calls returns typed errors. It decides
//! nothing about runs: it wires the library's parts together and prints.

pub mod cloud;
pub mod inspect;
pub mod run;

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A command-line value that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a duration like 20s or 3m, found `{0}`")]
pub struct BadArgDuration(pub String);

/// A duration on the command line, in the playbook's grammar (`20s`, `3m`, `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, BadArgDuration> {
    crate::plan::Dur::parse(s)
        .map(|d| d.0)
        .map_err(|_| BadArgDuration(s.to_owned()))
}

/// `--var` overrides by name.
pub type VarOverrides = BTreeMap<String, String>;

/// `--var NAME=VALUE` pairs as a map.
pub fn parse_vars(vars: &[String]) -> anyhow::Result<VarOverrides> {
    vars.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--var expects NAME=VALUE, found `{kv}`"),
        })
        .collect()
}

/// The `squall-worker` next to this `squall`.
pub fn default_agent() -> anyhow::Result<PathBuf> {
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

/// A log writer that masks the run's secret values in what it writes. Each log event
/// arrives as one write of its whole line.
struct Masking<W>(W);

impl<W: std::io::Write> std::io::Write for Masking<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let masks = crate::runner::secrets::log_masks();
        match masks {
            Some(m) => {
                self.0.write_all(&m.mask_bytes(buf))?;
                Ok(buf.len())
            }
            None => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A file shared by the log's writers, locked per write.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<std::fs::File>>);

impl std::io::Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut f) => f.write(buf),
            Err(_) => Err(std::io::Error::other("the log file's lock is poisoned")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock() {
            Ok(mut f) => f.flush(),
            Err(_) => Ok(()),
        }
    }
}

/// Logging to stderr (`SQUALL_LOG` filters; warnings only under a live progress bar)
/// and, at info, to `log_file` (the master's log, archived with the run). Secret
/// values are masked in both once [`crate::runner::secrets::mask_logs`] has them.
pub fn init_tracing(log_file: &Path, live: bool) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let file = std::fs::File::create(log_file)
        .with_context(|| format!("failed to create {}", log_file.display()))?;
    let console_level = if live { "warn" } else { "info" };
    let console = tracing_subscriber::fmt::layer()
        .with_writer(|| Masking(std::io::stderr()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(
            EnvFilter::try_from_env("SQUALL_LOG").unwrap_or_else(|_| EnvFilter::new(console_level)),
        );
    let file = SharedFile(Arc::new(Mutex::new(file)));
    let to_file = tracing_subscriber::fmt::layer()
        .with_writer(move || Masking(file.clone()))
        .with_ansi(false)
        .with_target(false)
        .with_filter(EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(console)
        .with(to_file)
        .try_init()
        .context("failed to set up logging")
}

/// Where `runs`, `status`, `logs` and `report` read runs (and `sweep` records).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The store: s3://BUCKET[/PREFIX], or a folder (default: the local store under
    /// --home).
    #[arg(long)]
    pub store: Option<String>,
    #[arg(long, env = "SQUALL_HOME", default_value = ".squall")]
    pub home: PathBuf,
}

impl StoreArgs {
    pub async fn open(&self) -> anyhow::Result<Arc<dyn crate::seam::Store>> {
        Ok(crate::backend::open_store(self.store.as_deref(), &self.home).await?)
    }
}
