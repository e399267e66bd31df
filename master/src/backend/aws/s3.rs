//! S3 `Store` (aws-sdk-s3): put, streaming multipart put in constant memory, get,
//! list, and create-if-absent (`If-None-Match: *`) for claiming runs exactly once.
//!
//! A streamed object is uploaded in parts of [`PART_SIZE`], up to [`PARTS_IN_FLIGHT`] at
//! a time; the next part is read while fewer are in flight, into a reused buffer, so
//! memory stays at `PARTS_IN_FLIGHT` parts whatever the object's size; a stream
//! that fails aborts the upload, so no partial object appears. Retry decisions are
//! [`super::retry`]'s; key layout is [`crate::record::keys`]'s.

use super::retry::{self as aws, AwsError};
use crate::seam::store::{ByteReader, ObjectInfo, Store, StoreError};
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

mod conditional;

/// What a CopySource header leaves unencoded besides alphanumerics.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` URL-encoded for a CopySource header (`/` kept).
fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COPY_SOURCE).to_string()
}

/// A part's upload task panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("a part's upload task ended abnormally")]
struct PartTask(#[source] tokio::task::JoinError);

/// Aborts a multipart upload that is dropped before it completed (its future was
/// cancelled), so no parts are left billed in the bucket.
struct AbortOnDrop {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// `None` once the upload completed or was aborted.
    upload_id: Option<String>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.upload_id.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        rt.spawn(async move {
            let sent = client
                .abort_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&id)
                .send()
                .await;
            if let Err(e) = sent {
                tracing::warn!(
                    "aborting the cancelled upload of s3://{bucket}/{key} failed: {}",
                    aws::describe(&e)
                );
            }
        });
    }
}

