//! The write-ahead log: the node's truth on disk for Raft entries and the vote. Records are
//! appended to segment files (`<seq>.wal`, rolled at 16 MiB), each framed as
//! `len: u32 | crc32: u32 | kind: u8 | fields`, and made durable by one `fdatasync` per group
//! of batches on a thread of its own (group commit: batches that queue while a sync runs
//! share the next one; no runtime worker ever waits on the disk). A batch's completion runs
//! only after its sync; a hint (the committed mark) rides the next sync, or is written
//! unsynced when no batch follows within 10 ms.
//! Segments are written full of zeros when made (the next one on a thread of its own while
//! the active one fills), so an append changes no file size and lands in blocks already
//! written: a sync writes neither the inode nor the extent tree.
//!
//! On open every segment is read back up to the zeros of its preallocated rest: a torn last
//! record (a crash mid-write; a hole of zeros with unsynced data after it) is cut off; a
//! corrupt record anywhere else is refused with its place, never skipped. A write that fails
//! for want of room (ENOSPC, EDQUOT, EFBIG) is cut back off the file and retried until there
//! is room: the log stalls (`Wal::stall`) instead of failing the consensus layer, so nothing
//! acknowledged is lost and the node goes on by itself once space returns. Any other failed
//! write is reported; a failed sync poisons the log (the kernel may have dropped the pages),
//! so the node must reopen it. The directory is locked against a second process.
//!
//! The log stores opaque payloads: what an entry or a vote means is the consensus layer's.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, ErrorKind, Result};
use crate::node::metrics::Histogram;

mod record;
mod segment;
mod writer;

pub use record::Record;
use record::{FRAME, MAGIC};
pub use segment::Recovered;
use segment::*;
pub use writer::Stall;
use writer::*;

/// The longest last sync after which `Wal::submit_here` still syncs on its caller's thread.
/// An SSD's `fdatasync` takes 0.1-1 ms (146 µs here), a spinning disk's 5-20 ms.
const HERE_SYNC_MAX: Duration = Duration::from_millis(1);

/// Entries read back, by index, and whether the read stopped at its budget before `to`.
pub struct Entries {
    pub entries: Vec<(u64, Vec<u8>)>,
    pub cut: bool,
}

