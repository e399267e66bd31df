//! CPU and memory meters read from `/proc`: the whole machine's busy time, a process's
//! CPU seconds and its `kB` status fields (VmRSS, VmHWM), and moto's PID to point them
//! at. bench-s3 reads them around each pipeline to tell its CPU from moto's and from
//! anything else that ran meanwhile.
//!
//! Linux only, and never an error: a value that cannot be read is NaN or `None`. The
//! per-process peak RSS of the timed processes comes from `/usr/bin/time` (`wait4`), not
//! from here.

use crate::facts::first_line;
use std::fs;

/// moto_server's PID, found by its command line (`... moto_server -H 127.0.0.1 -p PORT`).
pub fn moto_pid(port: u16) -> Option<u32> {
    let port = port.to_string();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_moto = args
            .iter()
            .any(|a| String::from_utf8_lossy(a).ends_with("moto_server"));
        let on_port = args
            .windows(2)
            .any(|w| w[0] == b"-p" && w[1] == port.as_bytes());
        (is_moto && on_port).then_some(pid)
    })
}

/// CPU accounting around a pipeline: the whole machine's busy time, this process's and
/// moto's, to tell what else ran meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    clk_tck: f64,
    moto: Option<u32>,
}

/// CPU seconds so far: the machine's (user + nice + system over all cores, from
/// /proc/stat), this process's and moto's (NaN without moto).
#[derive(Debug, Clone, Copy)]
pub struct CpuSnap {
    pub busy: f64,
    pub own: f64,
    pub moto: f64,
}

impl Meter {
    /// A meter of this process and the machine, and of moto when its PID is given.
    pub fn new(moto: Option<u32>) -> Meter {
        Meter {
            clk_tck: first_line("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0),
            moto,
        }
    }

    /// The CPU seconds used so far.
    pub fn snap(&self) -> CpuSnap {
        let busy = fs::read_to_string("/proc/stat").ok().and_then(|t| {
            let line = t.lines().next()?.strip_prefix("cpu ")?.to_owned();
            let f: Vec<f64> = line
                .split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3).then(|| f.iter().sum::<f64>() / self.clk_tck)
        });
        CpuSnap {
            busy: busy.unwrap_or(f64::NAN),
            own: proc_cpu_secs(std::process::id(), self.clk_tck).unwrap_or(f64::NAN),
            moto: self
                .moto
                .and_then(|p| proc_cpu_secs(p, self.clk_tck))
                .unwrap_or(f64::NAN),
        }
    }
}

/// A process's CPU seconds so far (user + system, from /proc/PID/stat).
pub fn proc_cpu_secs(pid: u32, clk_tck: f64) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After `PID (COMM) `: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck)
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}
