//! The values of superseded versions, out of memory: a member keeps only each key's newest
//! value in memory and appends the value a write supersedes to a file beside its snapshots,
//! where reads at past revisions, watches catching up, hashes and snapshots find it again.
//!
//! The file is a cache, never the truth: the write-ahead log and the snapshots are. It is
//! started afresh whenever the store is loaded, nothing in it is synced, and a member that
//! crashes loses nothing by losing it.
//!
//! A compaction at revision R forgets exactly the versions superseded at R or before. Each
//! piece written records the newest superseding revision of everything before its end, so
//! a compaction at R frees the file's prefix up to the last piece at or below R, handed back
//! to the file system by punching a hole (the offsets of what stays do not move). Values
//! come in the order of the revisions that superseded them as the store applies writes, so
//! the prefix follows compactions closely; a store loaded from a snapshot spills its old
//! values key by key, and that part is freed once a compaction passes the snapshot.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{Error, ErrorKind, Result};

/// Values are gathered in memory and written in pieces of this size.
pub const PIECE: usize = 1 << 20;

/// Where a superseded value lies in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spilled {
    pub offset: u64,
    pub len: u32,
}

/// One store's history file, and the values waiting to be written to it.
#[derive(Debug)]
pub struct History {
    file: File,
    path: PathBuf,
    /// Everything before this offset is in the file.
    written: u64,
    /// Appended values not written yet; they start at `written`.
    pending: Vec<u8>,
    piece: usize,
    /// Below this offset the file is a hole.
    punched: u64,
    /// (r, offset): every value before `offset` was superseded at revision `r` or before.
    marks: VecDeque<(i64, u64)>,
    /// The newest revision that superseded a value.
    newest: i64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("{what} the store's history file {}: {e}", path.display()),
    )
}

impl History {
    /// A new, empty history file in `dir`. Older ones there are removed: they belong to a
    /// store that is being replaced (it keeps its open file until it goes) or to a process
    /// that ended.
    ///
    /// Values are written once `piece` bytes of them are pending (`PIECE` for a member; a
    /// test sets 1 to send every read to the file).
    pub fn create(dir: &Path, piece: usize) -> Result<History> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let list = std::fs::read_dir(dir).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot list {} for its history file: {e}", dir.display()),
            )
        })?;
        for entry in list.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".history") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let name = format!(
            "{}-{}.history",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io("cannot create", &path, e))?;
        Ok(History {
            file,
            path,
            written: 0,
            pending: Vec::with_capacity(piece),
            piece,
            punched: 0,
            marks: VecDeque::new(),
            newest: 0,
        })
    }

    /// Appends `value`, superseded at revision `by`.
    pub fn push(&mut self, value: &[u8], by: i64) -> Spilled {
        let at = Spilled {
            offset: self.written + self.pending.len() as u64,
            len: value.len() as u32,
        };
        self.pending.extend_from_slice(value);
        self.newest = self.newest.max(by);
        if self.pending.len() >= self.piece {
            self.write();
        }
        at
    }

    /// Writes what is pending. A write that fails (a full disk) leaves it pending, to be
    /// tried with the next piece: the values stay readable in memory meanwhile.
    fn write(&mut self) {
        if self.file.write_all_at(&self.pending, self.written).is_ok() {
            self.written += self.pending.len() as u64;
            self.pending.clear();
            self.marks.push_back((self.newest, self.written));
        }
    }

    /// The value at `at`.
    pub fn read(&self, at: Spilled) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(at, &mut out)?;
        Ok(out)
    }

    /// `read`, into `out` (cleared first): a reader of many values reuses one buffer.
    pub fn read_into(&self, at: Spilled, out: &mut Vec<u8>) -> Result<()> {
        let len = at.len as usize;
        out.clear();
        if at.offset >= self.written {
            let start = (at.offset - self.written) as usize;
            let value = self.pending.get(start..start + len).ok_or_else(|| {
                io(
                    "a value beyond the end of",
                    &self.path,
                    std::io::ErrorKind::UnexpectedEof.into(),
                )
            })?;
            out.extend_from_slice(value);
            return Ok(());
        }
        out.resize(len, 0);
        self.file
            .read_exact_at(out, at.offset)
            .map_err(|e| io("cannot read", &self.path, e))
    }

    /// Forgets the values superseded at `revision` or before: the file's prefix that holds
    /// only those becomes a hole. (On a file system without holes the space stays taken
    /// until the store is next loaded; nothing else changes.)
    pub fn compact(&mut self, revision: i64) {
        let mut cut = self.punched;
        while let Some(&(r, offset)) = self.marks.front() {
            if r > revision {
                break;
            }
            cut = offset;
            self.marks.pop_front();
        }
        if cut > self.punched {
            let mode = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
            let _ = nix::fcntl::fallocate(
                &self.file,
                mode,
                self.punched as libc::off_t,
                (cut - self.punched) as libc::off_t,
            );
            self.punched = cut;
        }
        // Nothing left in it: the file starts over, so its size does not grow for ever.
        let empty = self.punched == self.written && self.pending.is_empty();
        if empty && self.written > 0 && self.file.set_len(0).is_ok() {
            self.written = 0;
            self.punched = 0;
        }
    }

    /// Bytes of values held (written and pending, holes excluded).
    pub fn bytes(&self) -> u64 {
        self.written - self.punched + self.pending.len() as u64
    }
}

impl Drop for History {
    fn drop(&mut self) {
        // A cache: nobody reads it once its store is gone.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values read back from the file and from the pending piece; a compaction frees the
    /// prefix whose values were all superseded by then, and a file left empty starts over.
    #[test]
    fn values_come_back_and_compaction_frees_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::create(dir.path(), 8).unwrap();
        let a = h.push(b"aaaaaaaa", 10); // written: a full piece
        let b = h.push(b"bb", 20); // pending
        assert_eq!(h.read(a).unwrap(), b"aaaaaaaa");
        assert_eq!(h.read(b).unwrap(), b"bb");
        h.compact(9);
        assert_eq!(h.bytes(), 10, "nothing superseded at 9 or before");
        h.compact(10);
        assert_eq!(h.bytes(), 2, "the first piece is a hole");
        assert_eq!(h.read(b).unwrap(), b"bb");
        h.push(b"cccccc", 30); // writes "bbcccccc"
        h.compact(30);
        assert_eq!((h.bytes(), h.written), (0, 0), "an empty file starts over");
        assert_eq!(h.file.metadata().unwrap().len(), 0);
        let d = h.push(b"dddddddd", 40);
        assert_eq!(d.offset, 0);
        assert_eq!(h.read(d).unwrap(), b"dddddddd");
    }
}