/// The log. Share it with `Arc`; every method may be called from any thread. Dropping it
/// lets queued writes finish (a log waiting for room gives up), then releases the directory.
pub struct Wal {
    dir: PathBuf,
    places: Arc<Mutex<Places>>,
    jobs: Option<mpsc::Sender<Batch>>,
    /// Batches sent to the writer thread and not yet written.
    queued: Arc<AtomicUsize>,
    /// The writer, shared by its thread and `submit_here`.
    writer_state: Arc<Mutex<Writer>>,
    hints: Arc<Mutex<Vec<Record>>>,
    writer: Option<JoinHandle<()>>,
    syncs: Arc<Histogram>,
    stall: Arc<Stall>,
    fsync: Arc<AtomicBool>,
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stall.closing.store(true, Ordering::Release);
        drop(self.jobs.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Wal {
    /// From now on a group is written but not synced (etcd's `--unsafe-no-fsync`): what
    /// is acknowledged survives the process being killed, not the machine losing power.
    /// For tests, such as the negative control of the power-loss harness.
    pub fn unsafe_no_fsync(&self) {
        self.fsync.store(false, Ordering::Relaxed);
    }

    /// Opens (or creates) the log in `dir`, returning what it holds.
    pub fn open(dir: &Path) -> Result<(Wal, Recovered)> {
        fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open", &lock_path, e))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "{} is in use by another process ({e}): one node per data dir",
                    dir.display()
                ),
            )
        })?;
        // A next segment a stop left half made, or made and never used.
        let _ = fs::remove_file(Spare::path(dir));
        let mut seqs: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| io("cannot list", dir, e))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(".wal")?, 16).ok()
            })
            .collect();
        seqs.sort_unstable();
        let mut segments: Vec<Segment> = seqs
            .iter()
            .map(|&seq| Segment {
                seq,
                path: segment_path(dir, seq),
                max_index: None,
            })
            .collect();
        let mut state = Recovered::default();
        let mut places = Places::new();
        let n = segments.len();
        let mut size = MAGIC.len() as u64;
        for (i, seg) in segments.iter_mut().enumerate() {
            size = replay(seg, i + 1 == n, &mut state, &mut places)?;
        }
        let places = Arc::new(Mutex::new(places));
        if segments.is_empty() {
            let path = segment_path(dir, 1);
            write_new_segment(&path)?;
            segments.push(Segment {
                seq: 1,
                path,
                max_index: None,
            });
        }
        let active = &segments[segments.len() - 1].path;
        let mut file = OpenOptions::new()
            .write(true)
            .open(active)
            .map_err(|e| io("cannot open", active, e))?;
        preallocate(&file);
        file.seek(SeekFrom::Start(size))
            .map_err(|e| io("cannot open", active, e))?;
        let syncs = Arc::new(Histogram::default());
        let stall = Arc::new(Stall::default());
        let hints = Arc::new(Mutex::new(Vec::new()));
        let fsync = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            dir: dir.to_path_buf(),
            segments,
            file,
            size,
            vote: state.vote.clone(),
            committed: state.committed.clone(),
            purged: state.purged.clone(),
            syncs: syncs.clone(),
            last_sync: Duration::ZERO,
            stall: stall.clone(),
            fsync: fsync.clone(),
            poisoned: None,
            buf: Vec::new(),
            spans: Vec::new(),
            places: places.clone(),
            hints: hints.clone(),
            spare: None,
            _lock: lock,
        };
        let (jobs, rx) = mpsc::channel();
        let writer_state = Arc::new(Mutex::new(writer));
        let queued = Arc::new(AtomicUsize::new(0));
        let (state_for_thread, queued_for_thread) = (writer_state.clone(), queued.clone());
        let writer = crate::runtime::with_sigpipe_blocked(|| {
            std::thread::Builder::new()
                .name("etcdc-wal".into())
                .spawn(move || Writer::run(state_for_thread, queued_for_thread, rx))
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot start the log writer: {e}"),
            )
        })?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                places,
                jobs: Some(jobs),
                queued,
                writer_state,
                hints,
                writer: Some(writer),
                syncs,
                fsync,
                stall,
            },
            state,
        ))
    }

    /// Queues `records`; `done` runs on the writer thread once they are durable (or failed).
    pub fn submit(&self, records: Vec<Record>, done: impl FnOnce(Result<()>) + Send + 'static) {
        self.queue(Batch {
            records,
            done: Box::new(done),
        });
    }

    /// Hands `records` over to be written with the next batch's sync — or, if none comes
    /// within `HINT_WAIT` of the last sync, on their own without a sync, or when the log
    /// closes: hints such as the committed mark, whose loss costs nothing but a longer
    /// replay. The writer is not woken for them: openraft saves the mark after every
    /// commit, and a wake-up plus a write of its own per commit cost the writer thread a
    /// context switch and a syscall per batch.
    pub fn submit_unsynced(&self, records: Vec<Record>) {
        self.hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(records);
    }

    /// `submit`, but written and synced on the calling thread when nothing is queued for
    /// the writer thread and it is not writing: no hand-off to that thread and back, two
    /// wake-ups that cost this 2-core machine about 40-50 µs each (`perf sched latency`).
    /// For the appends of a follower and of a leader without followers: openraft waits for
    /// each append to be synced before the next, so no group is lost, and the caller's
    /// thread waits out the sync (a leader with followers sends them its entries meanwhile,
    /// so its appends go to the writer thread). Only while syncs are quick (the last one
    /// took at most `HERE_SYNC_MAX`): on a slow disk the caller's thread (a member's only
    /// runtime thread, on 2 cores) would stop serving reads for each sync. With no room on
    /// the disk the batch goes to the writer thread, which waits for room.
    pub fn submit_here(
        &self,
        records: Vec<Record>,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(mut w) = self.writer_state.try_lock() {
                // Anything sent before this was written (the count drops once it is), so
                // these records go after it.
                if self.queued.load(Ordering::Acquire) == 0 && w.last_sync <= HERE_SYNC_MAX {
                    let hints = w.take_hints();
                    match w.write_groups(&[&hints, &records], true) {
                        Err(e) if e.kind == ErrorKind::NoSpace => {
                            let mut h = self.hints.lock().unwrap_or_else(|p| p.into_inner());
                            h.splice(0..0, hints);
                        }
                        result => {
                            drop(w);
                            done(result);
                            return;
                        }
                    }
                }
            }
        }
        self.submit(records, done);
    }

    fn queue(&self, batch: Batch) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let refused = match &self.jobs {
            Some(jobs) => jobs.send(batch).err().map(|mpsc::SendError(b)| b),
            None => Some(batch),
        };
        if let Some(batch) = refused {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            (batch.done)(Err(Error::new(ErrorKind::Closed, "the log is closed")));
        }
    }

    /// `submit`, awaited.
    pub async fn write(&self, records: Vec<Record>) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(records, move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Closed, "the log is closed")))
    }

    /// `submit`, waited for on the calling thread (never a runtime worker).
    pub fn write_blocking(&self, records: Vec<Record>) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.submit(records, move |r| {
            let _ = tx.send(r);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Closed, "the log is closed")))
    }

    /// The highest index whose entry has been written (not necessarily synced yet): from
    /// then on `read_entries` can read it back.
    pub fn last_written(&self) -> Option<u64> {
        let places = self.places.lock().unwrap_or_else(|p| p.into_inner());
        places.keys().next_back().copied()
    }

    /// Reads back the entries in `from..to` that the log holds, in order: what a log store
    /// that no longer keeps them in memory serves a lagging follower from. Each record's
    /// checksum is verified again. Reading stops once `budget` bytes are read (the first
    /// entry is always read).
    pub fn read_entries(&self, from: u64, to: u64, budget: usize) -> Result<Entries> {
        let mut cut = false;
        let wanted: Vec<(u64, Place)> = {
            let places = self.places.lock().unwrap_or_else(|p| p.into_inner());
            let mut bytes = 0;
            places
                .range(from..to)
                .take_while(|(_, p)| {
                    cut = bytes >= budget;
                    bytes += p.len as usize;
                    !cut
                })
                .map(|(&i, &p)| (i, p))
                .collect()
        };
        let mut out = Vec::with_capacity(wanted.len());
        let mut open: Option<(u64, File)> = None;
        for (index, place) in wanted {
            let path = segment_path(&self.dir, place.seq);
            let f = match open {
                Some((seq, ref f)) if seq == place.seq => f,
                _ => {
                    let f = File::open(&path).map_err(|e| io("cannot read", &path, e))?;
                    &open.insert((place.seq, f)).1
                }
            };
            let mut frame = vec![0; (place.len as usize).max(FRAME)];
            std::os::unix::fs::FileExt::read_exact_at(f, &mut frame, place.offset)
                .map_err(|e| io("cannot read", &path, e))?;
            let (head, body) = frame.split_at(FRAME);
            let crc = u32::from_be_bytes(head[4..].try_into().unwrap_or_default());
            if crc32fast::hash(body) != crc {
                return Err(corrupt(
                    &path,
                    place.offset,
                    "checksum mismatch on reading back",
                ));
            }
            match Record::decode(body) {
                Some(Record::Entry { index: i, data }) if i == index => out.push((index, data)),
                _ => return Err(corrupt(&path, place.offset, "not the entry expected there")),
            }
        }
        Ok(Entries { entries: out, cut })
    }

    /// The log's stall state: why it cannot write now, if it cannot.
    pub fn stall(&self) -> Arc<Stall> {
        self.stall.clone()
    }

    /// How many syncs the log has made: fewer than batches when group commit works.
    pub fn syncs(&self) -> u64 {
        self.syncs.count()
    }

    /// How long its syncs took (etcd's `etcd_disk_wal_fsync_duration_seconds`).
    pub fn sync_latency(&self) -> Arc<Histogram> {
        self.syncs.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::thread::{current, ThreadId};

    use super::*;

    fn entry(index: u64, data: &str) -> Record {
        Record::Entry {
            index,
            data: data.as_bytes().to_vec(),
        }
    }

    /// A completion callback, and where it tells whether it succeeded and on which thread.
    fn done() -> (
        impl FnOnce(Result<()>) + Send + 'static,
        mpsc::Receiver<(bool, ThreadId)>,
    ) {
        let (tx, rx) = channel::<(bool, ThreadId)>();
        let f = move |r: Result<()>| tx.send((r.is_ok(), current().id())).unwrap();
        (f, rx)
    }

    /// A batch submitted "here" is written and synced on the caller's thread while the
    /// writer thread has nothing to do, and after whatever it has queued otherwise.
    #[test]
    fn a_batch_written_here_goes_after_what_the_writer_thread_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let here = current().id();
        let (f, idle) = done();
        wal.submit_here(vec![entry(1, "one")], f);
        assert_eq!(
            idle.try_recv(),
            Ok((true, here)),
            "written before submit_here returned"
        );

        // The writer thread takes a batch and waits for the writer: the next batch queues.
        let held = wal.writer_state.lock().unwrap();
        let (f, first) = done();
        wal.submit(vec![entry(2, "first")], f);
        let (f, second) = done();
        wal.submit_here(vec![entry(2, "second")], f);
        assert!(
            second.try_recv().is_err(),
            "not written past the queued batch"
        );
        drop(held);
        let wait = Duration::from_secs(5);
        assert!(first.recv_timeout(wait).unwrap().0);
        let (ok, by) = second.recv_timeout(wait).unwrap();
        assert!(ok && by != here, "written by the writer thread");
        drop(wal);

        let (_, recovered) = Wal::open(dir.path()).unwrap();
        let entries: Vec<_> = recovered
            .entries
            .iter()
            .map(|(i, d)| (*i, String::from_utf8_lossy(d).into_owned()))
            .collect();
        assert_eq!(entries, [(1, "one".into()), (2, "second".into())]);
    }

    /// After a slow sync the caller's thread is not made to wait out the next one.
    #[test]
    fn after_a_slow_sync_a_batch_goes_to_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.writer_state.lock().unwrap().last_sync = HERE_SYNC_MAX * 2;
        let (f, written) = done();
        wal.submit_here(vec![entry(1, "one")], f);
        let (ok, by) = written.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(ok && by != current().id(), "written by the writer thread");
    }
}
