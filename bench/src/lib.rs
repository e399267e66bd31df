//! Helpers shared by squall's benchmark binaries (`src/bin/bench-*`): the machine's and
//! the build's facts every report opens with ([`facts`]), the statistics of the tables
//! ([`stats`]), CPU and memory meters read from `/proc` ([`meter`]), bench-s3's
//! deterministic log lines ([`loggen`]), where the binaries to time are found when no
//! flag names them ([`locate`]), and commands run to their end within a bound
//! ([`child`]).
//!
//! It starts no servers (the harnesses of `squall_tests`, `moto` and `sshd`, do that),
//! runs no contender and prints nothing: each benchmark does its own timing and
//! reporting. Nothing here is used by the tests or by the product.

pub mod child;
pub mod facts;
pub mod locate;
pub mod loggen;
pub mod meter;
pub mod stats;
