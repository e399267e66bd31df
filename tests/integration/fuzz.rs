//! The playbook parser and validator driven with generated and mutated playbooks: the
//! examples and the broken-playbook table, with bytes flipped, lines deleted and
//! duplicated, indentation shifted, random keys and values inserted, YAML alias bombs
//! and very large inputs. No case panics or hangs, and every rejection names a line and
//! column inside the file. `SQUALL_FUZZ_CASES` sets the number of cases (a few thousand
//! by default; 100000 on demand), `SQUALL_FUZZ_SEED` the seed. Likewise the launcher's
//! event parser (S3, EventBridge, direct invocations, mutated) and `squall logs` over
//! truncated and corrupted archives: an answer or an error, never a panic.

use squall::plan::{self, Diagnostic};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A small, seeded generator (xorshift64*): reproducible cases without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const KEYS: &[&str] = &[
    "name",
    "fleet",
    "stages",
    "hosts",
    "tasks",
    "shell",
    "command",
    "copy",
    "fetch",
    "shards",
    "items",
    "retries",
    "deadline",
    "vars",
    "secrets",
    "count",
    "when",
    "loop",
    "src",
    "dest",
    "mode",
    "environment",
    "timeout",
    "max_masters",
    "cache",
    "trigger",
];
const VALUES: &[&str] = &[
    "",
    "~",
    "null",
    "-1",
    "0",
    "4294967296",
    "1e999",
    "true",
    "yes",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "{{",
    "}}",
    "{{ item }}",
    "{{ vars.x",
    "*a",
    "&a",
    "!!binary",
    "!tag",
    "|",
    ">",
    "- ",
    ": ",
    "#",
    "%YAML 1.2",
    "---",
    "...",
    "\t",
    "é",
    "\u{0}",
    "ssm:/x",
    "env:",
    "file:",
    "3m",
    "99999999h",
    "s3://b/k",
    "../../etc",
    "-oProxyCommand=x",
];

