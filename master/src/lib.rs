//! squall: a burst orchestrator for long jobs. The layers, bottom up:
//!
//! - [`plan`]: the playbook (model, parsing, validation, templates), lowered once into
//!   a plain [`plan::Plan`].
//! - [`record`]: the stored shapes of a run (`run.json`, `status.json`, the launcher's
//!   files) and the store key layout.
//! - [`engine`]: the run as a state machine, events in, actions out; no IO.
//! - [`seam`]: the traits a run does its IO through (`Compute`, `Transport`, `Store`).
//! - [`backend`]: their implementations (local, SSH and inventory, AWS).
//! - [`runner`]: the IO loop that drives the engine through the seams.
//! - [`inspect`]: reading runs back (`runs`, `status`, `logs`, the report).
//! - [`cloud`]: a run's life on AWS (launcher, master, sweep).
//! - [`cli`]: the commands of the `squall` binary (`main.rs` only parses and calls).
//!
//! Dependencies point down this list, checked by the architecture test
//! (`tests/integration/architecture.rs`). The agent that runs on hosts is the
//! `squall-worker` crate; the Lambda is the `squall-launcher` crate.

pub mod backend;
pub mod cli;
pub mod cloud;
pub mod digest;
pub mod engine;
pub mod error;
pub mod exit;
pub mod inspect;
pub mod plan;
pub mod record;
pub mod runner;
pub mod seam;
