//! The writer thread: group commit (one `fdatasync` for every batch queued while the last
//! one ran), hints riding the next sync, and a log that waits for room instead of failing.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::fcntl::Flock;

use super::record::*;
use super::segment::*;
use crate::error::{Error, ErrorKind, Result};
use crate::node::metrics::Histogram;

pub(super) type Done = Box<dyn FnOnce(Result<()>) + Send>;

pub(super) struct Batch {
    pub(super) records: Vec<Record>,
    pub(super) done: Done,
}

/// The writer thread's side.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) segments: Vec<Segment>,
    pub(super) file: File,
    pub(super) size: u64,
    /// The state a new segment starts with, so older segments can be deleted.
    pub(super) vote: Option<Vec<u8>>,
    pub(super) committed: Option<Vec<u8>>,
    pub(super) purged: Option<(u64, Vec<u8>)>,
    pub(super) syncs: Arc<Histogram>,
    /// How long the last sync took (`Wal::submit_here` writes on its caller's thread only
    /// while syncs are quick).
    pub(super) last_sync: Duration,
    pub(super) stall: Arc<Stall>,
    /// Cleared by `Wal::unsafe_no_fsync`.
    pub(super) fsync: Arc<AtomicBool>,
    pub(super) poisoned: Option<Error>,
    pub(super) buf: Vec<u8>,
    /// Each record's (offset, length) in `buf`.
    pub(super) spans: Vec<(u64, u32)>,
    pub(super) places: Arc<Mutex<Places>>,
    /// Records that ride the next sync (`Wal::submit_unsynced`).
    pub(super) hints: Arc<Mutex<Vec<Record>>>,
    /// The next segment, being made once the active one is half full.
    pub(super) spare: Option<Spare>,
    /// Held while the writer runs: released only once the last write is done.
    pub(super) _lock: Flock<File>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Before the lock goes: no thread of this log writes in its directory after that.
        if let Some(spare) = self.spare.take() {
            spare.finish();
        }
    }
}

impl Writer {
    pub(super) fn active(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("the log always has a segment")
    }

    /// Starts the next segment with the current vote, committed id and purge.
    pub(super) fn roll(&mut self) -> Result<()> {
        let seq = self.active().seq + 1;
        let path = segment_path(&self.dir, seq);
        self.file = match self.spare.take().map(|s| s.install(&path)) {
            Some(Ok(f)) => f,
            _ => write_new_segment(&path)?,
        };
        self.size = MAGIC.len() as u64;
        self.segments.push(Segment {
            seq,
            path,
            max_index: None,
        });
        let mut state = Vec::new();
        if let Some(v) = &self.vote {
            state.push(Record::Vote(v.clone()));
        }
        if let Some(c) = &self.committed {
            state.push(Record::Committed(c.clone()));
        }
        if let Some((upto, data)) = &self.purged {
            state.push(Record::Purge {
                upto: *upto,
                data: data.clone(),
            });
        }
        self.write(&[&state], true)
    }

