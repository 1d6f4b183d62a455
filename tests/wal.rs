//! The node's write-ahead log on a real file system: what is acknowledged survives a reopen
//! and a SIGKILL; a torn tail is cut; corruption in the middle is refused; group commit
//! shares syncs; segments are made ahead full of zeros, roll and are deleted behind a purge;
//! one process per directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use etcdc::node::wal::{Record, Recovered, Wal};
use etcdc::ErrorKind;

fn entry(index: u64, data: &str) -> Record {
    Record::Entry {
        index,
        data: data.as_bytes().to_vec(),
    }
}

fn entries(r: &Recovered) -> Vec<(u64, String)> {
    r.entries
        .iter()
        .map(|(i, d)| (*i, String::from_utf8_lossy(d).into_owned()))
        .collect()
}

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// Where the records of a segment end: segments are preallocated, zeros follow.
fn data_end(seg: &std::path::Path) -> usize {
    let bytes = std::fs::read(seg).unwrap();
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        pos += 8 + len;
    }
    pos
}

/// Writes `bytes` at `offset` of `path`.
fn write_at(path: &std::path::Path, offset: usize, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset as u64)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn what_was_written_comes_back_with_truncate_and_purge_applied() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, r) = Wal::open(dir.path()).unwrap();
        assert_eq!(r, Recovered::default());
        wal.write_blocking((1..=5).map(|i| entry(i, &format!("e{i}"))).collect())
            .unwrap();
        wal.write_blocking(vec![Record::Vote(b"term 3".to_vec())])
            .unwrap();
        // A conflicting suffix from 4 is replaced.
        wal.write_blocking(vec![Record::Truncate { from: 4 }, entry(4, "x4")])
            .unwrap();
        wal.write_blocking(vec![
            Record::Committed(b"c4".to_vec()),
            Record::Purge {
                upto: 2,
                data: b"p2".to_vec(),
            },
        ])
        .unwrap();
    }
    let (_wal, r) = Wal::open(dir.path()).unwrap();
    assert_eq!(entries(&r), [(3, "e3".into()), (4, "x4".into())]);
    assert_eq!(r.vote.as_deref(), Some(&b"term 3"[..]));
    assert_eq!(r.committed.as_deref(), Some(&b"c4"[..]));
    assert_eq!(r.purged, Some((2, b"p2".to_vec())));
}

#[test]
fn a_torn_last_record_is_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.write_blocking(vec![entry(1, "one"), entry(2, "two")])
            .unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    let whole = data_end(&seg);
    // A third record whose write was cut short by a crash: a frame promising 100 bytes.
    write_at(&seg, whole, &[0, 0, 0, 100, 1, 2, 3, 4, 1, 0, 0]);
    {
        let (wal, r) = Wal::open(dir.path()).unwrap();
        assert_eq!(entries(&r), [(1, "one".into()), (2, "two".into())]);
        assert_eq!(data_end(&seg), whole, "cut back");
        wal.write_blocking(vec![entry(3, "three")]).unwrap();
    }
    // A last record whose bytes are all there but wrong (checksum): torn too.
    let len = data_end(&seg);
    write_at(&seg, len - 1, b"\xff");
    {
        let (wal, r) = Wal::open(dir.path()).unwrap();
        assert_eq!(r.entries.len(), 2);
        assert!(data_end(&seg) < len);
        wal.write_blocking(vec![entry(3, "three")]).unwrap();
    }
    // A crash can leave later pages of an unsynced write on disk before earlier ones: a
    // hole of zeros with data after it is a torn tail as well.
    let end = data_end(&seg);
    write_at(&seg, end + 4096, b"stray page");
    let (_wal, r) = Wal::open(dir.path()).unwrap();
    assert_eq!(r.entries.len(), 3);
    assert_eq!(data_end(&seg), end);
}

