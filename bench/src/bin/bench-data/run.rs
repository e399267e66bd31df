//! The benchmark proper: the data put in place (the object in moto, the file on the
//! host, both checked), every contender's run and its check, and the order of the runs
//! (one untimed warm-up each, then rounds: the floors, then each direction's pair
//! alternating which goes first).
//!
//! Processes are run by `proc.rs`, copies checked by `verify.rs`, the figures rendered
//! by `report.rs`; this module decides what runs when and collects the samples.

use crate::contender::{Contender, FLOORS, PAIRS};
use crate::pattern::Gen;
use crate::proc::{self, Feed, Peak, Sink, Stage};
use crate::verify;
use anyhow::{Context, Result, ensure};
use squall::backend::aws::s3::S3Store;
use squall::record::{RunRecord, RunStatus, TaskOutcome};
use squall::seam::Store;
use squall_tests::moto::Moto;
use squall_tests::sshd::SshFleet;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The bucket everything goes to.
pub const BUCKET: &str = "squall-bench-data";
/// The source object every copy reads.
pub const SRC_KEY: &str = "src/data.bin";
/// The folder on the host (relative to the login home) for the benchmark's files.
pub const HOST_DIR: &str = "squall-bench-data";
/// The host file every fetch reads.
pub const HOST_SRC: &str = "squall-bench-data/src.bin";
/// The inventory's (and the playbooks') one group.
const GROUP: &str = "w";
/// Environment variables taken from every AWS client's environment: a profile name
/// would have to exist in the (absent) profile files.
const AWS_UNSET: &[&str] = &["AWS_PROFILE", "AWS_DEFAULT_PROFILE"];
/// ... and from squall's, so only the flags decide its home and agent.
const SQUALL_UNSET: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "SQUALL_HOME",
    "SQUALL_WORKER_BIN",
    "SQUALL_LOG",
];

/// One run of one contender.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds of the transfer itself: squall's task (its `started_at_ms` to
    /// `ended_at_ms` in run.json); a pipeline's wall time (first spawn to last exit).
    pub transfer: f64,
    /// squall only: the whole `squall run`, spawn to exit.
    pub run_wall: Option<f64>,
    /// Peak RSS (KiB) of squall (VmHWM), of `aws`, or of ssh in the ssh floors.
    pub peak_kib: u64,
    /// The peers: ssh's peak RSS (KiB).
    pub ssh_kib: Option<u64>,
}

/// The binaries that are timed.
#[derive(Debug)]
pub struct Tools {
    pub squall: PathBuf,
    pub agent: PathBuf,
    pub aws: PathBuf,
}

/// The fleet (one host), moto, the scratch folder and the binaries.
pub struct Bench<'a> {
    fleet: &'a SshFleet,
    moto: &'a Moto,
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    tools: Tools,
    /// Scratch under the fleet's dir (short: control sockets have a path limit).
    work: PathBuf,
    /// Every process's stderr and GNU time output.
    logs: PathBuf,
    inventory: PathBuf,
    /// The environment of every AWS client (squall included): moto's, and no profile
    /// files, so nothing reads ~/.aws.
    env: Vec<(String, String)>,
    size: u64,
    sha256: String,
    seq: u32,
}