    /// Appends the records of `groups` and syncs if asked; on a failed write cuts them
    /// back off.
    pub(super) fn write(&mut self, groups: &[&[Record]], sync: bool) -> Result<()> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        self.buf.clear();
        self.spans.clear();
        let records = || groups.iter().flat_map(|g| g.iter());
        for r in records() {
            let at = self.buf.len();
            r.encode(&mut self.buf);
            self.spans.push((at as u64, (self.buf.len() - at) as u32));
        }
        let start = self.size;
        let path = self.active().path.clone();
        if let Err(e) = self.file.write_all(&self.buf) {
            let cut = self
                .file
                .set_len(start)
                .and_then(|_| self.file.seek(SeekFrom::Start(start)).map(drop));
            if let Err(cut) = cut {
                self.poisoned = Some(io("cannot cut back a failed write to", &path, cut));
            }
            let full = matches!(
                e.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
            );
            if full && self.poisoned.is_none() {
                return Err(Error::new(
                    ErrorKind::NoSpace,
                    format!(
                        "etcdserver: no space left for the write-ahead log {} ({e}): writes wait until there is room",
                        path.display()
                    ),
                ));
            }
            return Err(io("cannot write", &path, e));
        }
        self.size += self.buf.len() as u64;
        if sync && self.fsync.load(Ordering::Relaxed) {
            let started = std::time::Instant::now();
            if let Err(e) = self.file.sync_data() {
                let e = io("cannot sync", &path, e);
                self.poisoned = Some(e.clone());
                return Err(e);
            }
            self.last_sync = started.elapsed();
            self.syncs.observe(self.last_sync);
        }
        let seq = self.active().seq;
        let mut places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        for (r, &(offset, len)) in records().zip(&self.spans) {
            let at = Place {
                seq,
                offset: start + offset,
                len,
            };
            track(&mut places, r, at);
        }
        drop(places);
        for r in records() {
            match r {
                Record::Entry { index, .. } => {
                    let seg = self.active();
                    seg.max_index = Some(seg.max_index.map_or(*index, |m| m.max(*index)));
                }
                Record::Vote(v) => self.vote = Some(v.clone()),
                Record::Committed(c) => self.committed = Some(c.clone()),
                Record::Purge { upto, data } => self.purged = Some((*upto, data.clone())),
                Record::Truncate { .. } => {}
            }
        }
        Ok(())
    }

    /// Deletes the oldest closed segments that hold nothing past `upto`.
    pub(super) fn delete_purged(&mut self, upto: u64) {
        while self.segments.len() > 1 && self.segments[0].max_index.is_none_or(|m| m <= upto) {
            let seg = self.segments.remove(0);
            let _ = fs::remove_file(&seg.path);
        }
    }

    pub(super) fn write_batches(
        &mut self,
        hints: &[Record],
        batches: &[Batch],
        sync: bool,
    ) -> Result<()> {
        let groups: Vec<&[Record]> = std::iter::once(hints)
            .chain(batches.iter().map(|b| &b.records[..]))
            .collect();
        self.write_groups(&groups, sync)
    }

    /// Writes `groups` (in a new segment if this one is full), syncs if asked, and deletes
    /// the segments a purge among them made unneeded.
    pub(super) fn write_groups(&mut self, groups: &[&[Record]], sync: bool) -> Result<()> {
        if self.size >= SEGMENT_BYTES {
            self.roll()?;
        }
        self.write(groups, sync)?;
        if self.spare.is_none() && self.size >= SEGMENT_BYTES / 2 {
            self.spare = Spare::start(&self.dir);
        }
        if let Some(upto) = groups
            .iter()
            .flat_map(|g| g.iter())
            .rev()
            .find_map(|r| match r {
                Record::Purge { upto, .. } => Some(*upto),
                _ => None,
            })
        {
            self.delete_purged(upto);
        }
        Ok(())
    }

    pub(super) fn take_hints(&self) -> Vec<Record> {
        std::mem::take(&mut *self.hints.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The writer thread: writes what is queued, a group at a time. `writer` is shared with
    /// `Wal::submit_here`, which writes on its caller's thread while nothing is queued
    /// (`queued` counts the batches sent and not yet written).
    pub(super) fn run(
        writer: Arc<Mutex<Writer>>,
        queued: Arc<AtomicUsize>,
        jobs: mpsc::Receiver<Batch>,
    ) {
        let lock = || writer.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let first = match jobs.recv_timeout(HINT_WAIT) {
                Ok(b) => b,
                // No batch to take the hints handed over since the last sync (the committed
                // mark of a batch just answered): written without a sync, they survive the
                // process being killed, as etcd's commit index does.
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    {
                        let mut w = lock();
                        let hints = w.take_hints();
                        if !hints.is_empty() {
                            let _ = w.write_batches(&hints, &[], false);
                        }
                    }
                    match jobs.recv() {
                        Ok(b) => b,
                        Err(_) => break,
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            // Group commit: whatever queued while the last sync ran goes in this one.
            let mut batches = vec![first];
            batches.extend(jobs.try_iter());
            let result = {
                let mut w = lock();
                let hints = w.take_hints();
                let result = loop {
                    match w.write_batches(&hints, &batches, true) {
                        // No room: the same batches again once there is (nothing was written).
                        Err(e) if e.kind == ErrorKind::NoSpace && !w.stall.closing() => {
                            w.stall.set(Some(e));
                            std::thread::sleep(STALL_RETRY);
                        }
                        result => break result,
                    }
                };
                w.stall.set(None);
                queued.fetch_sub(batches.len(), Ordering::AcqRel);
                result
            };
            for b in batches {
                (b.done)(result.clone());
            }
        }
        // Closing: the hints that no sync took are written with one of their own.
        let mut w = lock();
        let hints = w.take_hints();
        if !hints.is_empty() {
            let _ = w.write_batches(&hints, &[], true);
        }
    }
}

/// How long the writer waits for a batch to take the hints handed over after a sync before
/// it writes them on their own (under load the next batch comes sooner).
pub(super) const HINT_WAIT: Duration = Duration::from_millis(10);

/// How often a log without room tries its write again.
pub(super) const STALL_RETRY: Duration = Duration::from_millis(100);

/// Whether the log waits for room, and why; shared with the node, which refuses new writes
/// at once while it does.
#[derive(Default)]
pub struct Stall {
    pub(super) waiting: AtomicBool,
    pub(super) closing: AtomicBool,
    pub(super) why: Mutex<Option<Error>>,
}

impl Stall {
    pub(super) fn set(&self, why: Option<Error>) {
        // Called after every write: clearing a log that never stalled costs one load.
        if why.is_none() && !self.waiting.load(Ordering::Acquire) {
            return;
        }
        self.waiting.store(why.is_some(), Ordering::Release);
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Why the log cannot write now (no room), or None.
    pub fn error(&self) -> Option<Error> {
        if !self.waiting.load(Ordering::Acquire) {
            return None;
        }
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