/// Reading the stream being uploaded failed.
#[derive(Debug, thiserror::Error)]
#[error("reading the source")]
struct SourceRead(#[source] std::io::Error);

/// Size of each uploaded part (S3's minimum is 5 MiB, except the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one streamed object uploading at once (the next is read meanwhile).
pub const PARTS_IN_FLIGHT: usize = 2;

/// The part uploads in flight.
type PartUploads = tokio::task::JoinSet<PartSent>;

/// How one part's upload ended.
struct PartSent {
    number: i32,
    /// The part's ETag (S3 may omit it), or why the upload failed.
    e_tag: Result<Option<ETag>, UploadPartSdkError>,
    /// Its bytes, whose buffer is reused once the SDK lets go of it.
    part: Bytes,
}

/// An uploaded part's ETag, as CompleteMultipartUpload wants it back.
type ETag = String;

/// What an UploadPart call fails with.
type UploadPartSdkError = aws_smithy_runtime_api::client::result::SdkError<
    aws_sdk_s3::operation::upload_part::UploadPartError,
    aws_smithy_runtime_api::client::orchestrator::HttpResponse,
>;

/// The Content-Type a key is served with (so report.html opens in a browser).
fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("yml" | "yaml") => "text/yaml; charset=utf-8",
        Some("log") => "text/plain; charset=utf-8",
        Some("gz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// A store in an S3 bucket, under an optional key prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    /// GetObject's body, not yet read; `None` when the key is absent.
    async fn get_object(&self, key: &str) -> Result<Option<ByteStream>, StoreError> {
        let full = self.full(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await;
        match out {
            Ok(o) => Ok(Some(o.body)),
            Err(e) if aws::code(&e) == Some("NoSuchKey") => Ok(None),
            Err(e) => Err(err("get", key, e)),
        }
    }

    /// Keys are stored under `prefix` (e.g. `""` or `"squall/"`) in `bucket`.
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        S3Store {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn parse_url(url: &str) -> Option<(String, String)> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Some((bucket.to_owned(), prefix))
    }

    fn full(&self, key: &str) -> Result<String, StoreError> {
        if key.is_empty() || key.starts_with('/') || key.split('/').any(|p| p == ".." || p == ".") {
            return Err(StoreError::BadKey(key.to_owned()));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        let r = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(
                "aborting the upload of s3://{}/{key} failed: {}",
                self.bucket,
                aws::describe(&e)
            );
        }
    }

    /// Fills `buf` (emptied first) with up to one part from `body`; fewer bytes only at
    /// the end. The buffer never grows past one part.
    async fn read_part(
        body: &mut (dyn AsyncRead + Send + Unpin),
        buf: &mut BytesMut,
    ) -> std::io::Result<()> {
        buf.clear();
        buf.reserve(PART_SIZE);
        while buf.len() < PART_SIZE {
            let room = PART_SIZE - buf.len();
            if body.read_buf(&mut (&mut *buf).limit(room)).await? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Takes the next finished part upload: records its part, or fails the put. Its
    /// buffer goes back to `spare` (once the SDK has let go of it).
    async fn part_done(
        &self,
        uploads: &mut PartUploads,
        parts: &mut Vec<CompletedPart>,
        spare: &mut Vec<BytesMut>,
        key: &str,
    ) -> Result<(), StoreError> {
        let Some(joined) = uploads.join_next().await else {
            return Ok(());
        };
        let PartSent {
            number,
            e_tag,
            part,
        } = joined.map_err(|e| StoreError::failed("put", key, PartTask(e)))?;
        let e_tag = e_tag.map_err(|e| err("put", key, e))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(e_tag)
                .build(),
        );
        if let Ok(buf) = part.try_into_mut() {
            spare.push(buf);
        }
        Ok(())
    }

    /// One PutObject of `body` (the SDK's attempts share it, none copies it).
    async fn put_bytes(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let full = self.full(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .content_type(content_type(key))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| err("put", key, e))?;
        Ok(())
    }
}

fn err<
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    op: &'static str,
    key: &str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> StoreError {
    StoreError::failed(op, key, AwsError::from_sdk(e))
}

#[async_trait]
impl Store for S3Store {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.put_bytes(key, Bytes::from(body)).await
    }

    async fn put_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64, StoreError> {
        let full = self.full(key)?;
        let io_err = |e: std::io::Error| StoreError::failed("put", key, SourceRead(e));
        let mut cur = BytesMut::with_capacity(PART_SIZE);
        Self::read_part(body, &mut cur).await.map_err(io_err)?;
        if cur.len() < PART_SIZE {
            // Small: one PutObject.
            let n = cur.len() as u64;
            self.put_bytes(key, cur.freeze()).await?;
            return Ok(n);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .content_type(content_type(key))
            .send()
            .await
            .map_err(|e| err("put", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let mut parts = Vec::new();
        let mut total = 0u64;
        // Up to PARTS_IN_FLIGHT parts upload at once and the next is read while fewer do:
        // PARTS_IN_FLIGHT part buffers, reused for the whole object (so memory stays flat
        // however many parts). A part's bytes are shared, not copied, between its
        // upload's attempts. Dropped unfinished (the fetch was cancelled), the upload is
        // aborted by the guard.
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: full.clone(),
            upload_id: Some(upload_id.clone()),
        };
        let mut uploads = PartUploads::new();
        let result: Result<(), StoreError> = async {
            let mut spare: Vec<BytesMut> = Vec::new();
            let mut number = 0i32;
            loop {
                number += 1;
                let part = std::mem::take(&mut cur).freeze();
                total += part.len() as u64;
                let (client, bucket, full, id) = (
                    self.client.clone(),
                    self.bucket.clone(),
                    full.clone(),
                    upload_id.clone(),
                );
                uploads.spawn(async move {
                    let sent = client
                        .upload_part()
                        .bucket(&bucket)
                        .key(&full)
                        .upload_id(&id)
                        .part_number(number)
                        .body(ByteStream::from(part.clone()))
                        .send()
                        .await;
                    PartSent {
                        number,
                        e_tag: sent.map(|o| o.e_tag().map(str::to_owned)),
                        part,
                    }
                });
                // Wait for a slot before filling another buffer.
                while uploads.len() >= PARTS_IN_FLIGHT {
                    self.part_done(&mut uploads, &mut parts, &mut spare, key)
                        .await?;
                }
                let mut next = spare
                    .pop()
                    .unwrap_or_else(|| BytesMut::with_capacity(PART_SIZE));
                Self::read_part(body, &mut next).await.map_err(io_err)?;
                if next.is_empty() {
                    break;
                }
                cur = next;
            }
            while !uploads.is_empty() {
                self.part_done(&mut uploads, &mut parts, &mut spare, key)
                    .await?;
            }
            parts.sort_by_key(|p: &CompletedPart| p.part_number());
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // No part may land after the abort.
            uploads.shutdown().await;
            guard.upload_id = None;
            self.abort(&full, &upload_id).await;
            return Err(e);
        }
        let done = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(&upload_id)
            .multipart_upload(done)
            .send()
            .await;
        guard.upload_id = None;
        if let Err(e) = completed {
            self.abort(&full, &upload_id).await;
            return Err(err("put", key, e));
        }
        Ok(total)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(body) = self.get_object(key).await? else {
            return Ok(None);
        };
        let bytes = body
            .collect()
            .await
            .map_err(|e| StoreError::failed("get", key, e))?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn get_stream(&self, key: &str) -> Result<Option<ByteReader>, StoreError> {
        Ok(self
            .get_object(key)
            .await?
            .map(|body| Box::new(body.into_async_read()) as ByteReader))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        self.list_each(prefix, &mut |o| keys.push(o.key)).await?;
        keys.sort();
        Ok(keys)
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut names = std::collections::BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .delimiter("/")
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| err("list", prefix, e))?;
            let folders = page.common_prefixes().iter().filter_map(|p| p.prefix());
            let files = page.contents().iter().filter_map(|o| o.key());
            for key in folders.chain(files) {
                if let Some(name) = key
                    .strip_prefix(full_prefix.as_str())
                    .map(|r| r.trim_end_matches('/'))
                    .filter(|n| !n.is_empty())
                {
                    names.insert(name.to_owned());
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(names.into_iter().collect()),
            }
        }
    }

    async fn list_each(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<(), StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| err("list", prefix, e))?;
            for o in page.contents() {
                let Some(key) = o.key().and_then(|k| k.strip_prefix(self.prefix.as_str())) else {
                    continue;
                };
                each(ObjectInfo {
                    key: key.to_owned(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    etag: o.e_tag().map(str::to_owned),
                    version: None,
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(()),
            }
        }
    }

    async fn any_under(&self, prefix: &str) -> Result<bool, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| err("list", prefix, e))?;
        Ok(!page.contents().is_empty())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let full = self.full(key)?;
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await;
        match out {
            Ok(o) => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: o
                    .content_length()
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0),
                etag: o.e_tag().map(str::to_owned),
                version: o.version_id().map(str::to_owned),
            })),
            Err(e) if matches!(aws::code(&e), Some("NotFound" | "NoSuchKey" | "404")) => Ok(None),
            Err(e) => Err(err("head", key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full(key)?;
        // S3 answers a delete of an absent key with success.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| err("delete", key, e))?;
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (src, dest) = (self.full(from)?, self.full(to)?);
        // CopySource is `bucket/key`, URL-encoded.
        let source = format!("{}/{}", self.bucket, url_encode(&src));
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(&dest)
            .copy_source(&source)
            // One request that copies the whole object (up to 5 GB) server-side: it may
            // take longer than an ordinary attempt.
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(aws::long_timeout_config()),
            )
            .send()
            .await
            .map_err(|e| err("copy", to, e))?;
        Ok(())
    }

    async fn create_if_absent(&self, key: &str, body: Vec<u8>) -> Result<bool, StoreError> {
        self.create_once(key, body).await
    }

    fn locate(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(S3Store::parse_url("s3://b"), Some(("b".into(), "".into())));
        assert_eq!(
            S3Store::parse_url("s3://b/p"),
            Some(("b".into(), "p/".into()))
        );
        assert_eq!(
            S3Store::parse_url("s3://b/p/q/"),
            Some(("b".into(), "p/q/".into()))
        );
        assert_eq!(S3Store::parse_url("s3:///x"), None);
        assert_eq!(S3Store::parse_url("/tmp"), None);
    }
}
