//! The member's snapshot file, backups (`Maintenance.Snapshot`) and restore.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta, StoredMembership, Vote};

use super::{pack, NodeId, FORMAT};
use crate::error::{Error, ErrorKind, Result};
use crate::node::mvcc::{write_image_in_turns, Mvcc};
use crate::node::wal::{Record, Wal};

/// The member's snapshot file: `crc32 (big endian) | FORMAT | bincode(meta) | the store's
/// length (u64, little endian) | the store (`Mvcc::encode_to`)`, the crc over everything
/// after it — what bincode writes for `(meta, store bytes)` behind the format byte.
pub(super) fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.snap")
}

/// Writes a snapshot file's bytes for `meta` and `mvcc` into `out` from where it stands,
/// the store streamed as it is encoded — never copied whole into memory first. The head
/// ends with the store's length, known once it is written: its place is kept, and the crc of
/// head + store is combined from the two parts' crcs.
pub(super) fn write_snapshot_stream(
    out: &mut (impl Write + Seek),
    meta: &SnapshotMeta<NodeId, BasicNode>,
    mvcc: &Mvcc,
) -> std::io::Result<()> {
    write_snapshot_in_turns(out, meta, || mvcc, usize::MAX).map(drop)
}

/// `write_snapshot_stream`, the store held one turn at a time (`write_image_in_turns`).
/// Says how many versions it wrote.
pub(super) fn write_snapshot_in_turns<G: std::ops::Deref<Target = Mvcc>>(
    out: &mut (impl Write + Seek),
    meta: &SnapshotMeta<NodeId, BasicNode>,
    turn: impl FnMut() -> G,
    per_turn: usize,
) -> std::io::Result<u64> {
    let start = out.stream_position()?;
    let mut head = pack(meta);
    out.seek(SeekFrom::Current(4 + head.len() as i64 + 8))?;
    let (store_crc, len, versions) = {
        let mut store = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 20, &mut *out),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        let versions = write_image_in_turns(turn, per_turn, &mut store)?;
        store.inner.flush()?;
        (store.crc.clone(), store.len, versions)
    };
    head.extend_from_slice(&len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.combine(&store_crc);
    out.seek(SeekFrom::Start(start))?;
    out.write_all(&crc.finalize().to_be_bytes())?;
    out.write_all(&head)?;
    out.seek(SeekFrom::Current(len as i64))?;
    Ok(versions)
}

/// A writer that counts and checksums what passes through it.
pub(super) struct Hashing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the snapshot file through a temporary one — `body` writes its bytes — then
/// syncs it, renames it into place and syncs the directory. Returns what `body` did.
pub(super) fn write_snapshot_with<T>(
    dir: &Path,
    body: impl FnOnce(&mut std::fs::File) -> std::io::Result<T>,
) -> Result<T> {
    let tmp = dir.join("snapshot.tmp");
    let io = |e: std::io::Error| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot write a snapshot in {}: {e}", dir.display()),
        )
    };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    let written = body(&mut f).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, snapshot_path(dir)).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(written)
}

/// Reads a snapshot file's head as a stream: its meta and the length of the store after it.
pub(super) fn read_head(
    r: &mut impl std::io::Read,
) -> Result<(SnapshotMeta<NodeId, BasicNode>, u64)> {
    let bad = || Error::new(ErrorKind::DataLoss, "the snapshot is malformed");
    let mut format = [0; 1];
    r.read_exact(&mut format).map_err(|_| bad())?;
    if format[0] != FORMAT {
        return Err(Error::new(
            ErrorKind::DataLoss,
            "a snapshot of an unknown format version",
        ));
    }
    let meta = bincode::deserialize_from(&mut *r).map_err(|_| bad())?;
    let mut len = [0; 8];
    r.read_exact(&mut len).map_err(|_| bad())?;
    Ok((meta, u64::from_le_bytes(len)))
}