/// The playbooks the cases start from: the examples (first, `.0` of them) and every
/// broken-table case.
fn seeds() -> (Vec<String>, usize) {
    let dir = squall_tests::workspace().join("playbooks");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .expect("playbooks/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "yml"))
        .map(|e| std::fs::read_to_string(e.path()).expect("an example"))
        .collect();
    out.sort();
    let examples = out.len();
    out.extend(crate::playbooks::CASES.iter().map(|c| c.1.to_owned()));
    (out, examples)
}

/// One mutation of `src`.
fn mutate(rng: &mut Rng, src: &str) -> String {
    let mut lines: Vec<String> = src.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let i = rng.below(lines.len());
    match rng.below(9) {
        0 => {
            // A byte flipped (kept valid UTF-8 by working on a char boundary).
            let mut bytes = src.as_bytes().to_vec();
            if !bytes.is_empty() {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(7);
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        1 => {
            lines.remove(i);
        }
        2 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        3 => {
            let shift = " ".repeat(1 + rng.below(4));
            lines[i] = format!("{shift}{}", lines[i]);
        }
        4 => {
            lines[i] = lines[i].trim_start().to_owned();
        }
        5 => {
            let indent = " ".repeat(2 * rng.below(4));
            let line = format!("{indent}{}: {}", rng.pick(KEYS), rng.pick(VALUES));
            lines.insert(i, line);
        }
        6 => {
            // A value replaced.
            if let Some((k, _)) = lines[i].clone().split_once(": ") {
                lines[i] = format!("{k}: {}", rng.pick(VALUES));
            }
        }
        7 => {
            // A character inserted mid-line.
            let l = &lines[i];
            let cut = (0..=l.len())
                .filter(|c| l.is_char_boundary(*c))
                .nth(rng.below(l.chars().count() + 1))
                .unwrap_or(0);
            let v = rng.pick(VALUES);
            lines[i] = format!("{}{v}{}", &l[..cut], &l[cut..]);
        }
        _ => {
            lines.truncate(i.max(1));
        }
    }
    let mut out = lines.join("\n");
    if rng.below(2) == 0 {
        out.push('\n');
    }
    out
}

/// A billion-laughs alias bomb of `levels` levels, as a playbook's vars.
fn alias_bomb(levels: usize) -> String {
    let mut s = String::from(
        "name: bomb\nvars:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for l in 1..levels {
        let refs = vec![format!("*a{}", l - 1); 9].join(", ");
        s.push_str(&format!("  a{l}: &a{l} [{refs}]\n"));
    }
    s.push_str("fleet: { w: { count: 1 } }\nstages:\n  - { name: s, hosts: w, tasks: [ { shell: echo } ] }\n");
    s
}

/// A playbook whose vars nest `levels` block mappings deep.
fn block_nesting(levels: usize) -> String {
    let mut s = String::from("name: deep\nvars:\n");
    for l in 0..levels {
        s.push_str(&format!("{}k{l}:\n", "  ".repeat(l + 1)));
    }
    s.push_str(&format!("{}leaf: 1\n", "  ".repeat(levels + 1)));
    s
}

/// A playbook whose vars use `n` aliases of one anchor.
fn many_aliases(n: usize) -> String {
    let mut s = String::from("name: aliases\nvars:\n  a: &a x\n  list:\n");
    for _ in 0..n {
        s.push_str("    - *a\n");
    }
    s
}

fn parse(src: &str) -> Result<plan::Plan, plan::Invalid> {
    plan::parse(Path::new("fuzz.yml"), src, Path::new("."), &BTreeMap::new())
}

/// Every diagnostic names a line and column inside `src` (one past the last line for a
/// file that ends too early).
fn check_positions(src: &str, diags: &[Diagnostic]) -> Result<(), String> {
    let lines = src.lines().count().max(1) as u64;
    if diags.is_empty() {
        return Err("a rejection without a diagnostic".into());
    }
    for d in diags {
        let ok = d.line >= 1 && d.line <= lines + 1 && d.column >= 1;
        if !ok {
            return Err(format!("outside the file ({lines} lines): {d}"));
        }
    }
    Ok(())
}

/// Runs one case: no panic, bounded time, positions inside the file.
fn run_case(src: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let out = std::panic::catch_unwind(|| parse(src).map(|_| ()))
        .map_err(|_| "the parser panicked".to_owned())?;
    let took = started.elapsed();
    if let Err(invalid) = out {
        check_positions(src, &invalid.0)?;
    }
    Ok(took)
}

#[test]
fn generated_and_mutated_playbooks_never_panic_or_hang_and_every_rejection_is_located() {
    let cases: usize = std::env::var("SQUALL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("SQUALL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_5EED);
    let (seeds, examples) = seeds();
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let (mut rejected, mut slowest) = (0usize, Duration::ZERO);
    // Panics are caught and reported as failures; keep their default report quiet.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for n in 0..cases {
        // Half the cases start from a valid example, mutated lightly, so that some
        // still pass and validation (not only the YAML layer) is reached.
        let mut src = if rng.below(2) == 0 {
            rng.pick(&seeds[..examples]).clone()
        } else {
            rng.pick(&seeds).clone()
        };
        for _ in 0..1 + rng.below(3) {
            src = mutate(&mut rng, &src);
        }
        match run_case(&src) {
            Ok(took) => slowest = slowest.max(took),
            Err(why) => failures.push(format!("case {n}: {why}\n---\n{src}\n---")),
        }
        if parse(&src).is_err() {
            rejected += 1;
        }
        if failures.len() >= 5 {
            break;
        }
    }
    std::panic::set_hook(hook);
    eprintln!(
        "fuzz: {cases} cases (seed {seed}) in {:.1}s, {rejected} rejected, slowest {slowest:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(slowest < Duration::from_secs(2), "a case took {slowest:?}");
}

#[test]
fn alias_bombs_and_huge_playbooks_are_refused_quickly_with_a_position() {
    for (name, src, says) in [
        ("alias bomb", alias_bomb(9), "alias bomb"),
        (
            "huge",
            format!("name: huge\n# {}\n", "x".repeat(5 * 1024 * 1024)),
            "larger than 4 MiB",
        ),
        (
            "deep",
            format!(
                "name: deep\nvars: {{ x: {}{} }}\n",
                "[".repeat(5000),
                "]".repeat(5000)
            ),
            "nest too deep",
        ),
        ("deep in blocks", block_nesting(70), "nest too deep"),
        ("many aliases", many_aliases(1200), "too many aliases"),
    ] {
        let started = Instant::now();
        let err = parse(&src).expect_err(name);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{name} took {took:?}");
        check_positions(&src, &err.0).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = err.to_string();
        assert!(text.contains(says), "{name}: {text:.300}");
        // The message shows the place, not the whole (maybe huge) line.
        assert!(text.len() < 2000, "{name}: a {}-byte message", text.len());
        eprintln!("{name}: refused in {took:?}: {err}");
    }
}

/// Cases for the event and archive tests (a tenth of the playbook cases).
fn small_cases() -> usize {
    std::env::var("SQUALL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(300, |n| (n / 10).max(1))
}

#[test]
fn mutated_events_are_parsed_or_refused_never_a_panic() {
    let events = [
        squall_tests::moto::s3_put_event("b", "inbox/a%2Bb+c.csv", "etag", "seq"),
        serde_json::json!({"version": "0", "id": "x", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "1", "time": "2026-12-02T00:00:00Z",
            "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:1:rule/r"], "detail": {}}),
        serde_json::json!({"playbook": "playbooks/p.yml", "request_id": "r", "vars": {"a": "b"}}),
        serde_json::json!({"squall_watch": "run-1"}),
    ];
    let mut rng = Rng(0xE7E7_E7E7);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let (mut parsed, cases) = (0, small_cases());
    for n in 0..cases {
        let text = rng.pick(&events).to_string();
        let mut bytes = text.into_bytes();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] ^= 1 << rng.below(7),
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, *rng.pick(b"{}[]\",:0a-")),
            }
        }
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue; // not JSON: Lambda would not deliver it
        };
        match std::panic::catch_unwind(|| squall_launcher::parse_event(&event)) {
            Ok(Ok(_)) => parsed += 1,
            Ok(Err(e)) => {
                if e.message.is_empty() || e.retryable {
                    failures.push(format!("case {n}: a refusal must say why, for good: {e:?}"));
                }
            }
            Err(_) => failures.push(format!("case {n}: panicked on {event}")),
        }
    }
    std::panic::set_hook(hook);
    eprintln!("events: {cases} cases, {parsed} parsed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A log archive as the agent packs it: task logs under `tasks/ID/`.
fn archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, body) in [
        (
            "tasks/s0-u0-t0-a0/stdout.log",
            "one\ntwo\nthree\n".repeat(200),
        ),
        ("tasks/s0-u0-t0-a0/stderr.log", "warn\n".repeat(50)),
        ("tasks/s0-u1-t0-a0/stdout.log", "x".repeat(3000)),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, body.as_bytes())
            .expect("append");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

