//! A run's life in the cloud: starting it from a trigger ([`launch`], what the launcher
//! Lambda and `squall launch` do), the master on EC2 ([`master`]), the run's SSH keys
//! ([`keys`]) and boot scripts ([`userdata`]), what starts a run ([`trigger`]) and the
//! launcher's [`settings`], who launches a run delivered many times ([`claim`]), uploading a playbook for a launch
//! ([`upload`]), and sweeping what outlived its deadline ([`sweep`]).
//!
//! It reaches AWS only through [`crate::backend::aws::Aws`] and the seams; it names no
//! `aws_*` crate. Running the playbook itself is [`crate::runner`]'s job.

pub mod attempt;
pub mod claim;
pub mod invoke;
pub mod keys;
pub mod launch;
pub mod master;
pub mod settings;
pub mod succession;
pub mod sweep;
pub mod trigger;
pub mod upload;
pub mod userdata;
pub mod watch;
