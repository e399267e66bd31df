//! `squall-worker`, the squall agent: parses the command line that
//! `squall_worker::Request::argv` builds, runs the subcommand and maps its outcome to
//! the exit codes of `squall_worker::exit`.
//!
//! This file only parses, dispatches and prints (status JSON lines on stdout, errors as
//! `squall-worker: <message>` on stderr); the work is done in the modules below.

mod agent;
mod caplog;
mod error;
mod glob;
mod imds;
mod pack;
mod store;
mod supervisor;

use error::{AgentError, Result, chain};
use squall_worker::{TaskSpec, TaskStatus, exit};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: squall-worker [--root DIR] COMMAND
commands:
  start --id ID [--timeout-secs N] [--wait-secs N] [--cwd DIR] [--log-limit BYTES] [--stdin] -- PROGRAM [ARG]...
         (--stdin: the environment and the values to mask, as JSON on stdin)
  status --id ID
  wait --id ID --timeout-secs N
  cancel (--id ID | --all) --grace-secs N
  interrupt --id ID --grace-secs N
  pack
  glob -- PATTERN
The root defaults to $HOME/.squall.";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
struct Cli {
    root: Option<PathBuf>,
    command: Cmd,
}

#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Help,
    Start {
        spec: TaskSpec,
        wait_secs: u64,
        /// Read the task's environment and masks from stdin.
        stdin: bool,
    },
    Supervise {
        id: String,
    },
    /// Internal: starts a task's supervisor and exits (the double fork).
    Detach {
        id: String,
    },
    Status {
        id: String,
    },
    Wait {
        id: String,
        timeout_secs: u64,
    },
    Cancel {
        id: Option<String>,
        grace_secs: u64,
    },
    Interrupt {
        id: String,
        grace_secs: u64,
    },
    Pack,
    Glob {
        pattern: String,
    },
}