/// Loads the snapshot file at `path` (None if there is none) as a stream, never holding
/// its bytes whole, its superseded values going to a history file in `history`.
pub(super) fn load_snapshot(
    path: &Path,
    history: &Path,
) -> Result<Option<(SnapshotMeta<NodeId, BasicNode>, Mvcc)>> {
    match std::fs::File::open(path) {
        Ok(mut f) => read_snapshot(&mut f, path, history).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::new(
            ErrorKind::Internal,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// A snapshot file — or a backup, `Backup::send`'s framing around one — read as a stream:
/// checked first (`check_snapshot`), then its meta and store decoded, the store's
/// superseded values going to a history file in `history`. `path` names it in errors.
pub(super) fn read_snapshot(
    f: &mut std::fs::File,
    path: &Path,
    history: &Path,
) -> Result<(SnapshotMeta<NodeId, BasicNode>, Mvcc)> {
    use std::io::{BufReader, Read};
    let end = check_snapshot(f, path)?;
    f.seek(SeekFrom::Start(4))
        .map_err(|e| read_error(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f).take(end - 4);
    let (meta, len) = read_head(&mut r)?;
    let mvcc = Mvcc::read_image(r.take(len), Some((history, crate::node::history::PIECE)))?;
    Ok((meta, mvcc))
}

pub(super) fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("cannot read {}: {e}", path.display()),
    )
}

/// Hands `f`'s bytes in `from..to` to `take`, a piece at a time.
pub(super) fn each_piece(
    f: &mut std::fs::File,
    from: u64,
    to: u64,
    mut take: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read};
    f.seek(SeekFrom::Start(from))?;
    let mut r = BufReader::with_capacity(1 << 20, Read::take(&mut *f, to - from));
    loop {
        let n = {
            let buf = r.fill_buf()?;
            take(buf);
            buf.len()
        };
        if n == 0 {
            return Ok(());
        }
        r.consume(n);
    }
}

/// The crc32 of `f`'s bytes in `from..to`, read as a stream.
pub(super) fn crc_of(f: &mut std::fs::File, from: u64, to: u64) -> std::io::Result<u32> {
    let mut crc = crc32fast::Hasher::new();
    each_piece(f, from, to, |b| crc.update(b))?;
    Ok(crc.finalize())
}

/// Checks a snapshot file — or a backup, `Backup::send`'s framing around one — and says
/// where the snapshot's bytes end: the crc over everything after it for a file; for a
/// backup its SHA-256, then the crc over the snapshot inside. Read as a stream.
pub(super) fn check_snapshot(f: &mut std::fs::File, path: &Path) -> Result<u64> {
    use sha2::Digest;
    use std::io::{BufReader, Read};
    let io = |e| read_error(path, e);
    let corrupt = || {
        Error::new(
            ErrorKind::DataLoss,
            format!("snapshot {} is corrupt (checksum)", path.display()),
        )
    };
    let len = f.metadata().map_err(io)?.len();
    if len < 4 {
        return Err(corrupt());
    }
    let mut crc = [0; 4];
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.read_exact(&mut crc).map_err(io)?;
    let crc = u32::from_be_bytes(crc);
    if crc_of(f, 4, len).map_err(io)? == crc {
        return Ok(len);
    }
    if len % BACKUP_ALIGN as u64 != 32 {
        return Err(corrupt());
    }
    let mut sum = sha2::Sha256::new();
    each_piece(f, 0, len - 32, |b| sum.update(b)).map_err(io)?;
    let mut want = [0; 32];
    f.read_exact(&mut want).map_err(io)?;
    if sum.finalize().as_slice() != want {
        return Err(corrupt());
    }
    // The snapshot inside ends after its head and store; the padding follows.
    f.seek(SeekFrom::Start(4)).map_err(io)?;
    let (meta, data) = read_head(&mut BufReader::new(&mut *f)).map_err(|_| corrupt())?;
    let head = 1 + bincode::serialized_size(&meta).map_err(|_| corrupt())? + 8;
    match (4 + head).checked_add(data) {
        Some(end) if end <= len - 32 && crc_of(f, 4, end).map_err(io)? == crc => Ok(end),
        _ => Err(corrupt()),
    }
}

/// Where a snapshot sent by the leader is gathered before it replaces the member's own.
pub(super) fn receiving_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.receiving")
}

