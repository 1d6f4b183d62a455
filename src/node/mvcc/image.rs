//! The store's image: the whole store as bytes (a Raft snapshot's payload), versioned and
//! self-contained, streamed both ways so that a large store is never held twice in memory.

use std::collections::BTreeSet;
use std::io::Write;
use std::ops::Bound::{Excluded, Unbounded};
use std::ops::Deref;
use std::path::Path;

use prost::Message;

use super::{cost, spill_superseded, Attributes, LeaseEntry, Mvcc, Revision, Value, Version};
use crate::error::{Error, ErrorKind, Result};
use crate::node::history::History;
use crate::pb::mvccpb::KeyValue;

/// The image format's version: the first byte of `Mvcc::write_image`. Version 2 added the
/// alarms at the end, version 3 the members' attributes and removed members after them,
/// version 4 the auth store after those, version 5 the mirror's source after it; older
/// snapshots are read as having none.
const IMAGE_FORMAT: u8 = 5;

impl Mvcc {
    /// The whole store as bytes (a Raft snapshot): versioned, self-contained. The node
    /// streams it (`write_image`); the tests compare bytes.
    #[cfg(test)]
    pub fn image(&self) -> Vec<u8> {
        // About the size the quota counts (key + value + 64 per version): one allocation.
        let mut out = Vec::with_capacity(self.size as usize + 1024);
        // Writing into a Vec cannot fail.
        let _ = self.write_image(&mut out);
        out
    }

    /// `image`, written to `out` as it goes: a snapshot file is streamed, never held whole.
    pub fn write_image(&self, out: &mut impl Write) -> std::io::Result<()> {
        write_image_in_turns(|| self, usize::MAX, out).map(drop)
    }
}

/// `Mvcc::write_image` of the store as it stands at the first `turn()`, holding the store
/// for at most about `per_turn` versions at a time: each `turn()` gives the store (a read
/// lock's guard), dropped before the next, so that writes go on between turns. Writes only
/// add versions newer than the image's revision, which it leaves out; a compaction removes
/// older ones, so one between two turns ends the image with `ErrorKind::Interrupted` (to be
/// written again, in one turn). Says how many versions it wrote.
pub fn write_image_in_turns<G: Deref<Target = Mvcc>>(
    mut turn: impl FnMut() -> G,
    per_turn: usize,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    let first = turn();
    let (rev, compacted, count) = (first.rev, first.compacted, first.keys.len());
    out.write_all(&[IMAGE_FORMAT])?;
    num(out, rev as u64)?;
    num(out, compacted as u64)?;
    num(out, first.leases.len() as u64)?;
    for (id, l) in &first.leases {
        num(out, *id as u64)?;
        num(out, l.ttl as u64)?;
        num(out, l.keys.len() as u64)?;
        for k in &l.keys {
            bytes(out, k)?;
        }
    }
    // What follows the keys, as it is now.
    let mut tail = Vec::new();
    first.write_tail(&mut tail)?;
    num(out, count as u64)?;
    let (mut store, mut after, mut keys_written, mut versions_written) =
        (Some(first), None::<Vec<u8>>, 0, 0);
    let (mut spilled, mut scratch) = (Vec::new(), Vec::new());
    loop {
        let m = match store.take() {
            Some(m) => m,
            None => turn(),
        };
        if m.compacted != compacted {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "a compaction came while the store's image was written",
            ));
        }
        let keys = match &after {
            None => m.keys.range::<[u8], _>(..),
            Some(k) => m.keys.range::<[u8], _>((Excluded(&k[..]), Unbounded)),
        };
        let mut versions_now = 0;
        after = None;
        for (key, versions) in keys {
            // The versions at `rev` and before: none for a key created since.
            let at = versions.partition_point(|v| v.rev.main <= rev);
            if at == 0 {
                continue;
            }
            keys_written += 1;
            bytes(out, key)?;
            num(out, at as u64)?;
            for v in &versions[..at] {
                num(out, v.rev.main as u64)?;
                num(out, v.rev.sub as u64)?;
                match &v.value {
                    Some(value) => {
                        out.write_all(&[1])?;
                        let value = match value {
                            Value::Mem(b) => &b[..],
                            Value::Spilled(at) => {
                                m.history_file()
                                    .and_then(|past| past.read_into(*at, &mut spilled))
                                    .map_err(|e| std::io::Error::other(e.message))?;
                                &spilled[..]
                            }
                        };
                        write_kv(out, key, v, value, &mut scratch)?;
                    }
                    None => out.write_all(&[0])?,
                }
            }
            versions_now += at;
            versions_written += at as u64;
            if versions_now >= per_turn {
                after = Some(key.clone());
                break;
            }
        }
        if after.is_none() {
            break;
        }
    }
    if keys_written != count {
        // Only a compaction removes keys, and it was checked for at every turn.
        return Err(std::io::Error::other(format!(
            "the store's image has {keys_written} keys, not the {count} it announced"
        )));
    }
    out.write_all(&tail)?;
    Ok(versions_written)
}