fn main() -> ExitCode {
    let code = match parse(std::env::args_os().skip(1)).and_then(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("squall-worker: {}", chain(&e));
            if matches!(e, AgentError::Usage(_)) {
                eprintln!("{USAGE}");
            }
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs the command; the exit code on success is `OK` or (for `wait`) `STILL_RUNNING`.
fn run(cli: Cli) -> Result<i32> {
    if cli.command == Cmd::Help {
        println!("{USAGE}");
        return Ok(exit::OK);
    }
    let root = match cli.root {
        Some(root) => root,
        None => PathBuf::from(std::env::var_os("HOME").ok_or(AgentError::NoHome)?).join(".squall"),
    };
    // The supervisor runs with the root as its cwd, so it must not be relative.
    let root = std::path::absolute(&root).map_err(|e| AgentError::io("resolving", &root, e))?;
    match cli.command {
        Cmd::Help => Ok(exit::OK),
        Cmd::Start {
            mut spec,
            wait_secs,
            stdin,
        } => {
            if stdin {
                let private = read_private()?;
                spec.env = private.env;
                spec.masks = private.masks;
            }
            // A relative working directory is relative to where `start` was run (the
            // login home over SSH), as `cd` would have it, not to the agent root.
            if let Some(cwd) = spec.cwd.take() {
                spec.cwd = Some(
                    std::path::absolute(&cwd).map_err(|e| AgentError::io("resolving", &cwd, e))?,
                );
            }
            let mut status = agent::start(&root, &spec)?;
            if wait_secs > 0 && !status.state.is_final() {
                status = agent::wait(&root, &spec.id, wait_secs)?.unwrap_or(status);
            }
            let status = agent::with_notice(&root, status);
            print_statuses(std::slice::from_ref(&status))?;
            Ok(if wait_secs > 0 && !status.state.is_final() {
                exit::STILL_RUNNING
            } else {
                exit::OK
            })
        }
        Cmd::Detach { id } => {
            agent::check_id(&id)?;
            println!("{}", agent::detach(&root, &id)?);
            Ok(exit::OK)
        }
        Cmd::Supervise { id } => {
            agent::check_id(&id)?;
            supervisor::supervise(&root, &id)?;
            Ok(exit::OK)
        }
        Cmd::Status { id } => {
            print_statuses(&[agent::status(&root, &id)?])?;
            Ok(exit::OK)
        }
        Cmd::Wait { id, timeout_secs } => match agent::wait(&root, &id, timeout_secs)? {
            Some(status) => {
                print_statuses(std::slice::from_ref(&status))?;
                Ok(if status.state.is_final() {
                    exit::OK
                } else {
                    exit::STILL_RUNNING
                })
            }
            None => {
                eprintln!("squall-worker: task `{id}` has no status yet (it is being started)");
                Ok(exit::STILL_RUNNING)
            }
        },
        Cmd::Cancel { id, grace_secs } => {
            let cancelled = match &id {
                Some(id) => agent::cancel_one(&root, id, grace_secs)?,
                None => agent::cancel_all(&root, grace_secs)?,
            };
            cancel_answer(&cancelled, grace_secs)
        }
        Cmd::Interrupt { id, grace_secs } => {
            agent::mark_interrupted(&root, &id)?;
            cancel_answer(&agent::cancel_one(&root, &id, grace_secs)?, grace_secs)
        }
        Cmd::Pack => {
            pack::pack(&root, BufWriter::new(io::stdout().lock()))?;
            Ok(exit::OK)
        }
        Cmd::Glob { pattern } => {
            let found = glob::matches(&pattern)?;
            let mut out = BufWriter::new(io::stdout().lock());
            for m in &found {
                let line = serde_json::to_string(m).map_err(|e| AgentError::Stdout {
                    what: "a match",
                    source: e.into(),
                })?;
                writeln!(out, "{line}").map_err(|source| AgentError::Stdout {
                    what: "a match",
                    source,
                })?;
            }
            out.flush().map_err(|source| AgentError::Stdout {
                what: "the matches",
                source,
            })?;
            Ok(exit::OK)
        }
    }
}

/// Prints what a cancel ended; an error names the tasks that would not end.
fn cancel_answer(cancelled: &agent::Cancelled, grace_secs: u64) -> Result<i32> {
    print_statuses(&cancelled.statuses)?;
    if cancelled.unfinished.is_empty() {
        Ok(exit::OK)
    } else {
        Err(AgentError::Task {
            id: cancelled.unfinished.join("`, `"),
            problem: format!("did not end within {grace_secs} s of SIGTERM and 5 s of SIGKILL"),
        })
    }
}

/// Prints each status as one JSON line.
fn print_statuses(statuses: &[TaskStatus]) -> Result<()> {
    let mut out = io::stdout().lock();
    for status in statuses {
        let line = serde_json::to_string(status).map_err(|e| AgentError::Stdout {
            what: "a status",
            source: e.into(),
        })?;
        writeln!(out, "{line}").map_err(|source| AgentError::Stdout {
            what: "a status",
            source,
        })?;
    }
    out.flush().map_err(|source| AgentError::Stdout {
        what: "a status",
        source,
    })
}

fn usage(message: impl Into<String>) -> AgentError {
    AgentError::Usage(message.into())
}

/// Parses the arguments after the program name.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli> {
    let mut args = args.into_iter();
    let mut root = None;
    let command = loop {
        let Some(arg) = args.next() else {
            return Err(usage("no command given"));
        };
        match arg.to_str() {
            Some("--root") => {
                root = Some(PathBuf::from(
                    args.next().ok_or_else(|| usage("--root needs a value"))?,
                ));
            }
            Some("-h" | "--help" | "help") => {
                return Ok(Cli {
                    root,
                    command: Cmd::Help,
                });
            }
            Some(cmd) => break cmd.to_owned(),
            None => return Err(usage(format!("unknown command {}", arg.display()))),
        }
    };
    let mut flags = Flags::default();
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        let arg = text(arg)?;
        if arg == "--" && (command == "start" || command == "glob") {
            rest = args.by_ref().map(text).collect::<Result<_>>()?;
            break;
        }
        let value = |args: &mut dyn Iterator<Item = OsString>| {
            args.next()
                .ok_or_else(|| usage(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--id" => flags.id = Some(text(value(&mut args)?)?),
            "--timeout-secs" => flags.timeout_secs = Some(number(&arg, value(&mut args)?)?),
            "--wait-secs" => flags.wait_secs = Some(number(&arg, value(&mut args)?)?),
            "--grace-secs" => flags.grace_secs = Some(number(&arg, value(&mut args)?)?),
            "--cwd" => flags.cwd = Some(PathBuf::from(value(&mut args)?)),
            "--log-limit" => flags.log_limit = Some(number(&arg, value(&mut args)?)?),
            "--stdin" => flags.stdin = true,
            "--all" => flags.all = true,
            _ => {
                return Err(usage(format!(
                    "unexpected argument `{arg}` for `{command}`"
                )));
            }
        }
    }
    let command = match command.as_str() {
        "start" => {
            flags.allow(
                &command,
                &[
                    "--id",
                    "--timeout-secs",
                    "--wait-secs",
                    "--cwd",
                    "--log-limit",
                    "--stdin",
                ],
            )?;
            if flags
                .log_limit
                .is_some_and(|l| l < squall_worker::MIN_LOG_LIMIT)
            {
                return Err(usage(format!(
                    "--log-limit must be at least {} bytes",
                    squall_worker::MIN_LOG_LIMIT
                )));
            }
            if rest.is_empty() {
                return Err(usage("start needs `-- PROGRAM [ARG]...`"));
            }
            Cmd::Start {
                wait_secs: flags.wait_secs.unwrap_or(0),
                stdin: flags.stdin,
                spec: TaskSpec {
                    id: flags.id(&command)?,
                    argv: rest,
                    env: BTreeMap::new(),
                    cwd: flags.cwd,
                    timeout_secs: flags.timeout_secs,
                    masks: Vec::new(),
                    log_limit: flags.log_limit,
                },
            }
        }
        "supervise" => {
            flags.allow(&command, &["--id"])?;
            Cmd::Supervise {
                id: flags.id(&command)?,
            }
        }
        "detach" => {
            flags.allow(&command, &["--id"])?;
            Cmd::Detach {
                id: flags.id(&command)?,
            }
        }
        "status" => {
            flags.allow(&command, &["--id"])?;
            Cmd::Status {
                id: flags.id(&command)?,
            }
        }
        "wait" => {
            flags.allow(&command, &["--id", "--timeout-secs"])?;
            Cmd::Wait {
                timeout_secs: flags
                    .timeout_secs
                    .ok_or_else(|| usage("wait needs --timeout-secs N"))?,
                id: flags.id(&command)?,
            }
        }
        "cancel" => {
            flags.allow(&command, &["--id", "--all", "--grace-secs"])?;
            let grace_secs = flags
                .grace_secs
                .ok_or_else(|| usage("cancel needs --grace-secs N"))?;
            match (flags.id, flags.all) {
                (Some(id), false) => Cmd::Cancel {
                    id: Some(id),
                    grace_secs,
                },
                (None, true) => Cmd::Cancel {
                    id: None,
                    grace_secs,
                },
                _ => return Err(usage("cancel needs exactly one of --id ID and --all")),
            }
        }
        "interrupt" => {
            flags.allow(&command, &["--id", "--grace-secs"])?;
            Cmd::Interrupt {
                grace_secs: flags
                    .grace_secs
                    .ok_or_else(|| usage("interrupt needs --grace-secs N"))?,
                id: flags.id(&command)?,
            }
        }
        "pack" => {
            flags.allow(&command, &[])?;
            Cmd::Pack
        }
        "glob" => {
            flags.allow(&command, &[])?;
            match rest.as_slice() {
                [pattern] => Cmd::Glob {
                    pattern: pattern.clone(),
                },
                _ => return Err(usage("glob needs `-- PATTERN`")),
            }
        }
        other => return Err(usage(format!("unknown command `{other}`"))),
    };
    Ok(Cli { root, command })
}

/// The options seen after the command.
#[derive(Debug, Default)]
struct Flags {
    id: Option<String>,
    timeout_secs: Option<u64>,
    wait_secs: Option<u64>,
    grace_secs: Option<u64>,
    cwd: Option<PathBuf>,
    log_limit: Option<u64>,
    stdin: bool,
    all: bool,
}

impl Flags {
    /// A usage error if an option outside `allowed` was given.
    fn allow(&self, command: &str, allowed: &[&str]) -> Result<()> {
        let given = [
            ("--id", self.id.is_some()),
            ("--timeout-secs", self.timeout_secs.is_some()),
            ("--wait-secs", self.wait_secs.is_some()),
            ("--grace-secs", self.grace_secs.is_some()),
            ("--cwd", self.cwd.is_some()),
            ("--log-limit", self.log_limit.is_some()),
            ("--stdin", self.stdin),
            ("--all", self.all),
        ];
        match given
            .iter()
            .find(|(flag, present)| *present && !allowed.contains(flag))
        {
            Some((flag, _)) => Err(usage(format!("`{command}` does not take {flag}"))),
            None => Ok(()),
        }
    }

    fn id(&mut self, command: &str) -> Result<String> {
        self.id
            .take()
            .ok_or_else(|| usage(format!("{command} needs --id ID")))
    }
}

/// The task's environment and masks from stdin (at most
/// [`squall_worker::MAX_PRIVATE_BYTES`]).
fn read_private() -> Result<squall_worker::Private> {
    use std::io::Read;
    let mut body = Vec::new();
    io::stdin()
        .lock()
        .take(squall_worker::MAX_PRIVATE_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| AgentError::io("reading", "standard input", e))?;
    if body.len() as u64 > squall_worker::MAX_PRIVATE_BYTES {
        return Err(usage(format!(
            "--stdin reads at most {} bytes",
            squall_worker::MAX_PRIVATE_BYTES
        )));
    }
    serde_json::from_slice(&body).map_err(|e| {
        usage(format!(
            "--stdin expects the task's environment as JSON: {e}"
        ))
    })
}

fn text(arg: OsString) -> Result<String> {
    arg.into_string()
        .map_err(|arg| usage(format!("argument `{}` is not UTF-8", arg.display())))
}

fn number(flag: &str, value: OsString) -> Result<u64> {
    let value = text(value)?;
    value.parse().map_err(|_| {
        usage(format!(
            "{flag} expects a whole number of seconds, got `{value}`"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_worker::Request;

    fn parse_argv(argv: Vec<String>) -> Result<Cli> {
        parse(argv.into_iter().skip(1).map(OsString::from))
    }

    #[test]
    fn parses_every_request_the_master_builds() {
        let spec = TaskSpec {
            id: "t1".into(),
            argv: vec!["sh".into(), "-c".into(), "echo --root -- x".into()],
            env: BTreeMap::from([("A".into(), "b=c".into()), ("D".into(), String::new())]),
            cwd: Some(PathBuf::from("/w d")),
            timeout_secs: Some(5),
            masks: Vec::new(),
            log_limit: Some(1 << 30),
        };
        // The environment travels on stdin: the command line says so and holds none.
        let on_the_line = TaskSpec {
            env: BTreeMap::new(),
            ..spec.clone()
        };
        let cases = [
            (
                Request::Start {
                    spec: spec.clone(),
                    wait_secs: 3,
                },
                Cmd::Start {
                    spec: on_the_line.clone(),
                    wait_secs: 3,
                    stdin: true,
                },
            ),
            (
                Request::Start {
                    spec: on_the_line.clone(),
                    wait_secs: 0,
                },
                Cmd::Start {
                    spec: on_the_line,
                    wait_secs: 0,
                    stdin: false,
                },
            ),
            (
                Request::Status { id: "a".into() },
                Cmd::Status { id: "a".into() },
            ),
            (
                Request::Wait {
                    id: "a".into(),
                    timeout_secs: 7,
                },
                Cmd::Wait {
                    id: "a".into(),
                    timeout_secs: 7,
                },
            ),
            (
                Request::Cancel {
                    id: "a".into(),
                    grace_secs: 2,
                },
                Cmd::Cancel {
                    id: Some("a".into()),
                    grace_secs: 2,
                },
            ),
            (
                Request::CancelAll { grace_secs: 3 },
                Cmd::Cancel {
                    id: None,
                    grace_secs: 3,
                },
            ),
            (
                Request::Interrupt {
                    id: "a".into(),
                    grace_secs: 90,
                },
                Cmd::Interrupt {
                    id: "a".into(),
                    grace_secs: 90,
                },
            ),
            (Request::Pack, Cmd::Pack),
            (
                Request::Glob {
                    pattern: "out/**/*.csv".into(),
                },
                Cmd::Glob {
                    pattern: "out/**/*.csv".into(),
                },
            ),
        ];
        for (request, command) in cases {
            let cli = parse_argv(request.argv("agent", "/r")).expect("parses");
            assert_eq!(
                cli,
                Cli {
                    root: Some(PathBuf::from("/r")),
                    command
                }
            );
        }
    }

    #[test]
    fn rejects_bad_command_lines() {
        for argv in [
            &[][..],
            &["frobnicate"],
            &["--root"],
            &["status"],
            &["status", "--id"],
            &["wait", "--id", "a"],
            &["wait", "--id", "a", "--timeout-secs", "x"],
            &["cancel", "--grace-secs", "1"],
            &["cancel", "--id", "a", "--all", "--grace-secs", "1"],
            &["start", "--id", "a"],
            &["start", "--id", "a", "--"],
            &["start", "--id", "a", "--env", "A=x", "--", "true"],
            &["start", "--id", "a", "--stdin", "x", "--", "true"],
            &["pack", "--id", "a"],
        ] {
            let args = argv.iter().map(OsString::from);
            assert!(matches!(parse(args), Err(AgentError::Usage(_))), "{argv:?}");
        }
    }
}