/// A node backup of the format before etcd's file ended, as etcd's stream does, with the
/// SHA-256 of what came before, which was padded with zeros to a multiple of 512 bytes
/// (`etcdctl snapshot save` wants that length).
pub(super) const BACKUP_ALIGN: usize = 512;

/// A backup, ready to stream as `Maintenance.Snapshot` sends it: etcd's backend file
/// written aside (`Mvcc::write_etcd`; its name unlinked at once, so nothing is left
/// behind), sent as etcd sends it — the file in pieces, each with the bytes of the file
/// still to come after it, then its SHA-256 alone (bbolt's whole pages make the length
/// etcdctl checks: a multiple of 512, plus 32).
pub struct Backup {
    pub(super) file: std::fs::File,
    pub(super) len: u64,
}

impl Backup {
    /// Reads the backup in pieces of `piece` bytes and hands each to `out` with the number
    /// of the file's bytes still to come after it, then the SHA-256 (with 0), until `out`
    /// says stop. Blocking: run it off the runtime's workers.
    pub fn send(mut self, piece: usize, mut out: impl FnMut(Vec<u8>, u64) -> bool) -> Result<()> {
        use sha2::Digest;
        use std::io::Read;
        let mut sum = sha2::Sha256::new();
        let mut sent = 0u64;
        loop {
            let mut blob = Vec::with_capacity(piece);
            (&mut self.file)
                .take(piece as u64)
                .read_to_end(&mut blob)
                .map_err(|e| {
                    Error::new(ErrorKind::Internal, format!("cannot read the backup: {e}"))
                })?;
            if blob.is_empty() {
                break;
            }
            sum.update(&blob);
            sent += blob.len() as u64;
            if !out(blob, self.len.saturating_sub(sent)) {
                return Ok(());
            }
        }
        if sent != self.len {
            return Err(Error::new(ErrorKind::Internal, "the backup was cut short"));
        }
        out(sum.finalize().to_vec(), 0);
        Ok(())
    }
}

/// Makes `dir`, a new member's data dir, start from `backup` — etcd's snapshot file (what
/// `Maintenance.Snapshot` streams, on etcd or the node), or a node backup of the format
/// before it (a snapshot file's bytes): the store as the backup holds it, the cluster
/// `members` (as etcd's `snapshot restore` takes them from `--initial-cluster`), and a log
/// that starts after the backup's last entry (an old-format backup's) or anew.
///
/// With `mirror` (the client URLs of the cluster the backup was saved from), the store is
/// a mirror of that cluster (`node::mirror`).
pub fn restore(
    backup: &Path,
    dir: &Path,
    members: BTreeMap<NodeId, String>,
    mirror: Option<String>,
) -> Result<()> {
    let restored = restore_into(backup, dir, members, mirror);
    if restored.is_err() {
        // Called on an empty data dir: what a failed restore wrote goes, so that the next
        // start tries again instead of finding a half-made member.
        let _ = std::fs::remove_dir_all(dir.join("snap"));
        let _ = std::fs::remove_dir_all(dir.join("wal"));
    }
    restored
}

/// Whether `f` is etcd's snapshot file (a bbolt database: its magic after the first page's
/// header), rather than the node's own.
fn is_etcd_snapshot(f: &mut std::fs::File) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    let is = f.read_exact(&mut head).is_ok() && head[16..20] == 0xED0C_DAEDu32.to_le_bytes();
    let _ = f.seek(SeekFrom::Start(0));
    is
}

