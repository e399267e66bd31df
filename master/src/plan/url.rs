//! The URLs a playbook moves data with: `s3://bucket/key` (any bucket), local paths
//! (relative to the playbook's folder, or absolute), a trailing `/` meaning a folder or
//! prefix; and fetch destinations (a prefix in the run's files area, or
//! `s3://bucket/prefix/`).
//!
//! Parsing and the checks that need no IO, shared by validation (literal values, at
//! file:line:column) and the runner (rendered values). Whether a source exists is
//! checked by `runner::preflight` and the launcher, not here.

use std::path::{Component, Path, PathBuf};

/// A data location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataUrl {
    /// An object (or, with a trailing `/`, a prefix) in any S3 bucket.
    S3 { bucket: String, key: String },
    /// A local file (or, with a trailing `/`, folder): relative to the playbook's folder
    /// unless absolute.
    Local(PathBuf),
}

/// A value that is not a usable URL, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(pub String);

impl DataUrl {
    /// Parses a rendered source or listing URL.
    pub fn parse(text: &str) -> Result<DataUrl, BadUrl> {
        let t = text.trim();
        if t.is_empty() {
            return Err(BadUrl(
                "expected a path or an s3://bucket/key URL, found nothing".into(),
            ));
        }
        if let Some(rest) = t.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket(bucket) {
                return Err(BadUrl(format!(
                    "expected s3://BUCKET/KEY with a bucket name of 3 to 63 lowercase letters, digits, '.' and '-', found `{t}`"
                )));
            }
            if key.split('/').any(|p| p == ".." || p == ".") {
                return Err(BadUrl(format!("`{t}`: an S3 key has no `.` or `..` parts")));
            }
            return Ok(DataUrl::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        if let Some((scheme, _)) = t.split_once("://") {
            return Err(BadUrl(format!(
                "expected a path or an s3://bucket/key URL, found a `{scheme}://` URL"
            )));
        }
        Ok(DataUrl::Local(PathBuf::from(t)))
    }

    /// A folder (local) or prefix (S3): written with a trailing `/`.
    pub fn is_folder(&self) -> bool {
        match self {
            DataUrl::S3 { key, .. } => key.is_empty() || key.ends_with('/'),
            DataUrl::Local(p) => p.as_os_str().to_string_lossy().ends_with('/'),
        }
    }
}

impl std::fmt::Display for DataUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataUrl::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            DataUrl::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An S3 bucket name as AWS allows it (the common rules).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

/// Whether a relative path stays inside the folder it is relative to.
pub fn stays_inside(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Checks a `copy.src` or shard URL as written: templated values are checked once
/// rendered; a literal one must parse, and a relative path must stay inside the
/// playbook's folder.
pub fn check_source(text: &str) -> Result<(), BadUrl> {
    if text.contains("{{") || text.contains("{%") {
        return Ok(());
    }
    check_rendered_source(text)
}

/// Checks a rendered source.
pub fn check_rendered_source(text: &str) -> Result<(), BadUrl> {
    match DataUrl::parse(text)? {
        DataUrl::Local(p) if p.is_relative() && !stays_inside(&p) => Err(BadUrl(format!(
            "`{text}` must stay inside the playbook's folder (no `..`)"
        ))),
        _ => Ok(()),
    }
}

/// Checks a `copy.dest` as rendered (`written` is the text before rendering): no `..`
/// part ever, and an absolute path only when written literally (a value from an item or
/// the trigger may not pick a place outside the login home).
pub fn check_copy_dest(written: &str, rendered: &str) -> Result<(), BadUrl> {
    let p = Path::new(rendered.trim());
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(BadUrl(format!(
            "`copy.dest` `{rendered}` may not contain `..`"
        )));
    }
    let templated = written.contains("{{") || written.contains("{%");
    if templated && p.is_absolute() {
        return Err(BadUrl(format!(
            "`copy.dest` `{rendered}` is absolute: a templated destination stays under the login home"
        )));
    }
    Ok(())
}

/// Whether a listed object's name (relative to the listed prefix) is a plain relative
/// path: no `..`, no empty or `.` parts, not absolute.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Where a fetch stores its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchDest {
    /// A prefix under the run's files area (`runs/ID/files/PREFIX/`), maybe empty.
    RunFiles(String),
    /// An absolute `s3://bucket/prefix/`.
    S3 { bucket: String, prefix: String },
}

