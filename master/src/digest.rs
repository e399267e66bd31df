//! sha256 in lowercase hex: the one place it is computed (playbook identities in
//! records, the agent binary's identity on hosts, ids derived from triggers, fetched files
//! and cache keys).
//!
//! Streaming a file is done in chunks, never whole in memory.

use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::AsyncReadExt;

/// The sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A sha256 computed as bytes go by (a fetched file while it streams).
#[derive(Debug, Clone, Default)]
pub struct Running(Sha256);

impl Running {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hex digest of everything seen.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// The sha256 of a local file, hex, read in 64 KiB chunks.
pub async fn file_sha256_hex(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// The first `bytes` bytes of the sha256 of `data`, hex (short stable ids).
pub fn short_sha256_hex(data: &[u8], bytes: usize) -> String {
    let digest = Sha256::digest(data);
    hex(&digest[..bytes.min(digest.len())])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_digests() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(super::short_sha256_hex(b"abc", 4), "ba7816bf");
    }
}
