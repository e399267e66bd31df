//! squall-launcher: the Lambda that starts runs (placeholder).
//!
//! It will validate the playbook, derive the run id from the trigger, claim the run and
//! start the master (see the launcher issue). Until then it only validates a playbook
//! given on the command line, through the same library code the master uses.

use std::collections::BTreeMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: squall-launcher PLAYBOOK");
        return ExitCode::from(squall::exit::USAGE);
    };
    match squall::playbook::load(std::path::Path::new(&path), &BTreeMap::new()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(squall::exit::USAGE)
        }
    }
}
