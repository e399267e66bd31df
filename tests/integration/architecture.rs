//! The architecture rules of ARCHITECTURE.md, checked on the real sources (see
//! `tidy.rs` for what is checked and how), and the checker itself shown to flag each
//! kind of breakage on a small synthetic tree.

use squall_tests::tidy::{Violation, check};
use squall_tests::{Scratch, workspace};

fn show(v: &[Violation]) -> String {
    v.iter().map(|v| format!("\n  {v}")).collect()
}

#[test]
fn the_workspace_keeps_its_architecture_rules() {
    let found = check(&workspace());
    assert!(
        found.is_empty(),
        "broken architecture rules:{}",
        show(&found)
    );
}

/// A tree shaped like the workspace, with one file per case.
fn synthetic(files: &[(&str, &str)]) -> (Scratch, Vec<Violation>) {
    let dir = Scratch::new("tidy");
    for (path, text) in files {
        dir.file(path, text);
    }
    let found = check(&dir.path);
    (dir, found)
}

#[test]
fn the_check_flags_a_forbidden_import_a_missing_opening_and_a_string_error() {
    let (_dir, found) = synthetic(&[
        // The engine may not use the runner, directly or in a `use` group.
        (
            "master/src/engine/bad.rs",
            "//! x\nuse crate::runner::now_ms;\nuse crate::{plan::Plan, backend::local};\n",
        ),
        // No `//!` opening.
        ("master/src/plan/bare.rs", "use crate::error::chain;\n"),
        // A library function returning `Result<_, String>`; in a test module it is fine.
        (
            "master/src/record/s.rs",
            "//! x\npub fn f() -> Result<u32, String> { Ok(1) }\n#[cfg(test)]\nmod t { fn g() -> Result<(), String> { Ok(()) } }\n",
        ),
        // An AWS crate outside backend/aws, and inside (allowed).
        ("master/src/cloud/a.rs", "//! x\nuse aws_sdk_s3::Client;\n"),
        (
            "master/src/backend/aws/ok.rs",
            "//! x\nuse aws_sdk_s3::Client;\n",
        ),
        // The worker naming the master.
        ("worker/src/w.rs", "//! x\nuse squall::plan;\n"),
        // Doc links are not dependencies.
        (
            "master/src/plan/doc.rs",
            "//! See [`crate::runner`].\n/// [`crate::cloud`]\nfn f() {}\n",
        ),
    ]);
    let got: Vec<(String, usize, &str)> = found
        .iter()
        .map(|v| (v.file.display().to_string(), v.line, v.rule))
        .collect();
    assert_eq!(
        got,
        [
            ("master/src/cloud/a.rs".to_owned(), 2, "aws-outside-backend"),
            ("master/src/engine/bad.rs".to_owned(), 2, "layering"),
            ("master/src/engine/bad.rs".to_owned(), 3, "layering"),
            ("master/src/plan/bare.rs".to_owned(), 1, "opening"),
            ("master/src/record/s.rs".to_owned(), 2, "string-error"),
            ("worker/src/w.rs".to_owned(), 2, "worker-independent"),
        ],
        "{}",
        show(&found)
    );
    let forbidden = &found[1].detail;
    assert!(
        forbidden.contains("`engine` may not use `runner`"),
        "{forbidden}"
    );
    assert!(found[2].detail.contains("`backend`"), "{}", found[2].detail);
}
