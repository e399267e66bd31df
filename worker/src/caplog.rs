//! A task's log stream under a cap ([`squall_worker::TaskSpec::log_limit`]): the first
//! half of the cap goes to the log as it comes; the rest goes round a ring of the other
//! half in `STREAM.log.tail`, so that whatever the task writes, the disk holds at most
//! the cap. When the task ends, the ring is appended to the log in order, after a line
//! saying how many bytes were skipped between the two (none when nothing was), and the
//! ring file is removed: the log keeps its head and its tail.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// One capped stream.
#[derive(Debug)]
pub struct CappedLog {
    log: File,
    ring_path: PathBuf,
    ring: Option<File>,
    head_max: u64,
    ring_max: u64,
    /// Bytes fed so far.
    written: u64,
}

impl CappedLog {
    /// A stream into `log` keeping at most `limit` bytes (at least 2), its ring at
    /// `ring_path`.
    pub fn new(log: File, ring_path: PathBuf, limit: u64) -> CappedLog {
        let limit = limit.max(2);
        CappedLog {
            log,
            ring_path,
            ring: None,
            head_max: limit / 2,
            ring_max: limit - limit / 2,
            written: 0,
        }
    }

    /// Writes `buf`: into the head while it has room, then round the ring.
    pub fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        if self.written < self.head_max {
            let n = (self.head_max - self.written).min(buf.len() as u64) as usize;
            self.log.write_all(&buf[..n])?;
            self.written += n as u64;
            buf = &buf[n..];
        }
        while !buf.is_empty() {
            let pos = (self.written - self.head_max) % self.ring_max;
            let n = (self.ring_max - pos).min(buf.len() as u64) as usize;
            self.ring_file()?.write_all_at(&buf[..n], pos)?;
            self.written += n as u64;
            buf = &buf[n..];
        }
        Ok(())
    }

    fn ring_file(&mut self) -> io::Result<&File> {
        if self.ring.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.ring_path)?;
            self.ring = Some(f);
        }
        self.ring
            .as_ref()
            .ok_or_else(|| io::Error::other("the log's ring is not open"))
    }

    /// Appends the ring to the log (after the skipped-bytes line, when bytes were
    /// skipped) and removes the ring file.
    pub fn finish(mut self) -> io::Result<()> {
        let Some(mut ring) = self.ring.take() else {
            return Ok(());
        };
        let beyond = self.written - self.head_max;
        let result = (|| {
            if beyond <= self.ring_max {
                ring.seek(SeekFrom::Start(0))?;
                io::copy(&mut (&mut ring).take(beyond), &mut self.log)?;
            } else {
                let skipped = beyond - self.ring_max;
                writeln!(
                    self.log,
                    "\n[squall: {skipped} bytes of this stream were skipped here; the log keeps its first {} and its last {} bytes]",
                    self.head_max, self.ring_max
                )?;
                let start = beyond % self.ring_max;
                ring.seek(SeekFrom::Start(start))?;
                io::copy(&mut (&mut ring).take(self.ring_max - start), &mut self.log)?;
                ring.seek(SeekFrom::Start(0))?;
                io::copy(&mut (&mut ring).take(start), &mut self.log)?;
            }
            self.log.flush()
        })();
        drop(ring);
        let _ = std::fs::remove_file(&self.ring_path);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(limit: u64, chunks: &[&[u8]]) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!(
            "squall-caplog-{}-{limit}-{}",
            std::process::id(),
            chunks.len()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("stdout.log");
        let mut log = CappedLog::new(
            File::create(&path).expect("log"),
            dir.join("stdout.log.tail"),
            limit,
        );
        for c in chunks {
            log.write_all(c).expect("write");
        }
        log.finish().expect("finish");
        assert!(!dir.join("stdout.log.tail").exists(), "the ring is removed");
        let out = std::fs::read(&path).expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    #[test]
    fn under_the_cap_the_log_is_whole() {
        assert_eq!(capped(100, &[b"hello ", b"world"]), b"hello world");
        let data: Vec<u8> = (0..100u8).collect();
        assert_eq!(capped(100, &[&data[..30], &data[30..]]), data);
        assert_eq!(capped(100, &[]), b"");
    }

    #[test]
    fn over_the_cap_the_log_keeps_its_head_and_its_tail_with_a_marker() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [1, 7, 64, 1000] {
            let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
            let out = capped(100, &chunks);
            assert_eq!(&out[..50], &data[..50], "chunks of {chunk}");
            assert_eq!(&out[out.len() - 50..], &data[950..], "chunks of {chunk}");
            let marker = String::from_utf8_lossy(&out[50..out.len() - 50]).into_owned();
            assert!(
                marker.contains("900 bytes of this stream were skipped"),
                "{marker}"
            );
        }
    }
}