#[test]
fn corruption_in_the_middle_is_refused_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.write_blocking(vec![entry(1, "one"), entry(2, "two"), entry(3, "three")])
            .unwrap();
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // The first record's payload starts after the 8-byte magic, the 8-byte frame, the kind
    // and the 8-byte index.
    bytes[8 + 8 + 1 + 8] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Wal::open(dir.path())
        .err()
        .expect("a corrupt log must not open");
    assert_eq!(err.kind, ErrorKind::DataLoss);
    assert!(
        err.message.contains("corrupt at offset 8"),
        "{}",
        err.message
    );
}

#[test]
fn a_foreign_file_and_a_second_opener_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path()).unwrap();
    let err = Wal::open(dir.path()).err().expect("one opener at a time");
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(
        err.message.contains("in use by another process"),
        "{}",
        err.message
    );
    drop(wal);
    Wal::open(dir.path()).unwrap();

    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(
        foreign.path().join("0000000000000001.wal"),
        b"not a log at all",
    )
    .unwrap();
    let err = Wal::open(foreign.path()).err().expect("foreign data");
    assert!(
        err.message.contains("not an etcdc write-ahead log"),
        "{}",
        err.message
    );
}

#[test]
fn concurrent_writers_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path()).unwrap();
    let wal = Arc::new(wal);
    let per = 100u64;
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    wal.write_blocking(vec![Record::Committed(format!("{t}/{i}").into_bytes())])
                        .unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let syncs = wal.syncs();
    eprintln!("1600 acknowledged batches, {syncs} syncs");
    assert!(syncs < 1600, "group commit shared no sync ({syncs})");
}

#[test]
fn a_hint_rides_the_next_sync_and_is_written_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path()).unwrap();
    let wal = Arc::new(wal);
    let seg = segments(dir.path()).remove(0);
    let on_disk = |marker: &[u8]| {
        let bytes = std::fs::read(&seg).unwrap();
        bytes.windows(marker.len()).any(|w| w == marker)
    };
    let syncs = wal.syncs();
    wal.submit_unsynced(vec![Record::Committed(b"hint-one".to_vec())]);
    wal.write_blocking(vec![entry(1, "a")]).unwrap();
    assert!(on_disk(b"hint-one"), "the hint missed the next sync");
    assert_eq!(wal.syncs(), syncs + 1, "the hint cost a sync of its own");
    // Handed over as openraft does, once a batch is durable, and no batch after it: the
    // writer writes it by itself a moment later.
    let (tx, rx) = std::sync::mpsc::channel();
    let w = wal.clone();
    wal.submit(vec![entry(2, "b")], move |r| {
        r.unwrap();
        w.submit_unsynced(vec![Record::Committed(b"hint-two".to_vec())]);
        // Before the signal: the test takes the last handle back afterwards.
        drop(w);
        tx.send(()).unwrap();
    });
    rx.recv().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !on_disk(b"hint-two") {
        assert!(
            std::time::Instant::now() < deadline,
            "a hint at rest was never written"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(wal.syncs(), syncs + 2, "the hint at rest was synced");
    wal.submit_unsynced(vec![Record::Committed(b"hint-three".to_vec())]);
    drop(Arc::into_inner(wal).expect("the only handle"));
    let (_, r) = Wal::open(dir.path()).unwrap();
    assert_eq!(r.committed.as_deref(), Some(&b"hint-three"[..]));
    assert_eq!(
        entries(&r),
        vec![(1, "a".to_string()), (2, "b".to_string())]
    );
}

#[test]
fn segments_roll_and_purged_ones_are_deleted_keeping_the_vote() {
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(1 << 20);
    {
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.write_blocking(vec![Record::Vote(b"v1".to_vec())])
            .unwrap();
        for i in 1..=20 {
            wal.write_blocking(vec![entry(i, &big)]).unwrap();
        }
        assert_eq!(segments(dir.path()).len(), 2, "rolled at 16 MiB");
        wal.write_blocking(vec![Record::Purge {
            upto: 18,
            data: vec![],
        }])
        .unwrap();
        assert_eq!(segments(dir.path()).len(), 1, "the purged segment is gone");
    }
    let (_wal, r) = Wal::open(dir.path()).unwrap();
    assert_eq!(r.entries.keys().copied().collect::<Vec<_>>(), [19, 20]);
    assert_eq!(
        r.vote.as_deref(),
        Some(&b"v1"[..]),
        "carried into the new segment"
    );
}

/// The extents `filefrag -v` says are reserved but never written ("unwritten"), or None where
/// the file system cannot say (no FIEMAP, such as tmpfs).
fn unwritten_extents(path: &std::path::Path) -> Option<usize> {
    let out = Command::new("filefrag").arg("-v").arg(path).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("unwritten"))
            .count()
    })
}

