//! Who launches a run, when its trigger is delivered many times (S3 and Lambda deliver
//! at least once, Lambda retries a failed invocation twice, people press again): the
//! launch attempts of a run and their claims.
//!
//! Attempt 1's claim is `runs/ID/claim.json`; attempt `n` (2, 3, ...)'s is
//! `runs/ID/claims/N.json`, each written create-if-absent, so that exactly one delivery
//! holds an attempt. An attempt ends in a launch (`launch.json`), a record (`run.json`),
//! or a failure note (`runs/ID/claims/N.failed.json`, written by its launcher when the
//! launch failed for a passing reason). The next delivery takes over an attempt that
//! failed at once, and one whose launcher stopped (neither launched nor noted) once its
//! claim is older than the stale-claim window; past [`MAX_LAUNCH_ATTEMPTS`] the run is
//! recorded `launch-failed` instead, so that a trigger always ends in a record.
//!
//! Launching itself is [`super::launch`]'s.

use crate::error::chain;
use crate::record::{Claim, LaunchFailure, keys};
use crate::seam::store::{self as store, Store};
use std::time::Duration;

use super::launch::LaunchError;

/// Launch attempts per run: Lambda's one delivery and its two retries of an
/// asynchronous invocation. A run whose last attempt fails is recorded `launch-failed`.
pub const MAX_LAUNCH_ATTEMPTS: u32 = 3;

/// A value no other delivery's claim has (two deliveries in the same second would
/// otherwise write the same body, and a conditional create retried after a lost answer
/// tells whose claim it is by its body).
fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{seq:x}", std::process::id())
}

/// What a delivery may do with the run's launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This delivery holds launch attempt `n`.
    Attempt(u32),
    /// The run was launched or recorded already.
    Settled,
    /// Another delivery holds the current attempt and may still be at work.
    InProgress,
    /// Every attempt failed: the run is to be recorded `launch-failed`, for `reason`.
    GaveUp(String),
}

/// The launch attempts of one run in a store.
#[derive(Debug)]
pub struct Claims<'a> {
    pub store: &'a dyn Store,
    pub run: &'a str,
    /// A claim this old, neither launched nor noted, is taken over (its launcher
    /// stopped). Longer than a launcher invocation may last.
    pub stale_after: Duration,
}

fn passing(what: String) -> impl FnOnce(crate::seam::StoreError) -> LaunchError {
    move |e| LaunchError::retryable(format!("{what}: {}", chain(&e)))
}

impl Claims<'_> {
    /// The key of attempt `n`'s claim.
    fn key(&self, n: u32) -> String {
        if n <= 1 {
            keys::claim(self.run)
        } else {
            keys::claim_attempt(self.run, n)
        }
    }

    /// Claims the run's next launch attempt for this delivery, if it may (see the module
    /// docs); `claim` is what it writes (its attempt number is set here).
    pub async fn take(&self, mut claim: Claim, now_secs: u64) -> Result<Claimed, LaunchError> {
        // Each round either takes an attempt, settles, or sees another delivery's newer
        // claim (which then is fresh): a few rounds at most.
        for _ in 0..=MAX_LAUNCH_ATTEMPTS + 1 {
            if self.settled().await? {
                return Ok(Claimed::Settled);
            }
            let n = self.latest().await?;
            let next = match n {
                None => 1,
                Some(n) => {
                    let failure = store::get_json::<LaunchFailure>(
                        self.store,
                        &keys::launch_failure(self.run, n),
                    )
                    .await
                    .map_err(passing(format!("reading attempt {n}'s failure")))?;
                    // Only its time matters (read leniently: a claim of an older
                    // launcher counts too).
                    let claimed_at = store::get_json::<serde_json::Value>(self.store, &self.key(n))
                        .await
                        .ok()
                        .flatten()
                        .and_then(|c| c.get("claimed_at").and_then(serde_json::Value::as_u64));
                    // An unreadable claim is fresh: never risk a second master.
                    let stale = claimed_at.is_some_and(|at| {
                        now_secs.saturating_sub(at) >= self.stale_after.as_secs()
                    });
                    if failure.is_none() && !stale {
                        return Ok(Claimed::InProgress);
                    }
                    if n >= MAX_LAUNCH_ATTEMPTS {
                        return Ok(Claimed::GaveUp(match failure {
                            Some(f) => format!(
                                "no master could be started in {n} attempts; the last: {}",
                                f.reason
                            ),
                            None => format!(
                                "no master could be started in {n} attempts; the last one's \
                                 launcher stopped before launching"
                            ),
                        }));
                    }
                    if stale {
                        tracing::warn!(run = %self.run, "taking over attempt {n}: its launcher stopped before launching");
                    }
                    n + 1
                }
            };
            claim.attempt = next;
            claim.nonce = nonce();
            let key = self.key(next);
            if store::create_json(self.store, &key, &claim)
                .await
                .map_err(passing(format!("claiming run {}", self.run)))?
            {
                return Ok(Claimed::Attempt(next));
            }
        }
        Ok(Claimed::InProgress)
    }

    /// Notes that attempt `n` failed for a passing `reason`: the next delivery takes
    /// over at once.
    pub async fn failed(&self, n: u32, reason: &str, now_secs: u64) -> Result<(), LaunchError> {
        let note = LaunchFailure {
            attempt: n,
            reason: reason.to_owned(),
            failed_at: now_secs,
        };
        let key = keys::launch_failure(self.run, n);
        store::put_json(self.store, &key, &note)
            .await
            .map_err(passing(format!("writing {key}")))
    }

    /// Whether the run was launched or recorded, or a watchdog took it over (a later
    /// generation's claim).
    async fn settled(&self) -> Result<bool, LaunchError> {
        let taken_over = self
            .store
            .any_under(&keys::generations_prefix(self.run))
            .await
            .map_err(passing(format!("reading run {}'s generations", self.run)))?;
        if taken_over {
            return Ok(true);
        }
        for key in [keys::launch(self.run), keys::run_record(self.run)] {
            if self
                .store
                .head(&key)
                .await
                .map_err(passing(format!("reading {key}")))?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The newest attempt claimed so far, if any.
    async fn latest(&self) -> Result<Option<u32>, LaunchError> {
        let later = self
            .store
            .list(&keys::claims_prefix(self.run))
            .await
            .map_err(passing(format!("listing run {}'s claims", self.run)))?
            .iter()
            .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".json")?.parse().ok())
            .max();
        if later.is_some() {
            return Ok(later);
        }
        let first = self
            .store
            .head(&keys::claim(self.run))
            .await
            .map_err(passing(format!("reading run {}'s claim", self.run)))?;
        Ok(first.map(|_| 1))
    }
}