/// etcd's snapshot file as a store: the bbolt database, checked against the SHA-256 that
/// `etcdctl snapshot save` appends when it is there (as `etcdctl snapshot restore` does).
fn read_etcd_snapshot(path: &Path) -> Result<Mvcc> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let db = match bytes.len() {
        // `etcdctl snapshot save`'s file: the database, zeros to 512 bytes, its SHA-256.
        n if n % 512 == 32 => {
            let (db, sum) = bytes.split_at(n - 32);
            if sha2::Sha256::digest(db).as_slice() != sum {
                return Err(Error::new(
                    ErrorKind::DataLoss,
                    format!(
                        "{}: not an etcd snapshot, or a damaged one: it does not match its SHA-256",
                        path.display()
                    ),
                ));
            }
            db
        }
        // A database copied from a data dir (`member/snap/db`): whole pages, nothing to
        // check it against (etcdctl's --skip-hash-check).
        n if n % 4096 == 0 => &bytes[..],
        n => {
            return Err(Error::new(
                ErrorKind::DataLoss,
                format!(
                    "{}: not an etcd snapshot, or a damaged one: {n} bytes is neither whole pages nor pages and a SHA-256 (cut short?)",
                    path.display()
                ),
            ))
        }
    };
    Mvcc::from_etcd(db)
        .map_err(|e| Error::new(e.kind, format!("{}: {}", path.display(), e.message)))
}

pub(super) fn restore_into(
    backup: &Path,
    dir: &Path,
    members: BTreeMap<NodeId, String>,
    mirror: Option<String>,
) -> Result<()> {
    let snap = new_snap_dir(dir)?;
    let mut f = std::fs::File::open(backup).map_err(|e| {
        Error::invalid(format!(
            "cannot read the snapshot {}: {e}",
            backup.display()
        ))
    })?;
    let (last, mut mvcc) = if is_etcd_snapshot(&mut f) {
        // A file real etcd saved: the store at its revisions, under a log that starts anew.
        (
            openraft::LogId::new(openraft::CommittedLeaderId::new(1, 0), 1),
            read_etcd_snapshot(backup)?,
        )
    } else {
        let (meta, mvcc) = read_snapshot(&mut f, backup, &snap)?;
        let last = meta
            .last_log_id
            .ok_or_else(|| Error::invalid(format!("{} holds an empty store", backup.display())))?;
        (last, mvcc)
    };
    // A new cluster: the old one's member names and removals do not apply to it.
    mvcc.forget_members();
    mvcc.mirror = mirror;
    start_anew(dir, last, &mvcc, members, "restored")
}

/// `dir`'s snapshot directory, made.
fn new_snap_dir(dir: &Path) -> Result<PathBuf> {
    let snap = dir.join("snap");
    std::fs::create_dir_all(&snap).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot create {}: {e}", snap.display()),
        )
    })?;
    Ok(snap)
}

/// Writes `dir`'s snapshot and log for a cluster of `members` that starts from `mvcc` after
/// `last`: a snapshot of the store, and a log purged up to `last` with a vote at its term,
/// so that the new cluster's terms go on from there.
fn start_anew(
    dir: &Path,
    last: openraft::LogId<NodeId>,
    mvcc: &Mvcc,
    members: BTreeMap<NodeId, String>,
    why: &str,
) -> Result<()> {
    let snap = dir.join("snap");
    let voters = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .into_iter()
        .map(|(id, addr)| (id, BasicNode { addr }))
        .collect();
    let membership = openraft::Membership::new(vec![voters], nodes);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("{why}-{}", last.index),
    };
    write_snapshot_with(&snap, |f| write_snapshot_stream(f, &meta, mvcc))?;
    let (wal, _) = Wal::open(&dir.join("wal"))?;
    wal.write_blocking(vec![
        Record::Purge {
            upto: last.index,
            data: pack(&Some(last)),
        },
        Record::Committed(pack(&Some(last))),
        Record::Vote(pack(&Vote::<NodeId>::new(last.leader_id.term, 0))),
    ])
}

