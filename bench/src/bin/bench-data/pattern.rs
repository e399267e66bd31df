//! The benchmark's data: `--size-mib` of deterministic pseudo-random bytes (splitmix64 of
//! a counter, from `squall_bench::loggen::Rng`: incompressible, never all zeros, the same
//! on every run and machine), produced on demand at any offset, so the same bytes go
//! into moto and onto the host without ever being whole in memory.
//!
//! [`Gen`] reads them (std and tokio `Read`); [`sha256`] is the digest every transferred
//! copy must have; [`self_check`] runs at start. Where the bytes are sent is `run.rs`'s.

use squall::digest;
use squall_bench::loggen::Rng;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// The generator's seed ("SQUALLDA").
pub const SEED: u64 = 0x5351_5541_4c4c_4441;
/// splitmix64's increment: word `i` is the first output of a generator seeded at
/// `SEED + i * GOLDEN`, i.e. splitmix64's output number `i + 1` from `SEED`.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// How much [`sha256`] generates at a time.
const CHUNK: usize = 1 << 20;

/// The 8 bytes at word index `i` (bytes `8i..8i+8`).
fn word(i: u64) -> [u8; 8] {
    Rng::new(SEED.wrapping_add(i.wrapping_mul(GOLDEN)))
        .next_u64()
        .to_le_bytes()
}

/// Fills `buf` with the bytes at offsets `pos..pos + buf.len()`.
fn fill(pos: u64, buf: &mut [u8]) {
    let mut at = pos;
    let mut rest = buf;
    // A partial first word.
    let skip = (at % 8) as usize;
    if skip != 0 {
        let w = word(at / 8);
        let n = (8 - skip).min(rest.len());
        rest[..n].copy_from_slice(&w[skip..skip + n]);
        at += n as u64;
        rest = &mut rest[n..];
    }
    let mut words = rest.chunks_exact_mut(8);
    for chunk in &mut words {
        chunk.copy_from_slice(&word(at / 8));
        at += 8;
    }
    let tail = words.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&word(at / 8)[..n]);
    }
}

/// The first `len` bytes of the data, read from the start.
#[derive(Debug, Clone)]
pub struct Gen {
    pos: u64,
    len: u64,
}

impl Gen {
    pub fn new(len: u64) -> Gen {
        Gen { pos: 0, len }
    }

    /// Fills the front of `buf` with the next bytes (none at the end); how many.
    fn next_into(&mut self, buf: &mut [u8]) -> usize {
        let left = self.len - self.pos;
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        fill(self.pos, &mut buf[..n]);
        self.pos += n as u64;
        n
    }
}

impl io::Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.next_into(buf))
    }
}

impl AsyncRead for Gen {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.next_into(buf.initialize_unfilled());
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// The sha256 (hex) of the first `len` bytes.
pub fn sha256(len: u64) -> String {
    let mut hash = digest::Running::default();
    let mut g = Gen::new(len);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = g.next_into(&mut buf);
        if n == 0 {
            return hash.finish();
        }
        hash.update(&buf[..n]);
    }
}

/// Checks that reads split anywhere give the same bytes, and that they are not mostly
/// zeros (run at start: this binary has no test target).
pub fn self_check() -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut whole = vec![0u8; 1000];
    fill(0, &mut whole);
    anyhow::ensure!(
        whole.iter().filter(|b| **b == 0).count() < 20,
        "the generator makes mostly zeros"
    );
    for split in [1usize, 3, 7, 8, 9, 500, 999] {
        let mut g = Gen::new(1000);
        let mut a = vec![0u8; split];
        let mut b = Vec::new();
        g.read_exact(&mut a)?;
        g.read_to_end(&mut b)?;
        a.extend(b);
        anyhow::ensure!(
            a == whole,
            "the generator differs when read split at {split}"
        );
    }
    anyhow::ensure!(
        sha256(1000) == digest::sha256_hex(&whole),
        "the generator's streamed digest differs from its whole one"
    );
    Ok(())
}
