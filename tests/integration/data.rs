//! Jobs that move data, end to end with the real `squall` binary: the inference example
//! over the shipped folder (exact outputs in the run's files, then a cached second run
//! that scores only new inputs); against moto S3, listings beyond one page, a manifest,
//! 200 MiB copied in and fetched out with the master's peak memory measured, and the
//! clear failures of a missing object and a missing bucket; what is checked before
//! anything launches.

use squall::record::{RunRecord, RunStatus};
use squall_tests::{Scratch, run_record, squall, text, workspace};
use std::collections::BTreeMap;
use std::path::Path;

/// What `files/infer.sh` computes for one input: every line, then `,` and the line's
/// length times the model name's length.
pub fn scores_of(input: &str, model: &str) -> String {
    input
        .lines()
        .map(|l| format!("{l},{}\n", l.len() * model.len()))
        .collect()
}

/// The inference example's expected outputs for the inputs in `dir`: every
/// `scores/NAME.scores` and `summary/summary.txt`, by key under the run's files.
pub fn expected_outputs(dir: &Path, model: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let (mut rows, mut total) = (0usize, 0usize);
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("the inputs folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    for name in names {
        let input = std::fs::read_to_string(dir.join(&name)).expect("an input");
        for l in input.lines() {
            rows += 1;
            total += l.len() * model.len();
        }
        out.insert(format!("scores/{name}.scores"), scores_of(&input, model));
    }
    out.insert(
        "summary/summary.txt".into(),
        format!("rows {rows}\ntotal {total}\n"),
    );
    out
}

/// Every file under the run's files area, by key relative to it.
pub fn run_files(home: &Path, run: &str) -> BTreeMap<String, String> {
    let root = home.join("store/runs").join(run).join("files");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.expect("an entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&root).expect("under root");
                out.insert(
                    rel.to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).expect("text"),
                );
            }
        }
    }
    out
}

/// Every stored file of the record matches what is in the store: size and sha256.
pub fn assert_files_recorded(home: &Path, rec: &RunRecord) {
    for f in &rec.files {
        let path = home.join("store").join(&f.key);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(f.size, bytes.len() as u64, "{}", f.key);
        assert_eq!(f.sha256, squall::digest::sha256_hex(&bytes), "{}", f.key);
    }
}

/// A copy of the inference example and its files in a scratch folder, to add inputs to.
fn example_copy(scratch: &Scratch) -> std::path::PathBuf {
    let dir = scratch.path.join("example");
    let src = workspace().join("playbooks");
    std::fs::create_dir_all(dir.join("files/inputs")).expect("mkdir");
    std::fs::copy(src.join("inference.yml"), dir.join("inference.yml")).expect("copy");
    std::fs::copy(src.join("files/infer.sh"), dir.join("files/infer.sh")).expect("copy");
    for e in std::fs::read_dir(src.join("files/inputs")).expect("inputs") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.join("files/inputs").join(e.file_name())).expect("copy");
    }
    dir
}