impl FetchDest {
    /// Parses a rendered `fetch.dest`.
    pub fn parse(text: &str) -> Result<FetchDest, BadUrl> {
        let t = text.trim();
        let bad = || {
            BadUrl(format!(
                "expected `fetch.dest` to be a prefix inside the run's files (no `..`, not absolute) or an s3://bucket/prefix/ URL, found `{t}`"
            ))
        };
        if t.starts_with("s3://") {
            return match DataUrl::parse(t)? {
                DataUrl::S3 { bucket, key } => Ok(FetchDest::S3 {
                    bucket,
                    prefix: with_slash(&key),
                }),
                DataUrl::Local(_) => Err(bad()),
            };
        }
        let p = Path::new(t);
        if t.contains("://") || p.is_absolute() || !stays_inside(p) {
            return Err(bad());
        }
        Ok(FetchDest::RunFiles(with_slash(t.trim_start_matches("./"))))
    }
}

/// `p` with one trailing `/` (empty stays empty).
pub fn with_slash(p: &str) -> String {
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// Checks a `fetch.dest` as written (templated values are checked once rendered).
pub fn check_fetch_dest(text: &str) -> Result<(), BadUrl> {
    if text.contains("{{") || text.contains("{%") {
        return Ok(());
    }
    FetchDest::parse(text).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_are_checked() {
        assert_eq!(
            DataUrl::parse("s3://my-bucket/in/a.csv"),
            Ok(DataUrl::S3 {
                bucket: "my-bucket".into(),
                key: "in/a.csv".into()
            })
        );
        assert!(DataUrl::parse("s3://b/x").is_err(), "bucket too short");
        assert!(DataUrl::parse("s3://Bad_Bucket/x").is_err());
        assert!(DataUrl::parse("http://x/y").is_err());
        assert!(DataUrl::parse("s3://bucket/a/../b").is_err());
        assert!(DataUrl::parse("files/x").is_ok_and(|u| !u.is_folder()));
        assert!(DataUrl::parse("files/").is_ok_and(|u| u.is_folder()));
        assert!(DataUrl::parse("s3://bucket/prefix/").is_ok_and(|u| u.is_folder()));
        assert!(check_source("../../etc/shadow").is_err());
        assert!(
            check_source("/etc/hosts").is_ok(),
            "absolute: refused on EC2 only"
        );
        assert!(
            check_source("{{ item.url }}").is_ok(),
            "checked when rendered"
        );
        assert!(check_rendered_source("../../etc/shadow").is_err());
    }

    #[test]
    fn copy_destinations_and_listed_names_stay_put() {
        assert!(check_copy_dest("in/{{ item }}", "in/a.csv").is_ok());
        assert!(check_copy_dest("in/{{ item }}", "in/../../.ssh/authorized_keys").is_err());
        assert!(check_copy_dest("{{ item }}", "/etc/passwd").is_err());
        assert!(
            check_copy_dest("/opt/model.bin", "/opt/model.bin").is_ok(),
            "literal"
        );
        assert!(check_copy_dest("../x", "../x").is_err());
        assert!(plain_name("a/b.csv"));
        for bad in ["", "../x", "a/../../b", "/abs", "a//b", "./a", "a/"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn fetch_destinations() {
        assert_eq!(
            FetchDest::parse("scores"),
            Ok(FetchDest::RunFiles("scores/".into()))
        );
        assert_eq!(FetchDest::parse(""), Ok(FetchDest::RunFiles(String::new())));
        assert_eq!(
            FetchDest::parse("s3://out-bucket/x"),
            Ok(FetchDest::S3 {
                bucket: "out-bucket".into(),
                prefix: "x/".into()
            })
        );
        for bad in ["../x", "/abs", "a/../../b", "ftp://x/y", "s3://B/x"] {
            assert!(FetchDest::parse(bad).is_err(), "{bad}");
        }
    }
}