/// `bytes` of the `KeyValue` that version `v` of `key` is (prost's encoding, fields in
/// order, zeros and empty values left out), written without building the message: the key
/// and value are not copied on the way.
fn write_kv(
    out: &mut impl Write,
    key: &[u8],
    v: &Version,
    value: &[u8],
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
    let ints = [(2, v.create_revision), (3, v.rev.main), (4, v.version)];
    let bytes_len = |tag, n: usize| match n {
        0 => 0,
        n => key_len(tag) + encoded_len_varint(n as u64) + n,
    };
    let int_len = |tag, n: i64| match n {
        0 => 0,
        n => key_len(tag) + encoded_len_varint(n as u64),
    };
    let len = bytes_len(1, key.len())
        + ints.iter().map(|&(tag, n)| int_len(tag, n)).sum::<usize>()
        + bytes_len(5, value.len())
        + int_len(6, v.lease);
    num(out, len as u64)?;
    let bytes_head = |scratch: &mut Vec<u8>, tag, len: usize| {
        encode_key(tag, WireType::LengthDelimited, scratch);
        encode_varint(len as u64, scratch);
    };
    scratch.clear();
    if !key.is_empty() {
        bytes_head(scratch, 1, key.len());
        out.write_all(scratch)?;
        out.write_all(key)?;
        scratch.clear();
    }
    for (tag, n) in ints {
        if n != 0 {
            prost::encoding::int64::encode(tag, &n, scratch);
        }
    }
    if !value.is_empty() {
        bytes_head(scratch, 5, value.len());
        out.write_all(scratch)?;
        out.write_all(value)?;
        scratch.clear();
    }
    if v.lease != 0 {
        prost::encoding::int64::encode(6, &v.lease, scratch);
    }
    out.write_all(scratch)
}

fn num(out: &mut impl Write, v: u64) -> std::io::Result<()> {
    out.write_all(&v.to_be_bytes())
}

fn bytes(out: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    num(out, b.len() as u64)?;
    out.write_all(b)
}

impl Mvcc {
    /// The image's part after the keys: alarms, members, auth and mirror.
    fn write_tail(&self, out: &mut impl Write) -> std::io::Result<()> {
        num(out, self.alarms.len() as u64)?;
        for (member, alarm) in &self.alarms {
            num(out, *member)?;
            num(out, *alarm as u64)?;
        }
        num(out, self.attributes.len() as u64)?;
        for (id, a) in &self.attributes {
            num(out, *id)?;
            bytes(out, a.name.as_bytes())?;
            num(out, a.client_urls.len() as u64)?;
            for url in &a.client_urls {
                bytes(out, url.as_bytes())?;
            }
        }
        num(out, self.removed.len() as u64)?;
        for id in &self.removed {
            num(out, *id)?;
        }
        bytes(out, &crate::node::raft::pack(&self.auth))?;
        bytes(out, &crate::node::raft::pack(&self.mirror))
    }

    /// A store from `image`'s bytes, all in memory (the node reads with `read_image`).
    #[cfg(test)]
    pub fn from_image(data: &[u8]) -> Result<Mvcc> {
        Mvcc::read_image(data, None)
    }