#[test]
fn a_second_run_with_two_new_inputs_scores_only_those_and_the_summary_covers_all() {
    let home = Scratch::new("cache");
    let dir = example_copy(&home);
    let pb = dir.join("inference.yml");
    let pb = pb.to_str().expect("utf-8");
    let out = squall(&home.path, &["run", pb, "--run-id", "cache-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let first = run_record(&home.path, "cache-1");
    let score = |rec: &RunRecord| {
        rec.stages
            .iter()
            .find(|s| s.name == "score")
            .cloned()
            .expect("score")
    };
    assert!(
        score(&first).cached.is_empty(),
        "a first run computes everything"
    );

    for (name, body) in [
        ("batch-13.csv", "new-1\nnew-22\n"),
        ("zz-late.csv", "late\n"),
    ] {
        std::fs::write(dir.join("files/inputs").join(name), body).expect("write");
    }
    let out = squall(&home.path, &["run", pb, "--run-id", "cache-2"]);
    assert!(out.status.success(), "{}", text(&out));
    let second = run_record(&home.path, "cache-2");
    assert_eq!(second.status, RunStatus::Succeeded);
    let st = score(&second);
    assert_eq!((st.shards_done, st.shards_total), (14, 14));
    let items = st
        .items
        .clone()
        .and_then(|i| i.listed)
        .expect("items listed in the record");
    let ran: std::collections::BTreeSet<String> = second
        .tasks
        .iter()
        .filter(|t| t.stage == "score")
        .map(|t| {
            items[t.item.expect("an item")]["name"]
                .as_str()
                .expect("name")
                .to_owned()
        })
        .collect();
    assert_eq!(
        ran,
        ["batch-13.csv".to_owned(), "zz-late.csv".to_owned()].into(),
        "only the new inputs ran"
    );
    assert_eq!(st.cached.len(), 12, "{:?}", st.cached);
    let cached_files: Vec<_> = second
        .files
        .iter()
        .filter(|f| f.cached_from.is_some())
        .collect();
    assert_eq!(cached_files.len(), 12);
    assert!(
        cached_files
            .iter()
            .all(|f| f.cached_from.as_deref() == Some("cache-1"))
    );
    // The summary covers all 14: the cached scores were placed in this run's files.
    assert_eq!(
        run_files(&home.path, "cache-2"),
        expected_outputs(&dir.join("files/inputs"), "resnet50")
    );
    assert_files_recorded(&home.path, &second);

    // A changed setup (the model) invalidates every item.
    let out = squall(
        &home.path,
        &["run", pb, "--run-id", "cache-3", "--var", "model=vgg16"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(score(&run_record(&home.path, "cache-3")).cached.is_empty());
    // `--no-cache` runs everything again.
    let out = squall(
        &home.path,
        &["run", pb, "--run-id", "cache-4", "--no-cache"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let fourth = run_record(&home.path, "cache-4");
    assert!(score(&fourth).cached.is_empty());
    assert_eq!(
        fourth.tasks.iter().filter(|t| t.stage == "score").count(),
        14 * 3
    );

    // The same playbook named by another spelling of its path is the same playbook.
    let respelled = dir.join(".").join("inference.yml");
    let respelled = respelled.to_str().expect("utf-8");
    let out = squall(&home.path, &["run", respelled, "--run-id", "cache-5"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(score(&run_record(&home.path, "cache-5")).cached.len(), 14);
    // A changed script the items run invalidates every item.
    let script = dir.join("files/infer.sh");
    let mut body = std::fs::read_to_string(&script).expect("read infer.sh");
    body.push_str("# changed\n");
    std::fs::write(&script, body).expect("write infer.sh");
    let out = squall(&home.path, &["run", pb, "--run-id", "cache-6"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(score(&run_record(&home.path, "cache-6")).cached.is_empty());
}

// --- against moto S3 ---

use squall::seam::Store;
use squall_tests::moto::{self, Moto};
use squall_tests::{COMMAND_LIMIT, finish_within, squall_command};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const DATA: &str = "squall-data-test";

use crate::aws::runtime;

/// `squall ARGS` pointed at moto, waited for.
fn squall_on(moto: &Moto, home: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = squall_command(home, args);
    cmd.envs(moto.env());
    squall_tests::output_within(&mut cmd, COMMAND_LIMIT)
}

/// `squall run PB --run-id RUN [EXTRA...]` against moto; it must exit with `code`.
fn run_on_moto(
    moto: &Moto,
    home: &Path,
    pb: &Path,
    run: &str,
    extra: &[&str],
    code: u8,
) -> std::process::Output {
    let mut args = vec!["run", pb.to_str().expect("utf-8"), "--run-id", run];
    args.extend_from_slice(extra);
    let out = squall_on(moto, home, &args);
    assert_eq!(out.status.code(), Some(i32::from(code)), "{}", text(&out));
    out
}

/// The data bucket in moto, as a store.
async fn data_bucket(moto: &Moto) -> squall::backend::aws::s3::S3Store {
    squall::backend::aws::s3::S3Store::new(
        squall::backend::aws::s3_client(&moto.sdk_config().await),
        DATA,
        "",
    )
}

/// `len` bytes in which every 8-byte word is its own offset: a reordered, repeated or
/// missing part changes the digest.
struct Pattern {
    pos: u64,
    len: u64,
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Whole words at a time (from the word boundary at or before `pos`).
        let n = (buf.remaining() as u64).min(self.len - self.pos) as usize;
        let start = self.pos;
        let mut chunk = Vec::with_capacity(n + 16);
        let mut word = start / 8;
        while (chunk.len() as u64) < n as u64 + start % 8 {
            chunk.extend_from_slice(&word.to_le_bytes());
            word += 1;
        }
        let skip = (start % 8) as usize;
        let chunk = &chunk[skip..skip + n];
        buf.put_slice(chunk);
        self.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

async fn sha256_of(mut r: impl AsyncRead + Unpin) -> (u64, String) {
    let mut h = squall::digest::Running::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = r.read(&mut buf).await.expect("reading");
        if got == 0 {
            return (n, h.finish());
        }
        n += got as u64;
        h.update(&buf[..got]);
    }
}

#[test]
fn objects_beyond_one_page_become_items_and_the_extra_go_to_a_jsonl_file() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let home = Scratch::new("data-objects");
    const N: usize = 1005;
    runtime().block_on(async {
        let bucket = moto.bucket(DATA).await;
        let mut puts = tokio::task::JoinSet::new();
        for i in 0..N {
            let b = bucket.clone();
            puts.spawn(async move {
                b.put(
                    &format!("many/part-{i:04}.txt"),
                    format!("{i}\n").into_bytes(),
                )
                .await
                .expect("put");
            });
            if puts.len() >= 16 {
                puts.join_next().await;
            }
        }
        puts.join_all().await;
        // Not under the prefix: not an item. A folder marker (as the console makes): not an item.
        bucket.put("manyother/x", b"x".to_vec()).await.expect("put");
        bucket.put("many/", Vec::new()).await.expect("put");
    });
    let pb = home.file(
        "pb.yml",
        &format!(
            r#"name: many
fleet: {{ w: {{ count: 8 }} }}
stages:
  - name: each
    hosts: w
    shards: {{ objects: "s3://{DATA}/many" }}
    tasks:
      - command: ["true"]
"#
        ),
    );
    run_on_moto(&moto, &home.path, &pb, "many-1", &[], squall::exit::OK);
    let rec = run_record(&home.path, "many-1");
    let st = &rec.stages[0];
    assert_eq!((st.shards_done, st.shards_total), (N, N));
    let items = st.items.clone().expect("items");
    assert_eq!(items.count, N);
    assert!(items.listed.is_none(), "more than the record keeps inline");
    let file = items.file.expect("the items' file");
    let body = std::fs::read(home.path.join("store").join(&file.key)).expect("the jsonl");
    assert_eq!(file.sha256, squall::digest::sha256_hex(&body));
    let lines: Vec<serde_json::Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), N);
    assert_eq!(lines[0]["url"], format!("s3://{DATA}/many/part-0000.txt"));
    assert_eq!(lines[0]["name"], "part-0000.txt");
    assert_eq!(lines[0]["size"], 2);
    assert!(
        lines[0]["etag"].as_str().is_some_and(|e| e.len() == 32),
        "{}",
        lines[0]
    );
    assert_eq!(lines[N - 1]["key"], format!("many/part-{:04}.txt", N - 1));
    let names: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names.len(), N, "each object once, sorted by key");
}

#[test]
fn a_manifest_gives_one_item_per_line_and_copies_read_what_it_names() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let home = Scratch::new("data-lines");
    runtime().block_on(async {
        let bucket = moto.bucket(DATA).await;
        let manifest = format!("s3://{DATA}/in/a b.txt\r\n\r\ns3://{DATA}/in/c.txt\n\n");
        bucket
            .put("manifest.txt", manifest.into_bytes())
            .await
            .expect("put");
        bucket
            .put("in/a b.txt", b"alpha\n".to_vec())
            .await
            .expect("put");
        bucket
            .put("in/c.txt", b"gamma\n".to_vec())
            .await
            .expect("put");
    });
    let pb = home.file(
        "pb.yml",
        &format!(
            r#"name: lines
fleet: {{ w: {{ count: 2 }} }}
stages:
  - name: each
    hosts: w
    shards: {{ lines: "{{{{ trigger.url }}}}" }}
    tasks:
      - copy: {{ src: "{{{{ item }}}}", dest: "in/{{{{ item | basename }}}}" }}
      - shell: tr a-z A-Z < in/{{{{ item | basename | quote }}}} > {{{{ item | basename | quote }}}}.up
      - fetch: {{ src: "{{{{ item | basename }}}}.up", dest: "s3://{DATA}/out/" }}
"#
        ),
    );
    let url = format!("s3://{DATA}/manifest.txt");
    run_on_moto(
        &moto,
        &home.path,
        &pb,
        "lines-1",
        &["--trigger-url", &url],
        squall::exit::OK,
    );
    let rec = run_record(&home.path, "lines-1");
    let items = rec.stages[0]
        .items
        .clone()
        .and_then(|i| i.listed)
        .expect("items");
    assert_eq!(
        items,
        [
            serde_json::json!(format!("s3://{DATA}/in/a b.txt")),
            serde_json::json!(format!("s3://{DATA}/in/c.txt"))
        ],
        "non-empty lines, \\r\\n trimmed"
    );
    assert_eq!(rec.trigger.get("url"), Some(&serde_json::json!(url)));
    runtime().block_on(async {
        let bucket = data_bucket(&moto).await;
        assert_eq!(
            bucket.get("out/a b.txt.up").await.expect("get").as_deref(),
            Some(&b"ALPHA\n"[..])
        );
        assert_eq!(
            bucket.get("out/c.txt.up").await.expect("get").as_deref(),
            Some(&b"GAMMA\n"[..])
        );
    });
    // Files are recorded in the order they were stored, which the two workers race for.
    let mut keys: Vec<&str> = rec.files.iter().map(|f| f.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            format!("s3://{DATA}/out/a b.txt.up"),
            format!("s3://{DATA}/out/c.txt.up")
        ]
    );
}

/// The peak resident memory of `pid` (VmHWM, this process only), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn two_hundred_mib_are_copied_in_and_fetched_out_byte_for_byte_in_bounded_memory() {
    if !moto::available() {
        return;
    }
    const SIZE: u64 = 200 << 20;
    let moto = Moto::start();
    let home = Scratch::new("data-big");
    let want = runtime().block_on(async {
        let bucket = moto.bucket(DATA).await;
        bucket
            .put_stream("big.bin", &mut Pattern { pos: 0, len: SIZE })
            .await
            .expect("upload");
        sha256_of(Pattern { pos: 0, len: SIZE }).await
    });
    let pb = home.file(
        "pb.yml",
        &format!(
            r#"name: big
fleet: {{ w: {{ count: 1 }} }}
stages:
  - name: move
    hosts: w
    tasks:
      - copy: {{ src: "s3://{DATA}/big.bin", dest: in/big.bin }}
      - shell: sha256sum in/big.bin | cut -d' ' -f1 > in.sha && mkdir -p out && mv in/big.bin out/big.bin
      - fetch: {{ src: out/big.bin, dest: "s3://{DATA}/back/" }}
      - fetch: {{ src: in.sha, dest: sums/ }}
"#
        ),
    );
    let mut cmd = squall_command(
        &home.path,
        &["run", pb.to_str().expect("utf-8"), "--run-id", "big-1"],
    );
    cmd.envs(moto.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("squall starts");
    let pid = child.id();
    let started = Instant::now();
    let mut peak = 0;
    while child.try_wait().expect("wait").is_none() && started.elapsed() < COMMAND_LIMIT {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = finish_within(child, Duration::from_secs(5), "squall run");
    assert!(out.status.success(), "{}", text(&out));
    let rec = run_record(&home.path, "big-1");
    eprintln!(
        "200 MiB in and out through moto: {:.1}s, squall's peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        peak / 1024
    );
    assert!(peak > 0, "the peak was measured");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB is over 64 MiB");
    // The host got every byte (its own digest of what arrived), and S3 got them back.
    let sums = std::fs::read_to_string(home.path.join("store/runs/big-1/files/sums/in.sha"))
        .expect("in.sha");
    assert_eq!(sums.trim(), want.1);
    let back = rec
        .files
        .iter()
        .find(|f| f.key.ends_with("back/big.bin"))
        .expect("recorded");
    assert_eq!((back.size, back.sha256.as_str()), (SIZE, want.1.as_str()));
    runtime().block_on(async {
        let bucket = data_bucket(&moto).await;
        let body = bucket
            .get_stream("back/big.bin")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(sha256_of(body).await, want);
    });
}

#[test]
fn a_missing_object_or_bucket_launches_nothing_and_says_which_and_why() {
    if !moto::available() {
        return;
    }
    let moto = Moto::start();
    let home = Scratch::new("data-missing");
    runtime().block_on(async {
        moto.bucket(DATA).await;
    });
    let pb = home.file(
        "pb.yml",
        &format!(
            r#"name: missing
fleet: {{ w: {{ count: 1 }} }}
stages:
  - name: one
    hosts: w
    shards: {{ objects: "s3://no-such-bucket-here/in/" }}
    tasks:
      - copy: {{ src: "s3://{DATA}/nope.bin", dest: nope.bin }}
"#
        ),
    );
    let out = run_on_moto(&moto, &home.path, &pb, "miss-1", &[], squall::exit::USAGE);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "pb.yml:6:24: `objects` listing `s3://no-such-bucket-here/in/` cannot be read"
        ),
        "{err}"
    );
    assert!(err.contains("NoSuchBucket"), "{err}");
    assert!(
        err.contains(&format!(
            "pb.yml:8:22: `copy` source `s3://{DATA}/nope.bin` does not exist; nothing was launched"
        )),
        "{err}"
    );
    assert!(
        !home.path.join("instances").exists(),
        "nothing was launched"
    );

    // Known only when the item is: the run fails on it, naming it.
    runtime().block_on(async {
        let bucket = data_bucket(&moto).await;
        bucket
            .put("list.txt", format!("s3://{DATA}/gone.bin\n").into_bytes())
            .await
            .expect("put");
    });
    let pb = home.file(
        "pb2.yml",
        &format!(
            r#"name: missing
fleet: {{ w: {{ count: 1 }} }}
stages:
  - name: one
    hosts: w
    shards: {{ lines: "s3://{DATA}/list.txt" }}
    tasks:
      - copy: {{ src: "{{{{ item }}}}", dest: x.bin }}
"#
        ),
    );
    run_on_moto(
        &moto,
        &home.path,
        &pb,
        "miss-2",
        &[],
        squall::exit::RUN_FAILED,
    );
    let rec = run_record(&home.path, "miss-2");
    let reason = rec.reason.unwrap_or_default();
    assert!(
        reason.contains(&format!("`s3://{DATA}/gone.bin` does not exist")),
        "{reason}"
    );

    // A fetch into a bucket that does not exist fails the run promptly, saying why.
    let pb = home.file(
        "pb3.yml",
        r#"name: missing
fleet: { w: { count: 1 } }
stages:
  - name: one
    hosts: w
    tasks:
      - shell: head -c 20971520 /dev/zero > big.bin
      - fetch: { src: big.bin, dest: "s3://no-such-bucket-here/out/" }
"#,
    );
    let started = Instant::now();
    run_on_moto(
        &moto,
        &home.path,
        &pb,
        "miss-3",
        &[],
        squall::exit::RUN_FAILED,
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let reason = run_record(&home.path, "miss-3").reason.unwrap_or_default();
    assert!(reason.contains("NoSuchBucket"), "{reason}");
}

/// The Python with scikit-learn that `scripts/install-test-deps` installs.
fn sklearn_python() -> Option<std::path::PathBuf> {
    let venv = std::env::var_os("SQUALL_SKLEARN_VENV").map_or_else(
        || std::path::PathBuf::from("/var/tmp/squall-sklearn-venv"),
        std::path::PathBuf::from,
    );
    let python = venv.join("bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import sklearn.datasets"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    squall_tests::skip(&format!(
        "scikit-learn is not installed in {} (run scripts/install-test-deps)",
        venv.display()
    ));
    None
}

#[test]
fn the_digits_example_trains_a_real_model_and_its_gathered_accuracy_is_above_0_9() {
    let Some(python) = sklearn_python() else {
        return;
    };
    let home = Scratch::new("digits");
    let var = format!("python={}", python.display());
    let out = squall(
        &home.path,
        &[
            "run",
            "playbooks/digits.yml",
            "--run-id",
            "digits-1",
            "--var",
            &var,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let rec = run_record(&home.path, "digits-1");
    let score = rec
        .stages
        .iter()
        .find(|s| s.name == "score")
        .expect("score");
    assert_eq!((score.shards_done, score.shards_total), (6, 6));
    let files = run_files(&home.path, "digits-1");
    let slices: Vec<&String> = files
        .keys()
        .filter(|k| k.starts_with("predictions/"))
        .collect();
    assert_eq!(slices.len(), 6, "{slices:?}");
    let rows: usize = files
        .iter()
        .filter(|(k, _)| k.starts_with("predictions/"))
        .map(|(_, v)| v.lines().count())
        .sum();
    let summary = files
        .get("summary/accuracy.txt")
        .expect("the accuracy was fetched");
    let accuracy: f64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("accuracy "))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {summary:?}"));
    assert!(accuracy > 0.9, "accuracy {accuracy}");
    // Every held-out digit was scored once (the aggregate step checks it too).
    assert!(summary.contains(&format!("samples {rows}\n")), "{summary}");
    assert_eq!(rows, 540);
}
