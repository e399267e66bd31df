//! Exit codes of the `squall` binary: a documented contract for scripts, kept here only.

/// The run succeeded, or the command did what was asked.
pub const OK: u8 = 0;
/// squall itself failed (IO, a backend, a bug): the message says what.
pub const ERROR: u8 = 1;
/// Bad command line, or an invalid playbook (nothing was launched).
pub const USAGE: u8 = 2;
/// The run finished and failed (a task failed after its retries, a host was lost, ...).
pub const RUN_FAILED: u8 = 3;
/// The run hit its deadline.
pub const DEADLINE_EXCEEDED: u8 = 4;
/// The run was cancelled (Ctrl-C, SIGTERM).
pub const CANCELLED: u8 = 130;

/// The exit code for a run's final status.
pub fn for_status(status: crate::record::RunStatus) -> u8 {
    use crate::record::RunStatus;
    match status {
        RunStatus::Succeeded => OK,
        RunStatus::Failed
        | RunStatus::Abandoned
        | RunStatus::LaunchFailed
        | RunStatus::BudgetExceeded
        | RunStatus::Running => RUN_FAILED,
        RunStatus::DeadlineExceeded => DEADLINE_EXCEEDED,
        RunStatus::Cancelled => CANCELLED,
    }
}
