//! The `pack` subcommand: streams a tar.gz of the root's `tasks/` folder to a writer.
//!
//! The archive is produced as it is written (tar over gzip over the given writer), never
//! held in memory. Each file is archived with the length it had when opened, so logs that
//! are still growing (or being replaced) cannot corrupt the archive. Only the regular
//! files directly inside each task folder are packed, without `*.tmp` files and the
//! task's `private.json`; it does not
//! follow anything else (subfolders, symlinks) and does not delete anything.

use crate::error::{AgentError, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use squall_worker::{TASKS_DIR, valid_task_id};
use std::fs::{self, Metadata};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Writes the archive of `root/tasks` to `out` (an empty archive when it does not exist).
pub fn pack(root: &Path, out: impl Write) -> Result<()> {
    let mut builder = tar::Builder::new(GzEncoder::new(out, Compression::default()));
    let tasks = root.join(TASKS_DIR);
    match fs::metadata(&tasks) {
        Ok(meta) if meta.is_dir() => {
            append_dir(&mut builder, TASKS_DIR, &meta)?;
            for id in sorted_names(&tasks)? {
                if valid_task_id(&id) {
                    append_task(&mut builder, &tasks.join(&id), &id)?;
                }
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(AgentError::io("reading", tasks, e)),
    }
    let finish = |e| AgentError::Stdout {
        what: "the archive",
        source: e,
    };
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|mut out| out.flush())
        .map_err(finish)
}

/// The UTF-8 names in `dir`, sorted (others cannot be task ids or task files).
fn sorted_names(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(|e| AgentError::io("listing", dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AgentError::io("listing", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn append_task<W: Write>(builder: &mut tar::Builder<W>, dir: &Path, id: &str) -> Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        // Not a task folder, or removed meanwhile.
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AgentError::io("reading", dir, e)),
    };
    append_dir(builder, &format!("{TASKS_DIR}/{id}"), &meta)?;
    for name in sorted_names(dir)? {
        // A task's environment and masks (briefly on disk while it starts) are never
        // archived, nor a capped stream's ring (raw, out of order, folded into its log
        // when the task ends).
        if !name.ends_with(".tmp")
            && !name.ends_with(crate::store::RING_SUFFIX)
            && name != crate::store::PRIVATE_FILE
        {
            append_file(
                builder,
                &dir.join(&name),
                &format!("{TASKS_DIR}/{id}/{name}"),
            )?;
        }
    }
    Ok(())
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, name: &str, meta: &Metadata) -> Result<()> {
    let mut header = header(meta, tar::EntryType::Directory, 0);
    builder
        .append_data(&mut header, name, io::empty())
        .map_err(|e| archiving(name, e))
}

/// Appends the file with exactly the length it has now: bytes written later are left
/// out, and a file that shrinks meanwhile is padded with zeros. Only a regular file is
/// packed: a symlink is not followed (a task could point one at the user's keys) and a
/// FIFO or device is never read (opening one would block or never end).
fn append_file<W: Write>(builder: &mut tar::Builder<W>, path: &Path, name: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        // Removed (or renamed away) since it was listed.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        // A symlink (NOFOLLOW): not packed.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Ok(());
        }
        Err(e) => return Err(AgentError::io("opening", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| AgentError::io("reading", path, e))?;
    if !meta.is_file() {
        return Ok(());
    }
    let len = meta.len();
    let mut header = header(&meta, tar::EntryType::Regular, len);
    let data = file.take(len).chain(io::repeat(0)).take(len);
    builder
        .append_data(&mut header, name, data)
        .map_err(|e| archiving(name, e))
}

fn header(meta: &Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header
}

fn archiving(name: &str, source: io::Error) -> AgentError {
    AgentError::io("archiving", name, source)
}