/// etcd's `--force-new-cluster`: makes the member in `dir` the only member of a new cluster,
/// with every entry its log holds — the way back from losing a cluster's quorum for good.
/// Unlike etcd, which drops the entries its member had not learned were committed, the
/// node keeps them: the lost members may have committed (and acknowledged) them, and the
/// member's record of the commit index is written lazily, so it may lag what it applied
/// and served. A write whose client saw a timeout may therefore be there.
/// The old snapshot and log are set aside first and put back if this fails; they are
/// removed once the new ones are written.
pub fn force_new_cluster(dir: &Path, id: NodeId, peer_url: String) -> Result<()> {
    let io = |what: &str, e: std::io::Error| {
        Error::new(
            ErrorKind::Internal,
            format!(
                "--force-new-cluster: cannot {what} in {}: {e}",
                dir.display()
            ),
        )
    };
    let (snap, wal) = (dir.join("snap"), dir.join("wal"));
    let (old_snap, old_wal) = (dir.join("snap.before-force"), dir.join("wal.before-force"));
    // Set aside by an attempt that failed half-way: those are the member's data.
    for (old, new) in [(&old_snap, &snap), (&old_wal, &wal)] {
        if old.exists() {
            let _ = std::fs::remove_dir_all(new);
            std::fs::rename(old, new).map_err(|e| io("take back the old data", e))?;
        }
    }
    std::fs::rename(&snap, &old_snap).map_err(|e| io("set the snapshot aside", e))?;
    std::fs::rename(&wal, &old_wal).map_err(|e| io("set the log aside", e))?;
    let forced = force_into(dir, &old_snap, &old_wal, id, peer_url);
    if forced.is_err() {
        let _ = std::fs::remove_dir_all(&snap);
        let _ = std::fs::remove_dir_all(&wal);
        let _ = std::fs::rename(&old_snap, &snap);
        let _ = std::fs::rename(&old_wal, &wal);
        return forced;
    }
    let _ = std::fs::remove_dir_all(&old_snap);
    let _ = std::fs::remove_dir_all(&old_wal);
    Ok(())
}

