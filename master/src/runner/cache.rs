//! The item cache, the runner's half: an item's key completed with the identities of its
//! inputs (S3 etag and version, local sha256; each computed once per stage), the entry
//! looked up and its files copied into this run (server-side on S3, a hard link
//! locally), and entries written as items succeed. What goes into a key is decided by
//! the engine (`engine::cache`).

use super::data::{DataError, keep_object};
use super::{Ctx, now_ms};
use crate::digest;
use crate::engine::{CacheHit, CacheQuery, Event};
use crate::error::chain;
use crate::plan::url::DataUrl;
use crate::record::{CacheEntry, StoredFile, keys};
use crate::seam::data;
use crate::seam::store::{self, ObjectInfo, StoreError};
use std::path::Path;
use std::sync::Arc;

/// An input's identity, computed once.
pub type Identity = Arc<tokio::sync::OnceCell<String>>;

/// Completes an item's cache key with the identities of its inputs and, unless the
/// run ignores the cache, looks it up.
pub async fn lookup_cache(ctx: &Ctx, stage: usize, unit: usize, query: CacheQuery) {
    let mut material = query.material;
    for input in &query.inputs {
        let id = identity(ctx, stage, &input.url).await;
        material.push_str(&format!("input {} = {id}\n", input.label));
    }
    let cache_key = digest::sha256_hex(material.as_bytes());
    let hit = if query.lookup {
        find_cached(ctx, &cache_key).await
    } else {
        None
    };
    ctx.send(Event::CacheAnswered {
        stage,
        unit,
        cache_key,
        hit,
    });
}

/// What an input is, for the cache: S3's etag (and version), a local file's sha256, a
/// folder's files each so; `absent` or an error's text otherwise (an error makes the
/// key unlike any other, so the item runs and meets the error there).
async fn identity(ctx: &Ctx, stage: usize, url: &DataUrl) -> String {
    // Once per input and stage (a setup's model is an input of every item), even when
    // lookups ask at the same time.
    let cell = match ctx.identities.lock() {
        Ok(mut known) => known.entry((stage, url.to_string())).or_default().clone(),
        Err(_) => Arc::new(tokio::sync::OnceCell::new()),
    };
    cell.get_or_init(|| compute_identity(ctx, url))
        .await
        .clone()
}

async fn compute_identity(ctx: &Ctx, url: &DataUrl) -> String {
    let found = async {
        let at = data::open(ctx.b.data.as_ref(), url).await?;
        if url.is_folder() {
            let mut objects = Vec::new();
            at.store
                .list_each(&at.key, &mut |o| keep_object(&mut objects, o))
                .await?;
            let mut parts = Vec::new();
            for o in &objects {
                let id = object_identity(url, o).await;
                let name = o.key.strip_prefix(&at.key).unwrap_or(&o.key);
                parts.push(format!("{name}:{id}"));
            }
            return Ok::<_, DataError>(parts.join(","));
        }
        Ok(match at.store.head(&at.key).await? {
            Some(o) => object_identity(url, &o).await,
            None => "absent".to_owned(),
        })
    };
    found
        .await
        .unwrap_or_else(|e| format!("unknown ({}) at {}", chain(&e), now_ms()))
}

async fn object_identity(url: &DataUrl, o: &ObjectInfo) -> String {
    match url {
        DataUrl::S3 { .. } => format!(
            "etag {} version {} size {}",
            o.etag.as_deref().unwrap_or("-"),
            o.version.as_deref().unwrap_or("-"),
            o.size
        ),
        DataUrl::Local(_) => {
            let path = Path::new("/").join(&o.key);
            match digest::file_sha256_hex(&path).await {
                Ok(sha) => format!("sha256 {sha}"),
                Err(e) => format!("unreadable ({e}) at {}", now_ms()),
            }
        }
    }
}

/// A cache entry for `cache_key` whose files could be copied into this run.
async fn find_cached(ctx: &Ctx, cache_key: &str) -> Option<CacheHit> {
    let entry_key = keys::cache_entry(cache_key);
    let entry: CacheEntry = match store::get_json(ctx.b.store.as_ref(), &entry_key).await {
        Ok(Some(e)) => e,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(
                "cache entry {entry_key} unreadable (the item runs): {}",
                chain(&e)
            );
            return None;
        }
    };
    let mine = keys::files_prefix(&ctx.opts.run_id);
    let theirs = keys::files_prefix(&entry.run_id);
    let mut files = Vec::new();
    for f in &entry.files {
        let copied = match &f.rel {
            Some(rel) => {
                let (from, to) = (format!("{theirs}{rel}"), format!("{mine}{rel}"));
                if from == to {
                    Ok(to)
                } else {
                    ctx.b.store.copy(&from, &to).await.map(|()| to)
                }
            }
            // Stored at an absolute destination: still there, or a miss.
            None => still_there(ctx, &f.key).await.map(|()| f.key.clone()),
        };
        match copied {
            Ok(key) => files.push(StoredFile {
                key,
                size: f.size,
                sha256: f.sha256.clone(),
            }),
            Err(e) => {
                tracing::warn!(
                    "cached files of run {} are not reusable (the item runs): {}",
                    entry.run_id,
                    chain(&e)
                );
                return None;
            }
        }
    }
    Some(CacheHit {
        from_run: entry.run_id,
        files,
    })
}

async fn still_there(ctx: &Ctx, url: &str) -> Result<(), StoreError> {
    let parsed = DataUrl::parse(url).map_err(|e| StoreError::failed("head", url, e))?;
    let at = data::open(ctx.b.data.as_ref(), &parsed).await?;
    match at.store.head(&at.key).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::failed(
            "head",
            url,
            crate::error::Message::boxed("no longer exists"),
        )),
    }
}

/// Writes an item's cache entry (a failure costs a recomputation later, nothing more).
pub async fn write_cache(ctx: &Ctx, entry: &CacheEntry) {
    let key = keys::cache_entry(&entry.key);
    // An entry holding a secret's value (in a key or a path) would be wrong masked and a
    // leak unmasked: it is not written (the item is computed again next time).
    let plain = serde_json::to_vec_pretty(entry).ok();
    if plain.is_some_and(|p| ctx.masks().hits(&p)) {
        tracing::warn!("cache entry {key} not written: it holds a secret's value");
        return;
    }
    if let Err(e) = store::put_json(ctx.b.store.as_ref(), &key, entry).await {
        tracing::warn!("cache entry {key} not written: {}", chain(&e));
    }
}
