//! Reading a run's secret values where the playbook says they are kept: SSM Parameter
//! Store (through the `Control` seam), or, for local and inventory runs, an environment
//! variable or a file where squall runs. Every problem is reported at the secret's
//! file:line:column before anything launches, and no message holds a value.

use crate::error::chain;
use crate::plan::secrets::{SecretSource, Secrets};
use crate::plan::{Invalid, Plan};
use crate::seam::control::Control;
use squall_worker::mask::{MIN_SECRET_LEN, Masks};
use std::collections::BTreeMap;
use std::io::Read;

/// The secret values masked in every log line from now on (set once they are read).
static LOG_MASKS: std::sync::RwLock<Option<std::sync::Arc<Masks>>> = std::sync::RwLock::new(None);

/// Masks `masks`' values in every log line written from now on (the console and the
/// master's log file, through the writers `cli` sets up), and in the last error the
/// command prints.
pub fn mask_logs(masks: &Masks) {
    if let Ok(mut m) = LOG_MASKS.write() {
        *m = (!masks.is_empty()).then(|| std::sync::Arc::new(masks.clone()));
    }
}

/// The masks set by [`mask_logs`], if any.
pub fn log_masks() -> Option<std::sync::Arc<Masks>> {
    LOG_MASKS.read().ok().and_then(|m| m.clone())
}

/// The largest secret file read (a key or a token, not data).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Every declared secret's value. `control` reads `ssm:` ones (none: they are refused
/// with a message saying why).
pub async fn resolve(plan: &Plan, control: Option<&dyn Control>) -> Result<Secrets, Invalid> {
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, decl) in &plan.secrets {
        let value = match &decl.source {
            SecretSource::Env(var) => std::env::var(var).map_err(|e| match e {
                std::env::VarError::NotPresent => {
                    format!("the environment variable `{var}` is not set")
                }
                std::env::VarError::NotUnicode(_) => {
                    format!("the environment variable `{var}` is not UTF-8")
                }
            }),
            SecretSource::File(path) => {
                read_file(&plan.base_dir.join(path)).map_err(|e| e.to_string())
            }
            SecretSource::Ssm(param) => match control {
                None => Err(format!(
                    "`ssm:{param}` needs AWS credentials and a region (set AWS_PROFILE or AWS_REGION)"
                )),
                Some(c) => match c.get_secret(param).await {
                    Ok(Some(v)) => Ok(v.expose().to_owned()),
                    Ok(None) => Err(format!("the SSM parameter `{param}` does not exist")),
                    Err(e) => Err(chain(&e)),
                },
            },
        };
        match value {
            Ok(v) if v.len() < MIN_SECRET_LEN => problems.push(plan.diagnostic(
                decl.at,
                format!(
                    "secret `{name}` is {} byte(s) long: expected at least {MIN_SECRET_LEN} (a shorter value could not be masked in logs without masking ordinary text); nothing was launched",
                    v.len()
                ),
            )),
            // A value whose every line is shorter than that (`ab\ncd`) could not be
            // masked at all.
            Ok(v) if Masks::new([&v]).is_empty() => {
                problems.push(plan.diagnostic(
                    decl.at,
                    format!(
                        "secret `{name}` has no line of at least {MIN_SECRET_LEN} bytes: it could not be masked in logs; nothing was launched"
                    ),
                ))
            }
            Ok(v) => {
                values.insert(name.clone(), v);
            }
            Err(why) => problems.push(plan.diagnostic(
                decl.at,
                format!("secret `{name}` cannot be read: {why}; nothing was launched"),
            )),
        }
    }
    if problems.is_empty() {
        Ok(Secrets::new(values))
    } else {
        Err(Invalid(problems))
    }
}

/// Why a secret file cannot be read (the message names the file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unreadable(String);

/// A secret file's text, less one trailing newline.
fn read_file(path: &std::path::Path) -> Result<String, Unreadable> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| Unreadable(format!("{shown}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Unreadable(format!("{shown}: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Unreadable(format!(
            "{shown} is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    let mut text =
        String::from_utf8(bytes).map_err(|_| Unreadable(format!("{shown} is not UTF-8 text")))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}
