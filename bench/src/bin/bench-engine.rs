//! `bench-engine`: the run engine alone, driven as data, at scale: H hosts and N shard
//! items of instant tasks (every started task is answered at once as succeeded). A
//! benchmark, not a test.
//!
//! It reports the events the engine handled per second and the whole run's wall time
//! (launch, bootstrap, every item, collection, teardown, record). As the runner does,
//! it asks the engine for its progress after every event. `--max-seconds` stops a run
//! that would take too long and reports the rate so far (and the projected total).
//!
//! ```text
//! cargo run -p squall-bench --profile bench-fast --bin bench-engine -- --hosts 1000 --items 100000
//! ```

use clap::Parser;
use squall::engine::{Action, Engine, Event, LaunchedInstance, TaskResult};
use squall::record::TaskOutcome;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "The run engine at scale, driven as data")]
struct Args {
    /// Workers in the one fleet group.
    #[arg(long, default_value_t = 1000)]
    hosts: u32,
    /// Shard items of the one sharded stage.
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    /// Stop after this many seconds of driving and report the rate so far.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

fn main() {
    let args = Args::parse();
    let items: Vec<String> = (0..args.items).map(|i| i.to_string()).collect();
    let yaml = format!(
        "name: bench\nfleet: {{ w: {{ count: {} }} }}\nstages:\n  - name: score\n    hosts: w\n    shards: [{}]\n    tasks:\n      - shell: \"true\"\n",
        args.hosts,
        items.join(", ")
    );
    let loading = Instant::now();
    let pb = squall::plan::parse(
        Path::new("bench.yml"),
        &yaml,
        Path::new("."),
        &BTreeMap::new(),
    )
    .unwrap_or_else(|e| panic!("the bench playbook is invalid: {e}"));
    let load_s = loading.elapsed().as_secs_f64();

    let started = Instant::now();
    let limit = Duration::from_secs(args.max_seconds);
    let mut e = Engine::new(Arc::new(pb), "bench-1".into(), BTreeMap::new(), 0);
    let mut now = 0u64;
    let mut events = 0u64;
    let mut queue: VecDeque<Event> = VecDeque::new();
    let answer = |actions: Vec<Action>, queue: &mut VecDeque<Event>| {
        for a in actions {
            match a {
                Action::Launch { group, spec } => queue.push_back(Event::Launched {
                    instances: (0..spec.count)
                        .map(|i| LaunchedInstance {
                            id: format!("i-{i}"),
                            address: format!("10.0.{}.{}", i / 256, i % 256),
                            instance_type: None,
                        })
                        .collect(),
                    group,
                }),
                Action::Bootstrap { host } => queue.push_back(Event::Bootstrapped { host }),
                Action::StartTask { key, host, .. } => queue.push_back(Event::TaskFinished {
                    key,
                    host,
                    result: TaskResult {
                        outcome: TaskOutcome::Succeeded,
                        exit_code: Some(0),
                        signal: None,
                        error: None,
                        started_at_ms: 0,
                        ended_at_ms: 0,
                    },
                }),
                Action::CollectLogs { host } => queue.push_back(Event::LogsCollected {
                    host,
                    result: Ok(format!("runs/bench-1/logs/{host}.tar.gz")),
                }),
                Action::Teardown => queue.push_back(Event::TornDown { result: Ok(0) }),
                Action::WriteRecord(_) => queue.push_back(Event::RecordWritten),
                _ => {}
            }
        }
    };
    let first = e.start();
    answer(first, &mut queue);
    let mut cut_off = false;
    while let Some(ev) = queue.pop_front() {
        now += 1;
        let actions = e.handle(now, ev);
        events += 1;
        std::hint::black_box(e.progress());
        answer(actions, &mut queue);
        if events.is_multiple_of(1024) && started.elapsed() > limit {
            cut_off = true;
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let rec = e.record();
    let done: usize = rec.stages.iter().map(|s| s.shards_done).sum();
    let rate = events as f64 / wall;
    println!(
        "engine: {} hosts x {} items: {events} events in {wall:.2} s = {rate:.0} events/s; {done} items done; status {}; playbook load {load_s:.2} s",
        args.hosts,
        args.items,
        rec.status.as_str()
    );
    if cut_off {
        // Each item costs one TaskFinished; the rest is a few thousand events.
        let total = args.items as f64 + 3.0 * f64::from(args.hosts) + 4.0;
        println!(
            "cut off after {} s: projected whole run {:.0} s at this rate (the rate falls as the stage fills, so this is a lower bound)",
            args.max_seconds,
            total / rate
        );
    }
}
