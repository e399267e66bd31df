//! The benchmark proper: the two contenders, their pipelines (producer | uploader), and
//! the order of the runs: compression alone, one verified warm-up each, the timed rounds
//! interleaved (A B, B A, ...), upload alone.
//!
//! Processes are run by `pipeline.rs`, uploads checked by `verify.rs`, and the figures
//! rendered by `report.rs`; this module only decides what runs when and collects the
//! samples.

use crate::data::Dataset;
use crate::pipeline::{Finished, Sink, Stage, run_pipeline};
use crate::report::{Report, noisy};
use crate::upload_child::parse_child_report;
use crate::verify::{check_listing, check_upload, delete, download_and_list};
use crate::{Args, BUCKET};
use anyhow::{Context, Result, ensure};
use squall_bench::meter::{Meter, moto_pid, proc_status_kib};
use squall_tests::moto::Moto;
use std::fs;
use std::path::{Path, PathBuf};

/// The two contenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    Squall,
    TarAws,
}

impl Contender {
    pub fn index(self) -> usize {
        match self {
            Contender::Squall => 0,
            Contender::TarAws => 1,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Contender::Squall => "squall (`squall-worker pack` \\| `S3Store::put_stream`)",
            Contender::TarAws => "`tar czf -` \\| `aws s3 cp -`",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Contender::Squall => "squall",
            Contender::TarAws => "tar|aws",
        }
    }
}

pub const CONTENDERS: [Contender; 2] = [Contender::Squall, Contender::TarAws];

/// One timed (or warm-up) pipeline run.
#[derive(Debug)]
pub struct Sample {
    pub wall: f64,
    /// Peak RSS (KiB): producer, uploader.
    pub rss_kib: [u64; 2],
    /// CPU seconds: producer, uploader, moto (during the run).
    pub cpu: [f64; 3],
    /// CPU seconds other processes used during the run ([`Finished::other_cpu`]).
    pub other_cpu: f64,
    /// When the producer exited (seconds since the start): the rest of the wall time is
    /// the uploader finishing (last parts, CompleteMultipartUpload, exiting).
    pub producer_exit: f64,
    /// squall's upload child: (SDK ready, upload complete), seconds since it started.
    pub child: Option<(f64, f64)>,
}

/// A compression-only or upload-only run.
#[derive(Debug)]
pub struct Single {
    pub wall: f64,
    pub rss_kib: u64,
    /// CPU seconds of the measured process (the producer, resp. the uploader).
    pub cpu: f64,
    /// moto's CPU seconds during the run (upload only; NaN otherwise).
    pub moto_cpu: f64,
    /// CPU seconds other processes used during the run ([`Finished::other_cpu`]).
    pub other_cpu: f64,
    pub bytes: u64,
}

/// The scratch folders, the binaries that are timed, and this one (re-executed as the
/// upload child).
pub struct Bench {
    /// Every process's GNU time output and stderr, and the downloaded archives.
    dir: PathBuf,
    /// The generated agent root.
    pub root: PathBuf,
    agent: PathBuf,
    aws: PathBuf,
    this: PathBuf,
}

impl Bench {
    pub fn new(scratch: &Path, agent: PathBuf, aws: PathBuf) -> Result<Bench> {
        let dir = scratch.join("runs");
        fs::create_dir_all(&dir)?;
        Ok(Bench {
            dir,
            root: scratch.join("root"),
            agent,
            aws,
            this: std::env::current_exe().context("finding this binary's path")?,
        })
    }

    fn root_str(&self) -> Result<&str> {
        self.root.to_str().context("a UTF-8 scratch path")
    }

    /// The producer alone, its output counted and dropped.
    fn compress_only(&self, c: Contender, meter: &Meter) -> Result<Single> {
        let root = self.root_str()?;
        let stage = match c {
            Contender::Squall => {
                Stage::new("squall-worker pack", &self.agent, &["--root", root, "pack"])
            }
            Contender::TarAws => Stage::new("tar czf", "tar", &["czf", "-", "-C", root, "tasks"]),
        };
        let name = format!("compress-{}", c.index());
        let f = run_pipeline(&self.dir, &name, &[stage], Sink::Count, meter)?;
        Ok(Single {
            wall: f.wall.as_secs_f64(),
            rss_kib: f.rss_kib[0],
            cpu: f.cpu[0],
            moto_cpu: f.moto_cpu,
            other_cpu: f.other_cpu,
            bytes: f.counted,
        })
    }

