//! The store's image: the whole store as bytes (a Raft snapshot's payload), versioned and
//! self-contained, streamed both ways so that a large store is never held twice in memory.

use std::collections::BTreeSet;
use std::path::Path;

use super::{cost, spill_superseded, Attributes, LeaseEntry, Mvcc, Revision, Version};
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
    pub fn write_image(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        use prost::Message;
        fn put(out: &mut impl std::io::Write, v: u64) -> std::io::Result<()> {
            out.write_all(&v.to_be_bytes())
        }
        fn bytes(out: &mut impl std::io::Write, b: &[u8]) -> std::io::Result<()> {
            put(out, b.len() as u64)?;
            out.write_all(b)
        }
        out.write_all(&[IMAGE_FORMAT])?;
        put(out, self.rev as u64)?;
        put(out, self.compacted as u64)?;
        put(out, self.leases.len() as u64)?;
        for (id, l) in &self.leases {
            put(out, *id as u64)?;
            put(out, l.ttl as u64)?;
            put(out, l.keys.len() as u64)?;
            for k in &l.keys {
                bytes(out, k)?;
            }
        }
        put(out, self.keys.len() as u64)?;
        let mut kv_bytes = Vec::new();
        for (key, versions) in &self.keys {
            bytes(out, key)?;
            put(out, versions.len() as u64)?;
            for v in versions {
                put(out, v.rev.main as u64)?;
                put(out, v.rev.sub as u64)?;
                match self
                    .kv(key, v)
                    .map_err(|e| std::io::Error::other(e.message))?
                {
                    Some(kv) => {
                        out.write_all(&[1])?;
                        kv_bytes.clear();
                        kv.encode(&mut kv_bytes).map_err(std::io::Error::other)?;
                        bytes(out, &kv_bytes)?;
                    }
                    None => out.write_all(&[0])?,
                }
            }
        }
        put(out, self.alarms.len() as u64)?;
        for (member, alarm) in &self.alarms {
            put(out, *member)?;
            put(out, *alarm as u64)?;
        }
        put(out, self.attributes.len() as u64)?;
        for (id, a) in &self.attributes {
            put(out, *id)?;
            bytes(out, a.name.as_bytes())?;
            put(out, a.client_urls.len() as u64)?;
            for url in &a.client_urls {
                bytes(out, url.as_bytes())?;
            }
        }
        put(out, self.removed.len() as u64)?;
        for id in &self.removed {
            put(out, *id)?;
        }
        bytes(out, &crate::node::raft::pack(&self.auth))?;
        bytes(out, &crate::node::raft::pack(&self.mirror))?;
        Ok(())
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
        use prost::Message;
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