fn force_into(
    dir: &Path,
    old_snap: &Path,
    old_wal: &Path,
    id: NodeId,
    peer_url: String,
) -> Result<()> {
    use openraft::EntryPayload;
    let snap = new_snap_dir(dir)?;
    let (mut last, mut mvcc) = match load_snapshot(&snapshot_path(old_snap), &snap)? {
        Some((meta, mvcc)) => (meta.last_log_id, mvcc),
        None => (None, Mvcc::new()),
    };
    let (wal, recovered) = Wal::open(old_wal)?;
    drop(wal);
    let mut events = Vec::new();
    for data in recovered
        .entries
        .range(last.map_or(0, |l| l.index + 1)..)
        .map(|e| e.1)
    {
        let entry: openraft::Entry<super::TypeConfig> = super::unpack(data)?;
        if let EntryPayload::Normal(cmd) = entry.payload {
            // A command refused when it was applied is refused again: the store is the same.
            let _ = super::state_machine::apply_command(&mut mvcc, cmd, &mut events);
            events.clear();
        }
        last = Some(entry.log_id);
    }
    let last = last.ok_or_else(|| {
        Error::invalid(format!(
            "--force-new-cluster: {} holds no data",
            dir.display()
        ))
    })?;
    mvcc.forget_members();
    start_anew(dir, last, &mvcc, BTreeMap::from([(id, peer_url)]), "forced")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::io::Cursor;

    /// `bytes` sent as a backup in pieces of `piece` bytes: the remaining counts must add
    /// up, and the SHA-256 come last, alone.
    fn sent(bytes: &[u8], piece: usize) -> Vec<u8> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let backup = Backup {
            file,
            len: bytes.len() as u64,
        };
        let mut out = Vec::new();
        backup
            .send(piece, |blob, remaining| {
                out.extend_from_slice(&blob);
                let file = (out.len() as u64).min(bytes.len() as u64);
                assert_eq!(file + remaining, bytes.len() as u64);
                true
            })
            .unwrap();
        assert_eq!(out.len(), bytes.len() + 32);
        out
    }

    /// A backup of the format before etcd's file: padded to 512 bytes, then the SHA-256.
    fn framed(bytes: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        let mut out = bytes.to_vec();
        out.resize(bytes.len().div_ceil(BACKUP_ALIGN) * BACKUP_ALIGN, 0);
        let sum = sha2::Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    #[test]
    fn a_backup_is_sent_as_etcd_sends_it() {
        use sha2::Digest;
        for len in [0, 1, 4096, 100_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let out = sent(&bytes, 32 * 1024);
            assert_eq!(&out[..len], &bytes[..]);
            assert_eq!(&out[len..], sha2::Sha256::digest(&bytes).as_slice());
        }
    }

    /// A snapshot file as one value: `snapshot_path`'s format written whole, to check the
    /// streamed writer and the checks against.
    #[derive(Serialize, Deserialize)]
    struct SnapshotFile {
        meta: SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    }

    /// The crc of a snapshot file and the part before the store's bytes.
    fn snapshot_head(file: &SnapshotFile) -> ([u8; 4], Vec<u8>) {
        let mut head = pack(&file.meta);
        head.extend_from_slice(&(file.data.len() as u64).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&file.data);
        (crc.finalize().to_be_bytes(), head)
    }

    /// `check_snapshot` of a file holding `bytes`.
    fn check(bytes: &[u8], path: &Path) -> Result<u64> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        check_snapshot(&mut f, path)
    }

    fn file(data_len: usize) -> SnapshotFile {
        SnapshotFile {
            meta: SnapshotMeta::default(),
            data: vec![7; data_len],
        }
    }

    /// The member's own file and a backup stream parse alike; a changed byte in either is
    /// refused as corrupt — whatever the length (a file whose length looks framed included).
    #[test]
    fn snapshot_files_and_backups_are_checked() {
        let path = Path::new("test.snap");
        for len in [0, 1, 400, 512, 5000] {
            let f = file(len);
            let (crc, head) = snapshot_head(&f);
            let plain = [&crc[..], &head, &f.data].concat();
            let backup = framed(&plain);
            assert_eq!(backup.len() % BACKUP_ALIGN, 32);
            for bytes in [plain.clone(), backup] {
                assert_eq!(check(&bytes, path).unwrap(), plain.len() as u64);
                for at in [0, 5, bytes.len() - 1] {
                    let mut bad = bytes.clone();
                    bad[at] ^= 0x40;
                    let e = check(&bad, path).err();
                    assert_eq!(e.map(|e| e.kind), Some(ErrorKind::DataLoss), "{len} {at}");
                }
            }
        }
    }

    /// A store streamed into a snapshot file is the same file as one written from its bytes.
    #[test]
    fn a_streamed_snapshot_is_the_file_written_whole() {
        let mut mvcc = Mvcc::new();
        for i in 0..100 {
            mvcc.put(crate::pb::etcdserverpb::PutRequest {
                key: format!("k{i}").into_bytes(),
                value: vec![b'v'; i],
                ..Default::default()
            })
            .unwrap();
        }
        let whole = SnapshotFile {
            meta: SnapshotMeta::default(),
            data: mvcc.image(),
        };
        let (crc, head) = snapshot_head(&whole);
        let mut streamed = Cursor::new(b"before".to_vec());
        streamed.set_position(6);
        write_snapshot_stream(&mut streamed, &whole.meta, &mvcc).unwrap();
        let streamed = streamed.into_inner();
        assert_eq!(&streamed[6..], [&crc[..], &head, &whole.data].concat());
        assert_eq!(&streamed[..6], b"before");
    }
}
