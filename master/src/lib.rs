//! squall: a burst orchestrator for long jobs. This library holds the playbook model,
//! the run engine, the cloud seams and their implementations; the `squall` binary
//! (`main.rs`) only parses the command line and calls in here.
//!
//! Start at [`engine`] (the run as a state machine, no IO) and [`runner`] (which drives
//! it through [`compute`], [`transport`] and [`store`]). Backends: [`local`] (embedded),
//! [`ssh`] with [`inventory`] (machines you already have), [`ec2`] and [`s3`] (AWS,
//! configured by [`aws`]). The agent that runs on hosts is
//! the `squall-worker` crate; the Lambda is the `squall-launcher` crate.

pub mod aws;
pub mod cloud;
pub mod compute;
pub mod ec2;
pub mod engine;
pub mod exit;
pub mod inspect;
pub mod inventory;
pub mod launch;
pub mod local;
pub mod playbook;
pub mod progress;
pub mod record;
pub mod report;
pub mod runid;
pub mod runner;
pub mod s3;
pub mod ssh;
pub mod store;
pub mod sweep;
pub mod template;
pub mod transport;