impl<'a> Bench<'a> {
    pub fn new(
        fleet: &'a SshFleet,
        moto: &'a Moto,
        tools: Tools,
        size: u64,
        sha256: String,
    ) -> Result<Bench<'a>> {
        let work = fleet.dir.join("d");
        let logs = work.join("logs");
        fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let inventory = work.join("inventory.yml");
        fs::write(&inventory, fleet.inventory_yaml(&[(GROUP, 0..1)]))
            .with_context(|| format!("writing {}", inventory.display()))?;
        let none = work.join("no-such-aws-file").to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = moto
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.push(("AWS_CONFIG_FILE".into(), none.clone()));
        env.push(("AWS_SHARED_CREDENTIALS_FILE".into(), none));
        let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        let client =
            rt.block_on(async { squall::backend::aws::s3_client(&moto.sdk_config().await) });
        Ok(Bench {
            fleet,
            moto,
            rt,
            client,
            tools,
            work,
            logs,
            inventory,
            env,
            size,
            sha256,
            seq: 0,
        })
    }

    fn next(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// The bucket, the source object (streamed from the generator by
    /// `S3Store::put_stream`, then streamed back and checked) and the host file (the
    /// generator piped into `ssh HOST 'cat > FILE'`, checked by the host's sha256sum).
    pub fn setup(&mut self) -> Result<()> {
        let t = Instant::now();
        let size = self.size;
        self.rt.block_on(async {
            self.client
                .create_bucket()
                .bucket(BUCKET)
                .send()
                .await
                .context("creating the bucket")?;
            let store = S3Store::new(self.client.clone(), BUCKET, "");
            let n = store
                .put_stream(SRC_KEY, &mut Gen::new(size))
                .await
                .with_context(|| format!("uploading s3://{BUCKET}/{SRC_KEY}"))?;
            ensure!(n == size, "uploaded {n} of {size} bytes");
            verify::object(&self.client, BUCKET, SRC_KEY, size, &self.sha256, "setup").await
        })?;
        eprintln!(
            "  s3://{BUCKET}/{SRC_KEY}: {size} bytes, sha256 {} ({:.1}s, checked)",
            self.sha256,
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        verify::ssh(
            self.fleet,
            &[
                "sh",
                "-c",
                "rm -rf -- \"$1\" && mkdir -p -- \"$1\"",
                "sh",
                HOST_DIR,
            ],
        )?;
        let put = self.ssh_stage("ssh cat >", &["sh", "-c", &format!("cat > {HOST_SRC}")]);
        proc::run(
            &self.logs,
            "setup-host",
            &[put],
            Feed::Generated(size),
            Sink::File,
        )?;
        verify::host_file(self.fleet, HOST_SRC, size, &self.sha256, "setup")?;
        eprintln!(
            "  host {}:~/{HOST_SRC}: the same bytes ({:.1}s, checked by its sha256sum)",
            self.fleet.hosts[0].address,
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Removes the benchmark's folder on the host.
    pub fn cleanup(&self) -> Result<()> {
        verify::ssh(self.fleet, &["rm", "-rf", "--", HOST_DIR]).map(|_| ())
    }

    fn ssh_stage(&self, label: &str, remote: &[&str]) -> Stage {
        Stage::new(label, self.fleet.ssh_argv(0, remote))
    }

    fn aws_stage(&self, label: &str, args: &[&str]) -> Stage {
        let endpoint = self.moto.endpoint();
        let mut argv: Vec<String> = vec![self.tools.aws.to_string_lossy().into_owned()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv.extend(["--endpoint-url".to_owned(), endpoint]);
        Stage::new(label, argv).env(&self.env, AWS_UNSET)
    }

    /// One run of `c`, checked (and its copy removed); the number names its files.
    pub fn run_one(&mut self, c: Contender) -> Result<Sample> {
        let n = self.next();
        let size = self.size;
        let name = format!("{n:03}-{}", c.short().replace([' ', '|'], "-"));
        match c {
            Contender::FloorGet => {
                let get = self.aws_stage("aws s3 cp s3://B/K -", &["s3", "cp", &src_url(), "-"]);
                let f = proc::run(&self.logs, &name, &[get], Feed::Null, Sink::Count)?;
                ensure!(
                    f.counted == size,
                    "{name}: read {} of {size} bytes",
                    f.counted
                );
                Ok(pipeline_sample(&f, 0, None))
            }
            Contender::FloorSshRead => {
                let read = self.ssh_stage("ssh cat", &["cat", "--", HOST_SRC]);
                let f = proc::run(&self.logs, &name, &[read], Feed::Null, Sink::Count)?;
                ensure!(
                    f.counted == size,
                    "{name}: read {} of {size} bytes",
                    f.counted
                );
                Ok(pipeline_sample(&f, 0, None))
            }
            Contender::FloorSshWrite => {
                let write = self.ssh_stage("ssh wc -c", &["wc", "-c"]);
                let f = proc::run(
                    &self.logs,
                    &name,
                    &[write],
                    Feed::Generated(size),
                    Sink::File,
                )?;
                let got: u64 = f
                    .stdout
                    .trim()
                    .parse()
                    .with_context(|| format!("{name}: `wc -c` said `{}`", f.stdout))?;
                ensure!(
                    got == size,
                    "{name}: the host counted {got} of {size} bytes"
                );
                Ok(pipeline_sample(&f, 0, None))
            }
            Contender::FloorPut => {
                let key = format!("floor/{n}.bin");
                let url = format!("s3://{BUCKET}/{key}");
                let put = self.aws_stage("aws s3 cp - s3://B/K", &["s3", "cp", "-", &url]);
                let f = proc::run(&self.logs, &name, &[put], Feed::Generated(size), Sink::File)?;
                // The full check is the peers' and squall's; here the size, then gone.
                self.rt.block_on(async {
                    let got = verify::object_size(&self.client, BUCKET, &key).await?;
                    ensure!(got == size, "{name}: {url} has {got} of {size} bytes");
                    verify::delete(&self.client, BUCKET, &key).await
                })?;
                Ok(pipeline_sample(&f, 0, None))
            }
            Contender::PeerCopy => {
                let dest = format!("{HOST_DIR}/copy-{n}.bin");
                let get = self.aws_stage("aws s3 cp s3://B/K -", &["s3", "cp", &src_url(), "-"]);
                let put = self.ssh_stage("ssh cat >", &["sh", "-c", &format!("cat > {dest}")]);
                let f = proc::run(&self.logs, &name, &[get, put], Feed::Null, Sink::File)?;
                verify::host_file(self.fleet, &dest, size, &self.sha256, c.short())?;
                verify::host_rm(self.fleet, &dest)?;
                Ok(pipeline_sample(&f, 0, Some(1)))
            }
            Contender::PeerFetch => {
                let key = format!("fetch/peer-{n}/src.bin");
                let url = format!("s3://{BUCKET}/{key}");
                let read = self.ssh_stage("ssh cat", &["cat", "--", HOST_SRC]);
                let put = self.aws_stage("aws s3 cp - s3://B/K2", &["s3", "cp", "-", &url]);
                let f = proc::run(&self.logs, &name, &[read, put], Feed::Null, Sink::File)?;
                self.check_object(&key, c)?;
                Ok(pipeline_sample(&f, 1, Some(0)))
            }
            Contender::SquallCopy => {
                let dest = format!("{HOST_DIR}/copy-{n}.bin");
                let task = format!("copy: {{ src: \"{}\", dest: \"{dest}\" }}", src_url());
                let (s, _) = self.run_squall(n, "copy", &task)?;
                verify::host_file(self.fleet, &dest, size, &self.sha256, c.short())?;
                verify::host_rm(self.fleet, &dest)?;
                Ok(s)
            }
            Contender::SquallFetch => {
                let prefix = format!("fetch/sq-{n}/");
                let task =
                    format!("fetch: {{ src: \"{HOST_SRC}\", dest: \"s3://{BUCKET}/{prefix}\" }}");
                let (s, rec) = self.run_squall(n, "fetch", &task)?;
                let [file] = &rec.files[..] else {
                    anyhow::bail!(
                        "squall fetch: {} stored files in run.json, expected 1",
                        rec.files.len()
                    );
                };
                let key = file
                    .key
                    .strip_prefix(&format!("s3://{BUCKET}/"))
                    .with_context(|| format!("squall fetch stored `{}`", file.key))?
                    .to_owned();
                ensure!(
                    key.starts_with(&prefix) && file.size == size && file.sha256 == self.sha256,
                    "squall fetch: run.json records {} ({} bytes, sha256 {}), expected under \
                     {prefix} with {size} bytes, sha256 {}",
                    file.key,
                    file.size,
                    file.sha256,
                    self.sha256
                );
                self.check_object(&key, c)?;
                Ok(s)
            }
        }
    }

    /// The object is the data (streamed back, hashed here); then it is deleted.
    fn check_object(&self, key: &str, c: Contender) -> Result<()> {
        self.rt.block_on(async {
            verify::object(
                &self.client,
                BUCKET,
                key,
                self.size,
                &self.sha256,
                c.short(),
            )
            .await?;
            verify::delete(&self.client, BUCKET, key).await
        })
    }

    /// `squall run` of a playbook with one stage of one task on the host, from a fresh
    /// home; checks it succeeded; the sample (task interval from run.json, the whole
    /// run's wall time, squall's VmHWM) and the record.
    fn run_squall(&self, n: u32, what: &str, task: &str) -> Result<(Sample, RunRecord)> {
        let run_id = format!("bench-{what}-{n}");
        let home = self.work.join(format!("sq{n}"));
        let playbook = self.work.join(format!("{run_id}.yml"));
        fs::write(
            &playbook,
            format!(
                "name: bench-{what}\nfleet:\n  {GROUP}:\n    count: 1\nstages:\n  - name: move\n    \
                 hosts: {GROUP}\n    tasks:\n      - {task}\n"
            ),
        )
        .with_context(|| format!("writing {}", playbook.display()))?;
        let mut argv: Vec<String> = vec![self.tools.squall.to_string_lossy().into_owned()];
        argv.extend(["run".to_owned(), path_str(&playbook)?]);
        argv.extend(["--inventory".to_owned(), path_str(&self.inventory)?]);
        argv.extend(["--home".to_owned(), path_str(&home)?]);
        argv.extend([
            "--no-progress".to_owned(),
            "--run-id".to_owned(),
            run_id.clone(),
        ]);
        argv.extend(["--agent".to_owned(), path_str(&self.tools.agent)?]);
        let stage = Stage::new("squall run", argv)
            .env(&self.env, SQUALL_UNSET)
            .cwd(&self.work)
            .peak(Peak::VmHwm);
        let name = format!("{n:03}-squall-{what}");
        let f = proc::run(&self.logs, &name, &[stage], Feed::Null, Sink::File)?;
        let path = home.join("store/runs").join(&run_id).join("run.json");
        let rec: RunRecord = serde_json::from_slice(
            &fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        ensure!(
            rec.status == RunStatus::Succeeded,
            "squall run {run_id} exited 0 but run.json says {:?} ({:?})",
            rec.status,
            rec.reason
        );
        let [t] = &rec.tasks[..] else {
            anyhow::bail!(
                "squall run {run_id}: {} tasks in run.json, expected 1",
                rec.tasks.len()
            );
        };
        ensure!(
            t.outcome == TaskOutcome::Succeeded,
            "squall run {run_id}: the task is {:?} ({:?})",
            t.outcome,
            t.error
        );
        let transfer = t.ended_at_ms.saturating_sub(t.started_at_ms) as f64 / 1000.0;
        fs::remove_dir_all(&home).with_context(|| format!("removing {}", home.display()))?;
        let sample = Sample {
            transfer,
            run_wall: Some(f.wall.as_secs_f64()),
            peak_kib: f.peak_kib[0],
            ssh_kib: None,
        };
        Ok((sample, rec))
    }

    /// One untimed warm-up of every contender (squall's first run installs its agent on
    /// the host; later runs find it in place), then `runs` rounds: the floors, then each
    /// direction's squall and peer, the pair's order alternating by round. Samples by
    /// contender, in round order.
    pub fn rounds(&mut self, runs: usize) -> Result<BTreeMap<Contender, Vec<Sample>>> {
        eprintln!("warm-up (untimed), one run of each contender, each checked...");
        for c in FLOORS.into_iter().chain(PAIRS.into_iter().flatten()) {
            let s = self.run_one(c)?;
            eprintln!("  {}", line(c, &s, self.size));
        }
        let mut samples: BTreeMap<Contender, Vec<Sample>> = BTreeMap::new();
        for round in 0..runs {
            eprintln!("round {}/{runs}:", round + 1);
            let mut order: Vec<Contender> = FLOORS.to_vec();
            for [a, b] in PAIRS {
                if round % 2 == 0 {
                    order.extend([a, b]);
                } else {
                    order.extend([b, a]);
                }
            }
            for c in order {
                let s = self.run_one(c)?;
                eprintln!("  {}", line(c, &s, self.size));
                samples.entry(c).or_default().push(s);
            }
        }
        Ok(samples)
    }
}

fn src_url() -> String {
    format!("s3://{BUCKET}/{SRC_KEY}")
}

fn path_str(p: &Path) -> Result<String> {
    Ok(p.to_str().context("a UTF-8 path")?.to_owned())
}

/// A pipeline's sample: its wall time, `main`'s peak RSS, and `ssh`'s if it has one.
fn pipeline_sample(f: &proc::Finished, main: usize, ssh: Option<usize>) -> Sample {
    Sample {
        transfer: f.wall.as_secs_f64(),
        run_wall: None,
        peak_kib: f.peak_kib[main],
        ssh_kib: ssh.map(|i| f.peak_kib[i]),
    }
}

/// A progress line for one run.
fn line(c: Contender, s: &Sample, size: u64) -> String {
    let mibs = |secs: f64| size as f64 / crate::MIB / secs;
    let mut l = format!(
        "{:<16} {:>7.2}s {:>7.1} MiB/s  peak RSS {} KiB ({})",
        c.short(),
        s.transfer,
        mibs(s.transfer),
        s.peak_kib,
        c.measured()
    );
    if let Some(w) = s.run_wall {
        l.push_str(&format!(
            "; whole squall run {w:.2}s ({:.1} MiB/s)",
            mibs(w)
        ));
    }
    if let Some(k) = s.ssh_kib {
        l.push_str(&format!("; ssh {k} KiB"));
    }
    l
}
