//! Playbook parsing and validation, as a user meets it.
//!
//! Covers: every example under `playbooks/` loads; a table of broken playbooks, each
//! giving a diagnostic at the expected line and column with the expected message; all
//! problems of one playbook reported at once, in line order; `squall validate` printing
//! `file:line:column: message` with the source line and a caret; `--var` overrides.
//!
//! Does not cover: running playbooks (the `engine` and `local_run` modules), rendering
//! templates for real runs, or duration parsing edge cases (unit tests in
//! `master/src/playbook.rs`). Whether `copy` sources exist is not checked here either.

use squall::plan::{self, Diagnostic};
use std::collections::BTreeMap;
use std::path::Path;

/// `(name, source, line, column, message substring)`: parsing `source` must fail with
/// some diagnostic at exactly `line`:`column` whose message contains the substring.
pub(crate) type Case = (&'static str, &'static str, u64, u64, &'static str);

/// Broken playbooks. Each is the same small valid playbook with one problem.
///
/// Positions are pinned as the parser reports them today; a few are known to be less
/// precise than they could be (see the comments marked `imprecise`).
pub(crate) const CASES: &[Case] = &[
    // --- YAML syntax ---
    (
        "yaml_unclosed_bracket",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - command: [uname, -sm
"#,
        9,
        18,
        "unclosed bracket '['",
    ),
    (
        "yaml_bad_indentation",
        r#"name: demo
fleet:
  workers:
    count: 2
   market: spot
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        5,
        4,
        "did not find expected key",
    ),
    (
        "yaml_sequence_item_misindented",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
     - shell: echo two
"#,
        10,
        6,
        "did not find expected key",
    ),
    (
        "yaml_key_over_indented",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
         timeout: 5m
"#,
        10,
        17,
        "mapping values are not allowed in this context",
    ),
    (
        // imprecise: the tab is at column 1.
        "yaml_tab_indentation",
        "name: demo\nfleet:\n\tworkers:\n    count: 2\nstages:\n  - name: run\n    hosts: workers\n    tasks:\n      - shell: echo hi\n",
        3,
        2,
        "tabs disallowed",
    ),
    (
        // Where the quote opened, not where the scanner gave up (the end of the file).
        "yaml_unclosed_double_quote",
        "name: demo\nfleet:\n  workers:\n    count: 2\nstages:\n  - name: run\n    hosts: workers\n    tasks:\n      - shell: \"echo hi\n      - shell: echo bye\n",
        9,
        16,
        "unclosed quote",
    ),
    (
        "yaml_unclosed_single_quote",
        "name: 'demo\nfleet:\n  workers:\n    count: 2\nstages:\n  - name: run\n    hosts: workers\n    tasks:\n      - shell: echo hi\n",
        1,
        7,
        "unclosed quote",
    ),
    (
        // imprecise: `tasks` (line 8) is under-indented by one, which ends the stage's
        // mapping early; the report is a missing field at the stage's last key.
        "yaml_stage_key_under_indented",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
   tasks:
      - shell: echo hi
"#,
        6,
        5,
        "missing field `tasks`",
    ),
    (
        "yaml_duplicate_key",
        r#"name: demo
fleet:
  workers:
    count: 2
    count: 3
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        5,
        5,
        "duplicate key `count`: each key may appear once",
    ),
    ("empty_document", "", 1, 1, "unexpected end of input"),
    // --- unknown keys ---
    (
        "unknown_top_level_key",
        r#"name: demo
fleet:
  workers:
    count: 2
stage:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        5,
        1,
        "unknown field `stage`, expected one of name, deadline, vars, fleet, stages",
    ),
    (
        "unknown_stage_key",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    host: workers
    tasks:
      - shell: echo hi
"#,
        7,
        5,
        "unknown field `host`",
    ),
    (
        "unknown_task_key",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shel: echo hi
"#,
        9,
        9,
        "unknown field `shel`",
    ),
    (
        "unknown_fleet_group_key",
        r#"name: demo
fleet:
  workers:
    count: 2
    instance: t3.micro
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        5,
        5,
        "unknown field `instance`",
    ),
    // --- wrong types ---
    (
        "count_not_a_number",
        r#"name: demo
fleet:
  workers:
    count: "three"
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        4,
        12,
        "expected a whole number",
    ),
    (
        "count_negative",
        r#"name: demo
fleet:
  workers:
    count: -1
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        4,
        12,
        "expected a whole number",
    ),
    (
        "retries_not_a_number",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    retries: many
    tasks:
      - shell: echo hi
"#,
        8,
        14,
        "expected a whole number",
    ),
    (
        "public_ip_not_a_bool",
        r#"name: demo
fleet:
  workers:
    count: 2
    public_ip: maybe
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        5,
        16,
        "invalid boolean",
    ),
    (
        "tasks_not_a_list",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks: echo hi
"#,
        8,
        12,
        "expected a list",
    ),
    (
        "command_not_a_list",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - command: uname -sm
"#,
        9,
        18,
        "expected a list",
    ),
    (
        "shards_not_a_list",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: 12
    tasks:
      - shell: echo {{ item }}
"#,
        8,
        13,
        "expected a list",
    ),
    (
        "fleet_not_a_mapping",
        r#"name: demo
fleet:
  - workers
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        3,
        3,
        "expected a mapping of keys to values",
    ),
    (
        "instance_type_empty_list",
        r#"name: demo
fleet:
  workers:
    count: 2
    instance_type: []
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        5,
        20,
        "expected at least one instance type",
    ),
    (
        "log_limit_without_a_unit",
        "name: demo\nlog_limit: 1000000\nfleet:\n  workers:\n    count: 2\nstages:\n  - name: run\n    hosts: workers\n    tasks:\n      - shell: echo hi\n",
        2,
        12,
        "expected a size like 512KiB, 100MiB or 1GiB",
    ),
    (
        "log_limit_too_small",
        "name: demo\nlog_limit: 1KiB\nfleet:\n  workers:\n    count: 2\nstages:\n  - name: run\n    hosts: workers\n    tasks:\n      - shell: echo hi\n",
        2,
        12,
        "expected `log_limit` from 4KiB to 1TiB, found 1KiB",
    ),
    (
        "budget_of_nothing",
        "name: demo\nbudget_usd: 0\nfleet:\n  workers:\n    count: 2\nstages:\n  - name: run\n    hosts: workers\n    tasks:\n      - shell: echo hi\n",
        2,
        13,
        "expected `budget_usd` above 0",
    ),
    // --- missing required fields ---
    (
        "missing_name",
        r#"fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        1,
        1,
        "missing field `name`",
    ),
    (
        "missing_fleet",
        r#"name: demo
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        1,
        1,
        "missing field `fleet`",
    ),
    (
        "missing_stages",
        r#"name: demo
fleet:
  workers:
    count: 2
"#,
        1,
        1,
        "missing field `stages`",
    ),
    (
        "missing_stage_hosts",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    tasks:
      - shell: echo hi
"#,
        6,
        5,
        "missing field `hosts`",
    ),
    (
        "missing_stage_name",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - hosts: workers
    tasks:
      - shell: echo hi
"#,
        6,
        5,
        "missing field `name`",
    ),
    (
        "missing_copy_dest",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - copy:
          src: files/infer.sh
"#,
        10,
        11,
        "missing field `dest`",
    ),
    (
        "missing_copy_dest_flow",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - copy: { src: files/infer.sh }
"#,
        9,
        17,
        "missing field `dest`",
    ),
    // --- empty collections ---
    (
        "empty_stages",
        r#"name: demo
fleet:
  workers:
    count: 2
stages: []
"#,
        5,
        9,
        "expected at least one stage under `stages`",
    ),
    (
        "empty_tasks",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks: []
"#,
        8,
        12,
        "expected at least one task in stage `run`",
    ),
    (
        "empty_shards",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: []
    tasks:
      - shell: echo hi
"#,
        8,
        13,
        "expected at least one item in `shards`",
    ),
    (
        "empty_fleet",
        r#"name: demo
fleet: {}
stages:
  - name: run
    hosts: all
    tasks:
      - shell: echo hi
"#,
        2,
        8,
        "expected at least one group under `fleet`",
    ),
    (
        "command_empty_list",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - command: []
"#,
        9,
        18,
        "expected `command` to be a non-empty list",
    ),
    // --- groups and hosts ---
    (
        "unknown_group_in_hosts",
        r#"name: demo
fleet:
  workers:
    count: 2
  aggregator:
    count: 1
stages:
  - name: run
    hosts: worker
    tasks:
      - shell: echo hi
"#,
        9,
        12,
        "unknown group `worker` in `hosts`, expected `all` or one of: aggregator, workers",
    ),
    (
        // imprecise: the group's first key (`count`), not its name (3:3).
        "group_named_all",
        r#"name: demo
fleet:
  all:
    count: 2
stages:
  - name: run
    hosts: all
    tasks:
      - shell: echo hi
"#,
        4,
        5,
        "(not `all` or `master`), found `all`",
    ),
    (
        // imprecise: the group's first key (`count`), not its name (3:3).
        "group_named_master",
        r#"name: demo
fleet:
  master:
    count: 2
stages:
  - name: run
    hosts: master
    tasks:
      - shell: echo hi
"#,
        4,
        5,
        "found `master`",
    ),
    (
        // imprecise: the group's first key, not the value `0` (4:12).
        "count_zero",
        r#"name: demo
fleet:
  workers:
    count: 0
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        4,
        5,
        "expected `count` between 1 and 1000 in group `workers`, found 0",
    ),
    (
        "count_too_large",
        r#"name: demo
fleet:
  workers:
    count: 5000
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        4,
        5,
        "expected `count` between 1 and 1000 in group `workers`, found 5000",
    ),
    (
        // imprecise: the `count` line, not `min_count: 3` (5:16).
        "min_count_above_count",
        r#"name: demo
fleet:
  workers:
    count: 2
    min_count: 3
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        4,
        5,
        "expected `min_count` between 1 and `count` (2) in group `workers`, found 3",
    ),
    // --- durations and enums ---
    (
        "deadline_in_words",
        r#"name: demo
deadline: 3 hours
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        2,
        11,
        "expected a duration like 90s, 30m, 3h or 1h30m, found `3 hours`",
    ),
    (
        "stage_timeout_without_unit",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    timeout: 10
    tasks:
      - shell: echo hi
"#,
        8,
        14,
        "expected a duration like 90s, 30m, 3h or 1h30m, found `10`",
    ),
    (
        "task_timeout_zero",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
        timeout: 0s
"#,
        10,
        18,
        "found `0s`",
    ),
    (
        "deadline_unknown_unit",
        r#"name: demo
deadline: 5q
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        2,
        11,
        "found `5q`",
    ),
    (
        "bad_market",
        r#"name: demo
fleet:
  workers:
    count: 2
    market: cheap
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        5,
        13,
        "unknown variant `cheap`, expected one of on-demand, spot, spot-or-on-demand",
    ),
    // --- names ---
    (
        "name_uppercase",
        r#"name: Demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        1,
        7,
        "expected a name of lowercase letters, digits and '-', starting with a letter, at most 40 characters, found `Demo`",
    ),
    (
        "name_with_spaces",
        r#"name: my demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        1,
        7,
        "found `my demo`",
    ),
    (
        "duplicate_stage_names",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo one
  - name: run
    hosts: workers
    tasks:
      - shell: echo two
"#,
        10,
        11,
        "stage name `run` is already used at line 6; stage names must be unique",
    ),
    (
        "stage_name_empty",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: ""
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        6,
        11,
        "expected a non-empty stage name",
    ),
    // --- stages and tasks ---
    (
        // imprecise: the stage's start, not `retries: 500` (8:14).
        "retries_over_limit",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    retries: 500
    tasks:
      - shell: echo hi
"#,
        6,
        5,
        "expected `retries` of at most 100, found 500",
    ),
    (
        "task_without_action",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - name: forgot the command
        timeout: 5m
"#,
        9,
        9,
        "expected one of `shell`, `command`, `copy` or `fetch` in this task",
    ),
    (
        "task_with_shell_and_command",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: uname -sm
        command: [uname, -sm]
"#,
        9,
        9,
        "expected only one of `shell`, `command`, `copy` or `fetch` in this task, found several",
    ),
    (
        "bad_copy_mode",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - copy: { src: files/infer.sh, dest: bin/infer.sh, mode: "999" }
"#,
        9,
        64,
        "expected an octal file mode like \"0644\", found `999`",
    ),
    (
        // imprecise: the task's start, not the key `A=B` (11:11).
        "environment_name_with_equals",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
        environment:
          "A=B": "1"
"#,
        9,
        9,
        "expected an environment variable name, found `A=B`",
    ),
    // --- templates ---
    (
        "template_undefined_var",
        r#"name: demo
vars:
  model: resnet50
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo {{ vars.nope }}
"#,
        11,
        16,
        "template error: undefined value in `vars.nope`",
    ),
    (
        "template_item_in_unsharded_stage",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo {{ item }}
"#,
        9,
        16,
        "undefined value in `item`",
    ),
    (
        "template_syntax_error",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo {{ host.name
"#,
        9,
        16,
        "template error: syntax error: unexpected end of input",
    ),
    (
        "template_item_missing_key",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: score
    hosts: workers
    shards:
      - { input: a.csv, rows: 10 }
      - { input: b.csv }
    tasks:
      - command: [./score.sh, "{{ item.input }}", "{{ item.rows }}"]
"#,
        12,
        51,
        r#"undefined value in `item.rows`; templates can use vars, run.id, run.files, host.name, host.index, host.count, host.group, item (sharded stages), trigger and secrets (with item = {"input":"b.csv"})"#,
    ),
    (
        "template_in_environment",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: ./run.sh
        environment:
          MODEL: "{{ vars.model }}"
"#,
        11,
        18,
        "undefined value in `vars.model`",
    ),
    (
        // imprecise: the scalar's first line; the error is on its second (11:11).
        "template_in_block_scalar",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: |
          echo start
          echo {{ vars.nope }}
"#,
        10,
        11,
        "undefined value in `vars.nope` (line 2 of the template)",
    ),
    (
        // Index 0 and 1 render; the last host (index 2) does not.
        "template_fails_only_on_last_host",
        r#"name: demo
vars:
  parts: [a, b]
fleet:
  workers:
    count: 3
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo {{ vars.parts[host.index] }}
"#,
        11,
        16,
        "template error: undefined value",
    ),
    // --- data: copy, fetch, shards from data, cache ---
    (
        "copy_from_a_malformed_s3_url",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - copy: { src: "s3://Bad_Bucket/model.bin", dest: model.bin }
"#,
        9,
        22,
        "bucket name of 3 to 63 lowercase letters",
    ),
    (
        "copy_from_outside_the_playbook_folder",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - copy: { src: ../secrets/key, dest: key }
"#,
        9,
        22,
        "must stay inside the playbook's folder (no `..`)",
    ),
    (
        "copy_from_an_http_url",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - copy: { src: "https://example.com/x", dest: x }
"#,
        9,
        22,
        "found a `https://` URL",
    ),
    (
        "fetch_dest_that_escapes",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - fetch: { src: "out/*.csv", dest: "../../elsewhere/" }
"#,
        9,
        42,
        "expected `fetch.dest` to be a prefix inside the run's files",
    ),
    (
        "fetch_dest_absolute_path",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - fetch: { src: "out/*.csv", dest: /tmp/out/ }
"#,
        9,
        42,
        "expected `fetch.dest` to be a prefix inside the run's files",
    ),
    (
        "fetch_without_src",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - fetch: { src: "", dest: out/ }
"#,
        9,
        23,
        "expected a glob in `fetch.src`",
    ),
    (
        "fetch_that_every_host_writes_alike",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - fetch: { src: out/result.csv, dest: results/ }
"#,
        9,
        45,
        "every unit of stage `run` would fetch to the same keys: template `dest` (or `src`) with `{{ host.name }}`",
    ),
    (
        "fetch_that_every_item_writes_alike",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: [a, b, c]
    tasks:
      - fetch: { src: out/result.csv, dest: results/ }
"#,
        10,
        45,
        "template `dest` (or `src`) with the item",
    ),
    (
        "objects_of_a_non_url",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: { objects: "ftp://host/inbox/" }
    tasks:
      - shell: echo {{ item.name | quote }}
"#,
        8,
        24,
        "found a `ftp://` URL",
    ),
    (
        "lines_of_a_malformed_s3_url",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: { lines: "s3://x/manifest.txt" }
    tasks:
      - shell: echo {{ item | quote }}
"#,
        8,
        22,
        "bucket name of 3 to 63",
    ),
    (
        "shards_with_an_unknown_source",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: { rows: data.csv }
    tasks:
      - shell: echo hi
"#,
        8,
        13,
        "objects",
    ),
    (
        "item_field_a_listing_does_not_have",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: { objects: "s3://my-bucket/inbox/" }
    tasks:
      - shell: echo {{ item.path }}
"#,
        10,
        16,
        "undefined value in `item.path`",
    ),
    (
        "cache_on_a_plain_stage",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    cache: true
    tasks:
      - shell: echo hi
"#,
        8,
        12,
        "`cache` applies to sharded stages",
    ),
    (
        "cache_on_a_stage_that_uses_the_host",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: [a, b]
    cache: true
    tasks:
      - shell: echo {{ item }} on {{ host.name }}
"#,
        9,
        12,
        "cannot be keyed for the cache: a task uses `host.name`",
    ),
    (
        "cache_on_a_stage_that_uses_the_run",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: [a, b]
    cache: true
    tasks:
      - fetch: { src: "out/{{ item }}.csv", dest: "{{ run.id }}/" }
"#,
        9,
        12,
        "cannot be keyed for the cache: a task uses `run.id`",
    ),
    (
        "optional_that_is_not_a_boolean",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - copy: { src: model.bin, dest: model.bin, optional: maybe }
"#,
        9,
        60,
        "invalid boolean",
    ),
    (
        "instance_profile_that_is_empty",
        r#"name: demo
fleet:
  workers:
    count: 2
    instance_profile: ""
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        4,
        5,
        "expected `instance_profile` in group `workers` to be an IAM instance profile name",
    ),
    (
        "replace_beyond_the_bound",
        r#"name: demo
fleet:
  workers:
    count: 2
    replace: 5000
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        4,
        5,
        "expected `replace` of at most 1000 in group `workers`, found 5000",
    ),
    (
        "a_deadline_that_disarms_the_dead_mans_switch",
        r#"name: demo
deadline: 400d
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        2,
        11,
        "expected `deadline` of at most 7d (every instance powers itself off by then), found",
    ),
    (
        "a_task_timeout_past_any_run",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    timeout: 8d
    tasks:
      - shell: echo hi
        timeout: 9000h
"#,
        11,
        18,
        "expected `timeout` of at most 7d, found",
    ),
    (
        "secret_in_a_command",
        r#"name: demo
secrets: { TOKEN: "ssm:/squall/demo/token" }
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - command: [curl, -H, "Authorization: {{ secrets.TOKEN }}", https://x]
"#,
        10,
        29,
        "`secrets` may be used in `shell` and `environment` only, not in `command`",
    ),
    (
        "secret_in_a_name",
        r#"name: demo
secrets: { TOKEN: "env:TOKEN" }
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - name: "with {{ secrets.TOKEN }}"
        shell: echo hi
"#,
        10,
        15,
        "not in a task's `name`",
    ),
    (
        "secret_undeclared",
        r#"name: demo
secrets: { TOKEN: "env:TOKEN" }
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo "$T"
        environment: { T: "{{ secrets.TOKN }}" }
"#,
        11,
        27,
        "undefined value in `secrets.TOKN`",
    ),
    (
        "secret_source_unknown",
        r#"name: demo
secrets:
  TOKEN: vault:kv/token
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        3,
        10,
        "secret `TOKEN`: expected `ssm:/path/to/parameter`, `env:VARIABLE` or `file:PATH`, found `vault:kv/token`",
    ),
    (
        "secret_ssm_path_relative",
        r#"name: demo
secrets:
  TOKEN: ssm:squall/token
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        3,
        10,
        "starting with `/`",
    ),
    (
        "secret_name_not_an_identifier",
        r#"name: demo
secrets:
  api-token: env:TOKEN
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        3,
        14,
        "expected a secret name of letters, digits and `_`",
    ),
    (
        "secret_in_a_copy_source",
        r#"name: demo
secrets: { TOKEN: "env:TOKEN" }
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - copy: { src: "files/{{ secrets.TOKEN }}", dest: x }
"#,
        10,
        22,
        "not in `copy.src`",
    ),
    (
        "secret_in_a_fetch_dest",
        r#"name: demo
secrets: { TOKEN: "env:TOKEN" }
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - fetch: { src: out.csv, dest: "out/{{ secrets.TOKEN }}/" }
"#,
        10,
        38,
        "not in `fetch.dest`",
    ),
    (
        "secret_in_a_shard_listing",
        r#"name: demo
secrets: { TOKEN: "env:TOKEN" }
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: { lines: "s3://b/{{ secrets.TOKEN }}.txt" }
    tasks:
      - shell: echo {{ item }}
"#,
        9,
        22,
        "not in a shard listing's URL",
    ),
    (
        "secret_through_a_filter",
        r#"name: demo
secrets: { TOKEN: "env:TOKEN" }
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo {{ secrets.TOKEN | upper }}
"#,
        10,
        16,
        "expected `{{ secrets.NAME }}` or `{{ secrets.NAME | quote }}`",
    ),
    (
        "secret_captured_by_a_block",
        r#"name: demo
secrets: { TOKEN: "env:TOKEN" }
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: "{% filter upper %}{{ secrets.TOKEN }}{% endfilter %}"
"#,
        10,
        16,
        "and no block but `if` and `for` beside it",
    ),
    (
        "secret_under_the_runs_login_keys",
        r#"name: demo
secrets:
  KEY: ssm:/squall/runs/other-run/login-key
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        3,
        8,
        "where squall keeps the runs' own login keys",
    ),
    (
        "max_masters_out_of_range",
        r#"name: demo
max_masters: 0
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: echo hi
"#,
        2,
        14,
        "expected `max_masters` between 1 and 10, found 0",
    ),
    (
        "interrupt_grace_past_the_notice",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    interrupt_grace: 3m
    shards: [a, b]
    tasks:
      - shell: echo hi
"#,
        8,
        22,
        "expected `interrupt_grace` between 1s and 110s",
    ),
    (
        "on_interrupt_on_a_shell_task",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    shards: [a, b]
    tasks:
      - shell: echo hi
        on_interrupt: true
"#,
        11,
        23,
        "`on_interrupt: true` is for `fetch` tasks of sharded stages",
    ),
];

fn parse(src: &str) -> Result<plan::Plan, plan::Invalid> {
    plan::parse(
        Path::new("broken.yml"),
        src,
        Path::new("."),
        &BTreeMap::new(),
    )
}

fn show(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| format!("{d}\n"))
        .collect::<Vec<_>>()
        .join("")
}

/// Checks one table case; `Err` describes the mismatch with every diagnostic.
fn check(&(name, src, line, column, message): &Case) -> Result<(), String> {
    let diags = match parse(src) {
        Ok(_) => return Err(format!("{name}: parsed without error")),
        Err(e) => e.0,
    };
    let found = diags
        .iter()
        .find(|d| d.line == line && d.column == column && d.message.contains(message));
    let Some(d) = found else {
        return Err(format!(
            "{name}: expected a diagnostic at {line}:{column} containing {message:?}, got:\n{}",
            show(&diags)
        ));
    };
    let expected_source = src.lines().nth(line as usize - 1).map(str::to_owned);
    if d.file != Path::new("broken.yml") || d.source_line != expected_source {
        return Err(format!(
            "{name}: wrong file or source line (expected {expected_source:?}):\n{d:?}"
        ));
    }
    Ok(())
}

#[test]
fn every_example_playbook_parses() {
    let dir = squall_tests::workspace().join("playbooks");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("reading playbooks/")
        .map(|e| e.expect("a playbooks/ entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected at least 2 example playbooks in {}, found {files:?}",
        dir.display()
    );
    for file in &files {
        if let Err(e) = plan::load(file, &BTreeMap::new()) {
            panic!("{} does not load:\n{e}", file.display());
        }
    }
}

#[test]
fn broken_playbooks_report_line_column_and_message() {
    assert!(CASES.len() >= 30, "the table shrank to {}", CASES.len());
    let mut names: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names must be unique");

    let failures: Vec<String> = CASES.iter().filter_map(|c| check(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn validate_reports_every_problem_at_once() {
    let src = r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: setup
    hosts: worker
    tasks:
      - shell: echo hi
  - name: run
    hosts: workers
    tasks:
      - shell: echo {{ vars.nope }}
  - name: finish
    hosts: all
    tasks:
      - name: no action here
"#;
    let diags = parse(src).expect_err("three problems").0;
    let got: Vec<(u64, u64)> = diags.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(
        got,
        [(7, 12), (13, 16), (17, 9)],
        "diagnostics:\n{}",
        show(&diags)
    );
    let expected = [
        "unknown group `worker`",
        "undefined value in `vars.nope`",
        "expected one of `shell`, `command`, `copy` or `fetch`",
    ];
    for (d, want) in diags.iter().zip(expected) {
        assert!(d.message.contains(want), "{d}\nshould contain {want:?}");
    }
}

#[test]
fn squall_validate_prints_file_line_column() {
    let scratch = squall_tests::Scratch::new("validate");
    let broken = scratch.file(
        "broken.yml",
        r#"name: demo
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: worker
    tasks:
      - shell: echo hi
"#,
    );
    let path = broken.to_str().expect("a UTF-8 scratch path");
    let out = squall_tests::squall(&scratch.path, &["validate", path]);
    let all = squall_tests::text(&out);
    assert_eq!(
        out.status.code(),
        Some(i32::from(squall::exit::USAGE)),
        "{all}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{path}:7:12: unknown group `worker`")),
        "{all}"
    );
    assert!(stderr.contains("    hosts: worker\n"), "source line: {all}");
    let caret = stderr
        .lines()
        .find(|l| l.trim_end().ends_with('^'))
        .unwrap_or_else(|| panic!("no caret line: {all}"));
    let source = stderr
        .lines()
        .find(|l| l.ends_with("    hosts: worker"))
        .expect("the source line");
    assert_eq!(
        caret.find('^'),
        source.find("worker"),
        "the caret is under the value: {all}"
    );

    let out = squall_tests::squall(&scratch.path, &["validate", "playbooks/hello.yml"]);
    let all = squall_tests::text(&out);
    assert_eq!(
        out.status.code(),
        Some(i32::from(squall::exit::OK)),
        "{all}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("playbooks/hello.yml: ok"),
        "{all}"
    );
}

#[test]
fn var_overrides_apply() {
    let src = r#"name: demo
vars:
  model: resnet50
  batch: 8
fleet:
  workers:
    count: 2
stages:
  - name: run
    hosts: workers
    tasks:
      - shell: ./infer.sh {{ vars.model }} {{ vars.batch }} {{ vars.extra }}
"#;
    // Without the override, `vars.extra` is undefined.
    let diags = parse(src).expect_err("vars.extra is undefined").0;
    assert!(
        diags.iter().any(|d| d.message.contains("`vars.extra`")),
        "{}",
        show(&diags)
    );

    let overrides = BTreeMap::from([
        ("model".to_owned(), "vit".to_owned()),
        ("extra".to_owned(), "1".to_owned()),
    ]);
    let loaded = plan::parse(Path::new("demo.yml"), src, Path::new("."), &overrides)
        .unwrap_or_else(|e| panic!("overrides make it valid:\n{e}"));
    let expected = BTreeMap::from([
        ("batch".to_owned(), serde_json::json!(8)),
        ("extra".to_owned(), serde_json::json!("1")),
        ("model".to_owned(), serde_json::json!("vit")),
    ]);
    assert_eq!(loaded.vars, expected);
    assert_eq!(
        loaded.written_vars.get("model"),
        Some(&serde_json::json!("resnet50")),
        "the playbook as written is kept"
    );
}

#[test]
fn a_missing_or_misshapen_local_source_is_found_by_validate_and_run_launches_nothing() {
    let scratch = squall_tests::Scratch::new("sources");
    std::fs::create_dir_all(scratch.path.join("files/models")).expect("mkdir");
    std::fs::write(scratch.path.join("files/manifest.txt"), "a\n").expect("write");
    let pb = scratch.file(
        "pb.yml",
        r#"name: demo
vars: { input: files/missing/ }
fleet:
  workers:
    count: 1
stages:
  - name: setup
    hosts: workers
    tasks:
      - copy: { src: files/model.bin, dest: model.bin }
      - copy: { src: files/models, dest: models }
      - copy: { src: files/manifest.txt/, dest: m/ }
      - copy: { src: files/absent.bin, dest: x, optional: true }
  - name: each
    hosts: workers
    shards: { objects: "{{ vars.input }}" }
    tasks:
      - copy: { src: "{{ item.url }}", dest: in/ }
"#,
    );
    let path = pb.to_str().expect("utf-8");
    let expected = [
        format!("{path}:10:22: `copy` source `files/model.bin` does not exist"),
        format!("{path}:11:22: `copy` source `files/models` is a folder"),
        format!("{path}:12:22: `copy` source `files/manifest.txt/` is a file, not a folder"),
        format!(
            "{path}:16:24: `objects` listing `files/missing/` (from `{{{{ vars.input }}}}`) does not exist"
        ),
    ];
    for cmd in ["validate", "run"] {
        let out = squall_tests::squall(&scratch.path, &[cmd, path]);
        let all = squall_tests::text(&out);
        assert_eq!(
            out.status.code(),
            Some(i32::from(squall::exit::USAGE)),
            "{cmd}: {all}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        for want in &expected {
            assert!(
                stderr.contains(want.as_str()),
                "{cmd}: expected {want:?} in\n{all}"
            );
        }
        assert!(
            !stderr.contains("absent.bin"),
            "an optional source may be missing: {all}"
        );
        assert!(
            !stderr.contains("item.url"),
            "checked when the item is known: {all}"
        );
    }
    assert!(
        !scratch.path.join("instances").exists(),
        "squall run launched nothing"
    );
}