    /// The environment of every uploader: moto's, and no profile files (nor a profile
    /// name, see [`run_pipeline`]), so both use their defaults whatever ~/.aws holds.
    fn upload_env(&self, moto: &Moto) -> Vec<(String, String)> {
        let none = self.dir.join("no-such-aws-file");
        let none = none.to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = moto
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.push(("AWS_CONFIG_FILE".into(), none.clone()));
        env.push(("AWS_SHARED_CREDENTIALS_FILE".into(), none));
        env
    }

    fn uploader(&self, c: Contender, moto: &Moto, key: &str) -> Stage {
        let env = self.upload_env(moto);
        match c {
            Contender::Squall => Stage::new(
                "bench-s3 --upload-child",
                &self.this,
                &["--upload-child", key, BUCKET],
            )
            .env(&env),
            Contender::TarAws => Stage::new(
                "aws s3 cp",
                &self.aws,
                &[
                    "s3",
                    "cp",
                    "-",
                    &format!("s3://{BUCKET}/{key}"),
                    "--endpoint-url",
                    &moto.endpoint(),
                ],
            )
            .env(&env),
        }
    }

    /// One whole pipeline: producer | uploader.
    fn pipeline(
        &self,
        c: Contender,
        moto: &Moto,
        key: &str,
        meter: &Meter,
    ) -> Result<(Sample, Finished)> {
        let root = self.root_str()?;
        let producer = match c {
            Contender::Squall => {
                Stage::new("squall-worker pack", &self.agent, &["--root", root, "pack"])
            }
            Contender::TarAws => Stage::new("tar czf", "tar", &["czf", "-", "-C", root, "tasks"]),
        };
        let name = key.replace('/', "-");
        let f = run_pipeline(
            &self.dir,
            &name,
            &[producer, self.uploader(c, moto, key)],
            Sink::Capture,
            meter,
        )?;
        let child = match c {
            Contender::Squall => Some(parse_child_report(&f.captured)?),
            Contender::TarAws => None,
        };
        Ok((
            Sample {
                wall: f.wall.as_secs_f64(),
                rss_kib: [f.rss_kib[0], f.rss_kib[1]],
                cpu: [f.cpu[0], f.cpu[1], f.moto_cpu],
                other_cpu: f.other_cpu,
                producer_exit: f.exits[0],
                child: child.map(|(_, ready, total)| (ready, total)),
            },
            f,
        ))
    }

