//! A sharded stage's items listed from data: one per object under a prefix (or file
//! under a folder), or one per non-empty line of a manifest, paged and streamed; beyond
//! what the record keeps, they go to a JSON-lines file in the run's prefix.

use super::Ctx;
use super::data::{DataError, MAX_LINE, PIPE_BYTES, is_folder_marker};
use crate::digest;
use crate::engine::{Event, Failure, Listed, ShardSource};
use crate::error::chain;
use crate::plan::url::{DataUrl, with_slash};
use crate::record::{ITEMS_IN_RECORD, ItemsFile, keys};
use crate::seam::data;
use crate::seam::store::ObjectInfo;
use serde_json::{Value, json};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Lists a sharded stage's items and reports them.
pub async fn resolve_shards(ctx: &Ctx, stage: usize, stage_name: &str, source: ShardSource) {
    let result = match list_items(ctx, &source).await {
        Ok(items) => items_file(ctx, stage_name, items).await,
        Err(e) => Err(Failure(chain(&e))),
    };
    ctx.send(Event::ShardsResolved { stage, result });
}

async fn list_items(ctx: &Ctx, source: &ShardSource) -> Result<Vec<Value>, DataError> {
    match source {
        ShardSource::Objects(url) => {
            if let DataUrl::Local(p) = url {
                let is_dir = tokio::fs::metadata(p).await.is_ok_and(|m| m.is_dir());
                if !is_dir {
                    return Err(DataError::NotAFolder(url.to_string()));
                }
            }
            let at = data::open(ctx.b.data.as_ref(), url).await?;
            let prefix = with_slash(&at.key);
            let mut items = Vec::new();
            at.store
                .list_each(&prefix, &mut |o| {
                    if !is_folder_marker(&o) {
                        items.push(object_item(ctx, url, &prefix, o));
                    }
                })
                .await?;
            Ok(items)
        }
        ShardSource::Lines(url) => {
            if url.is_folder() {
                return Err(DataError::LinesOfFolder(url.to_string()));
            }
            let at = data::open(ctx.b.data.as_ref(), url).await?;
            let Some(body) = at.store.get_stream(&at.key).await? else {
                return Err(DataError::Missing(url.to_string()));
            };
            let mut body = tokio::io::BufReader::new(body);
            let mut items = Vec::new();
            let read = |e| DataError::Read {
                url: url.to_string(),
                source: e,
            };
            let mut line = Vec::new();
            let mut number = 0;
            loop {
                line.clear();
                number += 1;
                // At most one line's limit (and a byte) is read: a manifest that is one
                // huge line, or not text, fails instead of filling the master's memory.
                let n = (&mut body)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(read)?;
                if n == 0 {
                    return Ok(items);
                }
                if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
                    return Err(DataError::LineTooLong {
                        url: url.to_string(),
                        line: number,
                    });
                }
                let text = std::str::from_utf8(&line).map_err(|_| DataError::NotText {
                    url: url.to_string(),
                    line: number,
                })?;
                let text = text.trim_end_matches('\n').trim_end_matches('\r');
                if !text.trim().is_empty() {
                    items.push(Value::String(text.to_owned()));
                }
            }
        }
    }
}

/// One listed object as an item: `{url, key, name, size}` (plus `etag` on S3). A local
/// file under the playbook's folder is named relative to it, so `copy` takes it on
/// any runner.
fn object_item(ctx: &Ctx, url: &DataUrl, prefix: &str, o: ObjectInfo) -> Value {
    let name = o.key.strip_prefix(prefix).unwrap_or(&o.key).to_owned();
    match url {
        DataUrl::S3 { bucket, .. } => json!({
            "url": format!("s3://{bucket}/{}", o.key),
            "key": o.key,
            "name": name,
            "size": o.size,
            "etag": o.etag.as_deref().map(|e| e.trim_matches('"')),
        }),
        DataUrl::Local(_) => {
            let abs = Path::new("/").join(&o.key);
            let shown = match abs.strip_prefix(&ctx.base_dir) {
                Ok(rel) => rel.display().to_string(),
                Err(_) => abs.display().to_string(),
            };
            json!({ "url": shown, "key": shown, "name": name, "size": o.size })
        }
    }
}

/// The listed items, written to `runs/ID/shards/STAGE.jsonl` (streamed, hashed on the
/// way) when there are more than the record keeps.
async fn items_file(ctx: &Ctx, stage_name: &str, items: Vec<Value>) -> Result<Listed, Failure> {
    if items.len() <= ITEMS_IN_RECORD {
        return Ok(Listed { items, file: None });
    }
    let key = keys::shard_items(&ctx.opts.run_id, stage_name);
    let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let write = async {
        let mut writer = writer;
        let mut hash = digest::Running::default();
        for item in &items {
            let mut line = item.to_string();
            line.push('\n');
            hash.update(line.as_bytes());
            if writer.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
        hash.finish()
    };
    let put = async {
        // Owned here, so a failed put ends the pipe and the writer stops.
        let mut reader = reader;
        ctx.b.store.put_stream(&key, &mut reader).await
    };
    let (sha256, put) = tokio::join!(write, put);
    put.map_err(|e| Failure(chain(&e)))?;
    Ok(Listed {
        file: Some(ItemsFile {
            key,
            count: items.len(),
            sha256,
        }),
        items,
    })
}