/// Segments are made full of written zeros, the next one on a thread of its own once the
/// active one is half full, and a roll takes that one: appends land in blocks already
/// written, so a sync writes no extent change, and no write waits for 16 MiB of zeros.
#[test]
fn the_next_segment_is_made_ahead_full_of_written_zeros() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let next = dir.path().join("next.wal.tmp");
    std::fs::write(&next, b"left over by a stop").unwrap();
    let big = "x".repeat(1 << 20);
    let (wal, _) = Wal::open(dir.path()).unwrap();
    assert!(!next.exists(), "a leftover next segment is deleted on open");
    for i in 1..=7 {
        wal.write_blocking(vec![entry(i, &big)]).unwrap();
    }
    assert!(
        !next.exists(),
        "not made before the active segment is half full"
    );
    wal.write_blocking(vec![entry(8, &big)]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let made = loop {
        if let Ok(m) = std::fs::metadata(&next) {
            break m.ino();
        }
        assert!(std::time::Instant::now() < deadline, "no next segment");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    for i in 9..=20 {
        wal.write_blocking(vec![entry(i, &big)]).unwrap();
    }
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2, "rolled at 16 MiB");
    assert_eq!(
        std::fs::metadata(&segs[1]).unwrap().ino(),
        made,
        "the roll took the segment made ahead"
    );
    for seg in &segs {
        assert!(
            std::fs::metadata(seg).unwrap().len() >= 16 << 20,
            "full size"
        );
        if let Some(n) = unwritten_extents(seg) {
            assert_eq!(n, 0, "{} has blocks only reserved", seg.display());
        }
    }
    drop(wal);
    let (_wal, r) = Wal::open(dir.path()).unwrap();
    assert_eq!(r.entries.len(), 20);
}

/// What `crash_child` appends at `i`: 32 KiB, so that its log rolls every 512 entries and the
/// kill may land while the next segment is being made.
fn crash_entry(i: u64) -> String {
    format!("entry {i} {}", "x".repeat(32 << 10))
}

/// The child of `acknowledged_writes_survive_sigkill`: appends until killed, printing each
/// index once the log has acknowledged it.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("ETCDC_WAL_CHILD_DIR") else {
        return;
    };
    let (wal, _) = Wal::open(std::path::Path::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 1.. {
        wal.write_blocking(vec![entry(i, &crash_entry(i))]).unwrap();
        writeln!(out, "acked {i}").unwrap();
        out.flush().unwrap();
    }
}

/// Past half of the third segment (512 entries each, its header and state aside).
const KILL_AT: u64 = 2 * 512 + 300;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("ETCDC_WAL_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse().unwrap();
            if acked >= KILL_AT {
                break;
            }
        }
    }
    // SIGKILL by its own pid, mid-append (the third segment past half full: its next one is
    // being made, or just was).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(acked >= KILL_AT, "the child stopped early at {acked}");
    let check = |got: &BTreeMap<u64, Vec<u8>>, upto: u64| {
        for i in 1..=upto {
            assert!(
                got.get(&i).map(|d| &d[..]) == Some(crash_entry(i).as_bytes()),
                "acknowledged entry {i} lost"
            );
        }
    };
    let (wal, r) = Wal::open(dir.path()).unwrap();
    check(&r.entries, acked);
    // The log goes on from there, through another roll, and keeps it all.
    let last = *r.entries.keys().next_back().unwrap();
    for i in last + 1..=last + 600 {
        wal.write_blocking(vec![entry(i, &crash_entry(i))]).unwrap();
    }
    drop(wal);
    let (_wal, r) = Wal::open(dir.path()).unwrap();
    check(&r.entries, last + 600);
}
