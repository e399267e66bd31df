//! squall's one integration-test binary; each module is an area.
//!
//! - `architecture`: the layering and style rules of ARCHITECTURE.md, read from the
//!   sources (and the checker's own negative cases).
//! - `aws`: the EC2 `Compute` and S3 `Store` against moto server.
//! - `launcher`: the launcher handler against moto with sample S3/schedule events.
//! - `cloud`: `squall master`, `squall launch`, `squall sweep` against moto and a test
//!   IMDS; the real launcher binary under `cargo lambda watch`.
//! - `infra`: the CloudFormation template under cfn-lint and deployed to moto.
//! - `inspect`: `squall runs`/`status`/`logs`/`report` on every shape of run, local
//!   and S3; the report in headless chromium.
//! - `data`: jobs that move data (copy, fetch, listings, the cache) locally and
//!   against moto S3, with memory measured.
//! - `e2e`: whole AWS runs on the EC2 simulator, with faults.
//! - `playbooks`: every example parses; broken playbooks give the expected error at the
//!   expected line and column.
//! - `engine`: the run state machine as data: events in, actions out.
//! - `local_run`: the real `squall` binary end to end on the local backend, with faults.
//! - `secrets`: secrets masked everywhere a real run writes, and never in an argv.
//! - `ssh_run`: the real binary over SSH to real sshd servers (static inventory), with
//!   connection faults and errors.

mod architecture;
mod aws;
mod cloud;
mod data;
mod e2e;
mod engine;
mod fuzz;
mod infra;
mod inspect;
mod launcher;
mod local_run;
mod playbooks;
mod secrets;
mod ssh_run;
mod throttling;
mod transfers;
mod user_side;
