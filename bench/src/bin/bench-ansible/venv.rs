//! The Python venv of bench/setup: ansible-core and mitogen, their versions, and where
//! Mitogen's strategy plugins live.
//!
//! It only opens and checks an existing venv; creating it is bench/setup's.

use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Python venv of bench/setup.
#[derive(Debug)]
pub struct Venv {
    root: PathBuf,
    pub ansible_core: String,
    pub mitogen: String,
    /// `.../ansible_mitogen/plugins/strategy`.
    pub strategy_dir: PathBuf,
}

impl Venv {
    pub fn open(root: &Path) -> Result<Venv> {
        let python = root.join("bin/python");
        ensure!(
            root.join("bin/ansible-playbook").is_file(),
            "no ansible-playbook in {}: run bench/setup (SQUALL_BENCH_VENV={} bench/setup)",
            root.display(),
            root.display()
        );
        let out = Command::new(&python)
            .args([
                "-c",
                "import os, ansible_mitogen\n\
                 from importlib.metadata import version\n\
                 print(version('ansible-core'))\n\
                 print(version('mitogen'))\n\
                 print(os.path.join(os.path.dirname(ansible_mitogen.__file__), 'plugins', 'strategy'))",
            ])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        ensure!(
            out.status.success(),
            "the venv {} lacks ansible-core or mitogen (run bench/setup):\n{}",
            root.display(),
            squall_tests::text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut lines = stdout.lines();
        let mut next = || lines.next().map(str::to_string).unwrap_or_default();
        let (ansible_core, mitogen, strategy_dir) = (next(), next(), PathBuf::from(next()));
        ensure!(
            strategy_dir.join("mitogen_linear.py").is_file(),
            "no mitogen_linear strategy in {}",
            strategy_dir.display()
        );
        Ok(Venv {
            root: root.to_path_buf(),
            ansible_core,
            mitogen,
            strategy_dir,
        })
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("bin").join(name)
    }
}