#[test]
fn truncated_and_corrupted_archives_give_their_lines_or_an_error_never_a_panic() {
    use squall::inspect::logs::{LogFilter, stream_archive};
    let good = archive();
    let mut whole = Vec::new();
    let mut skip = BTreeMap::new();
    stream_archive(
        "h",
        &good[..],
        &LogFilter::default(),
        &mut skip,
        true,
        &mut whole,
    )
    .expect("a good archive reads");
    let whole = String::from_utf8(whole).expect("text");
    assert_eq!(whole.lines().count(), 600 + 50 + 1);
    let mut rng = Rng(0xA5A5_A5A5);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let (mut failures, mut errors, cases) = (Vec::new(), 0, small_cases());
    for n in 0..cases {
        let mut bytes = good.clone();
        match rng.below(3) {
            0 => bytes.truncate(rng.below(bytes.len())),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            _ => {
                let at = rng.below(bytes.len());
                bytes.splice(at..at, (0..rng.below(64)).map(|_| rng.next() as u8));
            }
        }
        let started = Instant::now();
        let run = std::panic::catch_unwind(|| {
            let mut out = Vec::new();
            let mut skip = BTreeMap::new();
            let r = stream_archive(
                "h",
                &bytes[..],
                &LogFilter::default(),
                &mut skip,
                true,
                &mut out,
            );
            (r.is_err(), out)
        });
        match run {
            Ok((failed, out)) => {
                errors += usize::from(failed);
                // What it printed are lines of the archive, in order, up to where it broke.
                let text = String::from_utf8_lossy(&out);
                if bytes.len() < good.len() && !failed && text.len() > whole.len() {
                    failures.push(format!("case {n}: more lines than the archive holds"));
                }
            }
            Err(_) => failures.push(format!("case {n}: panicked")),
        }
        if started.elapsed() > Duration::from_secs(2) {
            failures.push(format!("case {n}: took {:?}", started.elapsed()));
        }
    }
    std::panic::set_hook(hook);
    eprintln!("archives: {cases} cases, {errors} errors");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(errors > 0, "corruption is reported as an error");
}