    /// A store from `image`'s bytes, read as they come, its superseded values going to a
    /// new history file in `history.0` (written every `history.1` bytes) key by key as they
    /// are read: neither the snapshot nor the store's whole history is ever in memory.
    pub fn read_image(data: impl std::io::Read, history: Option<(&Path, usize)>) -> Result<Mvcc> {
        let mut r = Reader { data };
        let format = r.byte()?;
        if !(1..=IMAGE_FORMAT).contains(&format) {
            return Err(Error::new(
                ErrorKind::DataLoss,
                "the snapshot has an unknown format version",
            ));
        }
        let mut m = Mvcc {
            rev: r.num()? as i64,
            compacted: r.num()? as i64,
            past: match history {
                Some((dir, piece)) => Some(History::create(dir, piece)?),
                None => None,
            },
            ..Default::default()
        };
        for _ in 0..r.num()? {
            let id = r.num()? as i64;
            let ttl = r.num()? as i64;
            let mut keys = BTreeSet::new();
            for _ in 0..r.num()? {
                keys.insert(r.bytes()?);
            }
            m.leases.insert(id, LeaseEntry { ttl, keys });
        }
        for _ in 0..r.num()? {
            let key = r.bytes()?;
            let count = r.num()? as usize;
            let mut versions = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                let rev = Revision {
                    main: r.num()? as i64,
                    sub: r.num()? as i64,
                };
                let version = match r.byte()? {
                    1 => Version::from_kv(
                        rev,
                        KeyValue::decode(&r.bytes()?[..]).map_err(|_| bad_image())?,
                    ),
                    _ => Version::tombstone(rev),
                };
                m.size += cost(&key, &version);
                versions.push(version);
            }
            if let Some(past) = &mut m.past {
                spill_superseded(past, &mut versions);
            }
            m.keys.insert(key, versions);
        }
        if format >= 2 {
            for _ in 0..r.num()? {
                m.alarms.insert((r.num()?, r.num()? as i32));
            }
        }
        if format >= 3 {
            let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| bad_image());
            for _ in 0..r.num()? {
                let id = r.num()?;
                let name = text(r.bytes()?)?;
                let mut client_urls = Vec::new();
                for _ in 0..r.num()? {
                    client_urls.push(text(r.bytes()?)?);
                }
                m.attributes.insert(id, Attributes { name, client_urls });
            }
            for _ in 0..r.num()? {
                m.removed.insert(r.num()?);
            }
        }
        if format >= 4 {
            m.auth = crate::node::raft::unpack(&r.bytes()?).map_err(|_| bad_image())?;
        }
        if format >= 5 {
            m.mirror = crate::node::raft::unpack(&r.bytes()?).map_err(|_| bad_image())?;
        }
        Ok(m)
    }
}

fn bad_image() -> Error {
    Error::new(ErrorKind::DataLoss, "the snapshot is malformed")
}

/// Reads `Mvcc::write_image`'s format from a stream.
struct Reader<R> {
    data: R,
}

impl<R: std::io::Read> Reader<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        self.data.read_exact(buf).map_err(|_| bad_image())
    }

    fn byte(&mut self) -> Result<u8> {
        let mut b = [0; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn num(&mut self) -> Result<u64> {
        let mut b = [0; 8];
        self.fill(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    /// A length-prefixed byte string; a length past the end fails without allocating it.
    fn bytes(&mut self) -> Result<Vec<u8>> {
        use std::io::Read;
        let n = self.num()?;
        let mut out = Vec::new();
        (&mut self.data)
            .take(n)
            .read_to_end(&mut out)
            .map_err(|_| bad_image())?;
        if out.len() as u64 != n {
            return Err(bad_image());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `write_kv` writes what prost writes for the `KeyValue`, zeros and empty parts too.
    #[test]
    fn a_version_is_written_as_prost_encodes_its_key_value() {
        let mut scratch = Vec::new();
        for (key, value, ints) in [
            (&b"k"[..], &b"v"[..], [1, 2, 3, 4]),
            (b"", b"", [0, 0, 0, 0]),
            (b"key", b"", [5, 0, 1, -1]),
            (&[7; 300][..], &[9; 200][..], [i64::MAX, 1 << 40, 0, 77]),
        ] {
            let v = Version {
                rev: Revision {
                    main: ints[1],
                    sub: 0,
                },
                create_revision: ints[0],
                version: ints[2],
                lease: ints[3],
                value: None,
            };
            let kv = KeyValue {
                key: key.to_vec(),
                create_revision: ints[0],
                mod_revision: ints[1],
                version: ints[2],
                value: value.to_vec(),
                lease: ints[3],
            };
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_kv(&mut ours, key, &v, value, &mut scratch).unwrap();
            bytes(&mut theirs, &kv.encode_to_vec()).unwrap();
            assert_eq!(ours, theirs, "{kv:?}");
        }
    }
}