    pub async fn run(&self, args: &Args, data: &Dataset) -> Result<Report> {
        // 1. Compression alone; these also give the archive sizes every upload must have.
        eprintln!("compression only (`... > pipe to this process`, counted)...");
        let mut compress = Vec::new();
        for c in CONTENDERS {
            let s = self.compress_only(c, &Meter::new(None))?;
            eprintln!(
                "  {}: {:.2}s, {} bytes (ratio {:.2}x), peak RSS {} KiB, CPU {:.2} s, \
                 other processes' CPU {:.2} s{}",
                c.short(),
                s.wall,
                s.bytes,
                data.raw_bytes as f64 / s.bytes as f64,
                s.rss_kib,
                s.cpu,
                s.other_cpu,
                noisy(s.other_cpu)
            );
            compress.push(s);
        }
        let expected = [compress[0].bytes, compress[1].bytes];

        eprintln!("starting moto...");
        let moto = Moto::start();
        let moto_pid = moto_pid(moto.addr.port());
        let meter = Meter::new(moto_pid);
        let client = squall::backend::aws::s3_client(&moto.sdk_config().await);
        client
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .context("creating the bucket")?;

        // 2. Warm-ups, each downloaded and listed in full.
        let mut archives = Vec::new();
        for c in CONTENDERS {
            let key = format!("warmup/{}.tar.gz", c.index());
            eprintln!("warm-up {}...", c.short());
            let (s, f) = self.pipeline(c, &moto, &key, &meter)?;
            check_upload(&client, c, &key, expected[c.index()], &f).await?;
            let archive = self.dir.join(format!("archive-{}.tar.gz", c.index()));
            let (n, listing) = download_and_list(&client, &key, &archive, &self.dir).await?;
            ensure!(
                n == expected[c.index()],
                "{}: downloaded {n} bytes, expected {}",
                c.short(),
                expected[c.index()]
            );
            check_listing(c, &listing, data)?;
            delete(&client, &key).await?;
            eprintln!(
                "  {:.2}s (untimed); object verified: {n} bytes, {} files listed by `tar tvzf -` with the right sizes",
                s.wall,
                data.files.len()
            );
            archives.push(archive);
        }

        // 3. Timed rounds, interleaved: A B, B A, A B, ...
        let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        let mut order = Vec::new();
        for round in 0..args.runs {
            let pair = if round % 2 == 0 {
                CONTENDERS
            } else {
                [CONTENDERS[1], CONTENDERS[0]]
            };
            for c in pair {
                let key = format!("run/{}-{}.tar.gz", round, c.index());
                let (s, f) = self.pipeline(c, &moto, &key, &meter)?;
                check_upload(&client, c, &key, expected[c.index()], &f).await?;
                delete(&client, &key).await?;
                let moto_now = moto_pid.and_then(|p| proc_status_kib(p, "VmRSS"));
                eprintln!(
                    "round {}: {:<7} {:>7.2}s (producer exited at {:.2}s)  peak RSS {} + {} KiB, \
                     CPU {:.2} + {:.2} s, moto CPU {:.2} s (moto RSS {}), other processes' CPU \
                     {:.2} s{}",
                    round + 1,
                    c.short(),
                    s.wall,
                    s.producer_exit,
                    s.rss_kib[0],
                    s.rss_kib[1],
                    s.cpu[0],
                    s.cpu[1],
                    s.cpu[2],
                    moto_now.map_or("?".into(), |k| format!("{} MiB", k / 1024)),
                    s.other_cpu,
                    noisy(s.other_cpu)
                );
                samples[c.index()].push(s);
                order.push(c);
            }
        }

        // 4. Upload alone: each contender's own archive from a file, through `cat |`.
        eprintln!("upload only (`cat ARCHIVE | uploader`)...");
        let mut upload = Vec::new();
        for c in CONTENDERS {
            let key = format!("upload-only/{}.tar.gz", c.index());
            let archive = archives[c.index()]
                .to_str()
                .context("a UTF-8 path")?
                .to_owned();
            let stages = [
                Stage::new("cat", "cat", &[&archive]),
                self.uploader(c, &moto, &key),
            ];
            let f = run_pipeline(
                &self.dir,
                &format!("upload-only-{}", c.index()),
                &stages,
                Sink::Capture,
                &meter,
            )?;
            check_upload(&client, c, &key, expected[c.index()], &f).await?;
            delete(&client, &key).await?;
            let s = Single {
                wall: f.wall.as_secs_f64(),
                rss_kib: f.rss_kib[1],
                cpu: f.cpu[1],
                moto_cpu: f.moto_cpu,
                other_cpu: f.other_cpu,
                bytes: expected[c.index()],
            };
            eprintln!(
                "  {}: {:.2}s for {} bytes, peak RSS {} KiB, CPU {:.2} s, moto CPU {:.2} s, \
                 other processes' CPU {:.2} s{}",
                c.short(),
                s.wall,
                s.bytes,
                s.rss_kib,
                s.cpu,
                s.moto_cpu,
                s.other_cpu,
                noisy(s.other_cpu)
            );
            upload.push(s);
        }
        let moto_rss = moto_pid
            .and_then(|p| Some((proc_status_kib(p, "VmHWM")?, proc_status_kib(p, "VmRSS")?)));
        drop(moto);
        let [c0, c1]: [Single; 2] = compress
            .try_into()
            .map_err(|_| anyhow::anyhow!("two compression runs"))?;
        let [u0, u1]: [Single; 2] = upload
            .try_into()
            .map_err(|_| anyhow::anyhow!("two upload runs"))?;
        Ok(Report {
            compress: [c0, c1],
            upload: [u0, u1],
            samples,
            order,
            moto_rss,
        })
    }
}
