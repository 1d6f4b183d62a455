//! bbolt's file format, the subset etcd's backend file needs: top-level buckets of sorted
//! key-values, written in one go and read whole. etcd's snapshot (`etcdctl snapshot save`)
//! is such a file plus a SHA-256; this is how the node speaks it both ways. Written here
//! rather than taken from a crate: what etcd needs is small (no transactions, no free pages,
//! no nested buckets below the top level), and the layout is checked against real bbolt
//! (etcd and etcdctl read what this writes; this reads what they write).
//!
//! The layout (bbolt's, little-endian as on every machine etcd runs on): pages of
//! `PAGE` bytes; pages 0 and 1 hold the meta (magic, version, page size, the root bucket,
//! the freelist page, the page count, a transaction id, an FNV-1a checksum); page 2 an empty
//! freelist; then each bucket's B+tree — leaf pages of elements (flags, position, key and
//! value sizes) followed by the keys and values, branch pages of (position, key size, child)
//! with each child's first key — and the root bucket's tree, whose values are the buckets'
//! headers (root page, sequence). A page too small for its elements spans more pages
//! (`overflow`).

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};

use crate::error::{Error, ErrorKind, Result};

/// Every top-level bucket by name, each key to its value.
pub type Buckets = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

const PAGE: usize = 4096;
const HEADER: usize = 16;
const ELEMENT: usize = 16;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const FREELIST: u16 = 0x10;
/// A leaf element whose value is a bucket's header.
const BUCKET: u32 = 0x01;

fn damaged(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::DataLoss,
        format!("not a bbolt file, or a damaged one: {what}"),
    )
}

/// The file for `buckets`, built in memory.
pub fn write(buckets: &Buckets) -> Vec<u8> {
    let mut w = Writer::new(std::io::Cursor::new(Vec::new()));
    let written = buckets.iter().try_for_each(|(name, items)| {
        w.bucket(name)?;
        items.iter().try_for_each(|(k, v)| w.put(k, v))
    });
    match written.and_then(|_| w.finish()) {
        Ok(out) => out.into_inner(),
        Err(e) => unreachable!("writing into memory failed: {e}"),
    }
}

/// bbolt's meta checksum: FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes a file as a stream: bucket by bucket (`bucket`, then its keys in order with
/// `put`), each leaf page written as soon as it is full, so that only one page of
/// key-values and the first key of each page are ever held; `finish` writes the root
/// bucket and goes back for the meta pages.
pub struct Writer<W> {
    pages: Pages<W>,
    /// The bucket being written and its pages so far.
    open: Option<(Vec<u8>, Tree)>,
    /// Each written bucket's name and header.
    done: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<W: Write + Seek> Writer<W> {
    pub fn new(out: W) -> Writer<W> {
        Writer {
            pages: Pages {
                out,
                next: 3,
                placed: false,
            },
            open: None,
            done: Vec::new(),
        }
    }

    /// Starts the bucket `name` (closing the one before): `put` its keys next, in order.
    pub fn bucket(&mut self, name: &[u8]) -> std::io::Result<()> {
        self.close()?;
        self.open = Some((name.to_vec(), Tree::default()));
        Ok(())
    }

    /// A key of the open bucket, after every key put in it before.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        match &mut self.open {
            Some((_, tree)) => tree.add(&mut self.pages, key, value, 0),
            None => Err(std::io::Error::other("bolt: a key outside any bucket")),
        }
    }

    fn close(&mut self) -> std::io::Result<()> {
        if let Some((name, tree)) = self.open.take() {
            let page = tree.finish(&mut self.pages, 0)?;
            let mut header = page.to_le_bytes().to_vec();
            header.extend_from_slice(&0u64.to_le_bytes());
            self.done.push((name, header));
        }
        Ok(())
    }

    /// Writes the root bucket, the freelist and the meta pages: the file is complete, and
    /// `out` stands at its end.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.close()?;
        self.done.sort();
        let mut tree = Tree::default();
        for (name, header) in &self.done {
            tree.add(&mut self.pages, name, header, BUCKET)?;
        }
        let root_page = tree.finish(&mut self.pages, BUCKET)?;
        let pages = self.pages.next;
        let mut head = vec![0; 3 * PAGE];
        // The freelist: empty.
        head[2 * PAGE..2 * PAGE + 8].copy_from_slice(&2u64.to_le_bytes());
        head[2 * PAGE + 8..2 * PAGE + 10].copy_from_slice(&FREELIST.to_le_bytes());
        for txid in 0..2u64 {
            let at = txid as usize * PAGE;
            head[at..at + 8].copy_from_slice(&txid.to_le_bytes());
            head[at + 8..at + 10].copy_from_slice(&META.to_le_bytes());
            let mut meta = Vec::with_capacity(72);
            meta.extend_from_slice(&MAGIC.to_le_bytes());
            meta.extend_from_slice(&VERSION.to_le_bytes());
            meta.extend_from_slice(&(PAGE as u32).to_le_bytes());
            meta.extend_from_slice(&0u32.to_le_bytes());
            meta.extend_from_slice(&root_page.to_le_bytes());
            meta.extend_from_slice(&0u64.to_le_bytes());
            meta.extend_from_slice(&2u64.to_le_bytes());
            meta.extend_from_slice(&pages.to_le_bytes());
            meta.extend_from_slice(&txid.to_le_bytes());
            meta.extend_from_slice(&fnv1a(&meta).to_le_bytes());
            head[at + HEADER..at + HEADER + meta.len()].copy_from_slice(&meta);
        }
        let mut out = self.pages.out;
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&head)?;
        out.seek(SeekFrom::Start(pages * PAGE as u64))?;
        Ok(out)
    }
}

/// A B+tree on its way out: the leaf being filled, and the leaves written so far.
#[derive(Default)]
struct Tree {
    pending: Vec<(Vec<u8>, Vec<u8>)>,
    used: usize,
    leaves: Vec<(Vec<u8>, u64)>,
}

impl Tree {
    /// Adds an element, writing the leaf first if it would not fit (one element at least
    /// per leaf: a larger one overflows; at most 0xFFFF).
    fn add<W: Write + Seek>(
        &mut self,
        pages: &mut Pages<W>,
        key: &[u8],
        value: &[u8],
        kind: u32,
    ) -> std::io::Result<()> {
        let cost = ELEMENT + key.len() + value.len();
        if !self.pending.is_empty()
            && (HEADER + self.used + cost > PAGE || self.pending.len() == 0xFFFE)
        {
            self.write_leaf(pages, kind)?;
        }
        self.used += cost;
        self.pending.push((key.to_vec(), value.to_vec()));
        Ok(())
    }

    fn write_leaf<W: Write + Seek>(
        &mut self,
        pages: &mut Pages<W>,
        kind: u32,
    ) -> std::io::Result<()> {
        let first = self.pending.first().map_or(Vec::new(), |e| e.0.clone());
        let page = pages.leaf(&self.pending, kind)?;
        self.leaves.push((first, page));
        self.pending.clear();
        self.used = 0;
        Ok(())
    }

    /// Writes the last leaf and the branch levels over the leaves: the tree's root page.
    fn finish<W: Write + Seek>(mut self, pages: &mut Pages<W>, kind: u32) -> std::io::Result<u64> {
        // The last leaf, or the only one (empty) of an empty bucket.
        if !self.pending.is_empty() || self.leaves.is_empty() {
            self.write_leaf(pages, kind)?;
        }
        let mut level = self.leaves;
        while level.len() > 1 {
            let mut up = Vec::new();
            for range in chunks(level.iter().map(|c| c.0.len())) {
                let first = level[range.start].0.clone();
                up.push((first, pages.branch(&level[range])?));
            }
            level = up;
        }
        Ok(level[0].1)
    }
}

/// Pages written one after another from page 3 on (a buffered `out` stays buffered).
struct Pages<W> {
    out: W,
    next: u64,
    /// Whether `out` stands at page 3 or after.
    placed: bool,
}

impl<W: Write + Seek> Pages<W> {
    /// Writes a page of `size` bytes (more pages if it needs them) at its place in the
    /// file, `fill` writing its flags and count and everything after them.
    fn emit(&mut self, size: usize, fill: impl FnOnce(&mut [u8])) -> std::io::Result<u64> {
        let pages = size.div_ceil(PAGE).max(1);
        let mut buf = vec![0; pages * PAGE];
        let id = self.next;
        buf[..8].copy_from_slice(&id.to_le_bytes());
        buf[12..16].copy_from_slice(&(pages as u32 - 1).to_le_bytes());
        fill(&mut buf);
        if !self.placed {
            self.out.seek(SeekFrom::Start(id * PAGE as u64))?;
            self.placed = true;
        }
        self.out.write_all(&buf)?;
        self.next += pages as u64;
        Ok(id)
    }

    fn leaf(&mut self, entries: &[(Vec<u8>, Vec<u8>)], kind: u32) -> std::io::Result<u64> {
        let data: usize = entries.iter().map(|e| e.0.len() + e.1.len()).sum();
        self.emit(HEADER + ELEMENT * entries.len() + data, |p| {
            p[8..10].copy_from_slice(&LEAF.to_le_bytes());
            p[10..12].copy_from_slice(&(entries.len() as u16).to_le_bytes());
            let mut off = HEADER + ELEMENT * entries.len();
            for (i, (key, value)) in entries.iter().enumerate() {
                let elem = HEADER + ELEMENT * i;
                let pos = (off - elem) as u32;
                p[elem..elem + 4].copy_from_slice(&kind.to_le_bytes());
                p[elem + 4..elem + 8].copy_from_slice(&pos.to_le_bytes());
                p[elem + 8..elem + 12].copy_from_slice(&(key.len() as u32).to_le_bytes());
                p[elem + 12..elem + 16].copy_from_slice(&(value.len() as u32).to_le_bytes());
                p[off..off + key.len()].copy_from_slice(key);
                off += key.len();
                p[off..off + value.len()].copy_from_slice(value);
                off += value.len();
            }
        })
    }

    fn branch(&mut self, children: &[(Vec<u8>, u64)]) -> std::io::Result<u64> {
        let data: usize = children.iter().map(|c| c.0.len()).sum();
        self.emit(HEADER + ELEMENT * children.len() + data, |p| {
            p[8..10].copy_from_slice(&BRANCH.to_le_bytes());
            p[10..12].copy_from_slice(&(children.len() as u16).to_le_bytes());
            let mut off = HEADER + ELEMENT * children.len();
            for (i, (key, child)) in children.iter().enumerate() {
                let elem = HEADER + ELEMENT * i;
                let pos = (off - elem) as u32;
                p[elem..elem + 4].copy_from_slice(&pos.to_le_bytes());
                p[elem + 4..elem + 8].copy_from_slice(&(key.len() as u32).to_le_bytes());
                p[elem + 8..elem + 16].copy_from_slice(&child.to_le_bytes());
                p[off..off + key.len()].copy_from_slice(key);
                off += key.len();
            }
        })
    }
}

/// Elements of the given data sizes cut into pages: each page as full as one page allows
/// (one element at least; a larger one overflows), at most 0xFFFF elements.
fn chunks(sizes: impl Iterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut used, mut n) = (0, HEADER, 0);
    for (i, size) in sizes.enumerate() {
        let cost = ELEMENT + size;
        if i > start && (used + cost > PAGE || i - start == 0xFFFE) {
            out.push(start..i);
            start = i;
            used = HEADER;
        }
        used += cost;
        n = i + 1;
    }
    if n > start || out.is_empty() {
        out.push(start..n);
    }
    out
}

/// Reads the file `bytes` (a snapshot's trailing SHA-256 removed).
pub fn read(bytes: &[u8]) -> Result<Buckets> {
    let mut buckets = Buckets::new();
    for name in visit(bytes, &mut |bucket, k, v| {
        buckets
            .entry(bucket.to_vec())
            .or_default()
            .insert(k.to_vec(), v.to_vec());
        Ok(())
    })? {
        buckets.entry(name).or_default();
    }
    Ok(buckets)
}

/// Reads the file `bytes` as a stream: `f(bucket, key, value)` for every key of every
/// top-level bucket, in order, nothing copied. Returns the buckets' names.
pub fn visit(
    bytes: &[u8],
    f: &mut impl FnMut(&[u8], &[u8], &[u8]) -> Result<()>,
) -> Result<Vec<Vec<u8>>> {
    let r = Reader::open(bytes)?;
    let mut top = Vec::new();
    let mut seen = std::collections::HashSet::new();
    r.walk(Node::Page(r.root), &mut seen, &mut |k, v, flags| {
        if flags & BUCKET == 0 {
            return Err(damaged("a plain key in the root bucket"));
        }
        top.push((k, v));
        Ok(())
    })?;
    for (name, header) in &top {
        let node = r.bucket(header)?;
        r.walk(node, &mut seen, &mut |k, v, flags| {
            // Buckets nested in a top-level bucket: etcd has none; skipped.
            if flags & BUCKET == 0 {
                f(name, k, v)?;
            }
            Ok(())
        })?;
    }
    Ok(top.into_iter().map(|(name, _)| name.to_vec()).collect())
}

struct Reader<'a> {
    bytes: &'a [u8],
    page: usize,
    root: u64,
}

/// Where a bucket's tree starts: a page, or a page inline in the bucket's header.
#[derive(Clone, Copy)]
enum Node<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| damaged("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| damaged("truncated"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
        .ok_or_else(|| damaged("truncated"))
}

impl<'a> Reader<'a> {
    fn open(bytes: &'a [u8]) -> Result<Reader<'a>> {
        // The valid meta with the highest transaction id; the page size is in the meta.
        let mut best: Option<(u64, usize, u64)> = None;
        let first_size = u32_at(bytes, HEADER + 8).unwrap_or(PAGE as u32) as usize;
        for at in [0, first_size, PAGE] {
            let m = at + HEADER;
            let Ok(magic) = u32_at(bytes, m) else {
                continue;
            };
            let meta = match bytes.get(m..m + 64) {
                Some(meta) => meta,
                None => continue,
            };
            let valid = magic == MAGIC
                && u32_at(meta, 4)? == VERSION
                && u64_at(meta, 56)? == fnv1a(&meta[..56]);
            if !valid {
                continue;
            }
            let page = u32_at(meta, 8)? as usize;
            let (root, txid) = (u64_at(meta, 16)?, u64_at(meta, 48)?);
            if best.is_none_or(|b| txid > b.2) {
                best = Some((root, page, txid));
            }
        }
        let (root, page, _) = best.ok_or_else(|| damaged("no valid meta page"))?;
        if !(512..=65536).contains(&page) {
            return Err(damaged(format!("page size {page}")));
        }
        Ok(Reader { bytes, page, root })
    }

    fn bucket(&self, header: &'a [u8]) -> Result<Node<'a>> {
        match u64_at(header, 0)? {
            0 => Ok(Node::Inline(
                header.get(16..).ok_or_else(|| damaged("bucket header"))?,
            )),
            root => Ok(Node::Page(root)),
        }
    }

    /// The page (its header first) a node is on.
    fn node(&self, node: Node<'a>) -> Result<&'a [u8]> {
        match node {
            Node::Inline(p) => Ok(p),
            Node::Page(id) => {
                let at = (id as usize)
                    .checked_mul(self.page)
                    .ok_or_else(|| damaged("page id"))?;
                let overflow = u32_at(self.bytes, at + 12)? as usize;
                let end = at + (overflow + 1) * self.page;
                self.bytes
                    .get(at..end.min(self.bytes.len()))
                    .ok_or_else(|| damaged(format!("page {id} beyond the file")))
            }
        }
    }

    /// Calls `f(key, value, flags)` for every element under `node`, in key order. A page
    /// met twice (`seen`) is damage: a tree has none.
    fn walk(
        &self,
        node: Node<'a>,
        seen: &mut std::collections::HashSet<u64>,
        f: &mut dyn FnMut(&'a [u8], &'a [u8], u32) -> Result<()>,
    ) -> Result<()> {
        if let Node::Page(id) = node {
            if !seen.insert(id) {
                return Err(damaged(format!("page {id} is in two places")));
            }
        }
        let p = self.node(node)?;
        let (flags, count) = (u16_at(p, 8)?, u16_at(p, 10)? as usize);
        for i in 0..count {
            let elem = HEADER + ELEMENT * i;
            if flags & LEAF != 0 {
                let kind = u32_at(p, elem)?;
                let pos = elem + u32_at(p, elem + 4)? as usize;
                let (ks, vs) = (
                    u32_at(p, elem + 8)? as usize,
                    u32_at(p, elem + 12)? as usize,
                );
                let key = p
                    .get(pos..pos + ks)
                    .ok_or_else(|| damaged("a key beyond its page"))?;
                let value = p
                    .get(pos + ks..pos + ks + vs)
                    .ok_or_else(|| damaged("a value beyond its page"))?;
                f(key, value, kind)?;
            } else if flags & BRANCH != 0 {
                let child = u64_at(p, elem + 8)?;
                self.walk(Node::Page(child), seen, f)?;
            } else {
                return Err(damaged(format!("page flags {flags:#x} in a tree")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(keys: usize, big: usize) -> Buckets {
        let mut b = Buckets::new();
        let key: BTreeMap<Vec<u8>, Vec<u8>> = (0..keys)
            .map(|i| {
                let v = if i % 97 == 0 {
                    vec![b'x'; big]
                } else {
                    format!("value {i}").into_bytes()
                };
                (format!("k{i:08}").into_bytes(), v)
            })
            .collect();
        b.insert(b"key".to_vec(), key);
        b.insert(
            b"meta".to_vec(),
            [(b"consistent_index".to_vec(), 7u64.to_be_bytes().to_vec())].into(),
        );
        b.insert(b"alarm".to_vec(), BTreeMap::new());
        b
    }

    #[test]
    fn what_is_written_reads_back() {
        for (keys, big) in [(0, 0), (1, 10), (50_000, 20_000)] {
            let b = sample(keys, big);
            let file = write(&b);
            assert_eq!(file.len() % PAGE, 0);
            assert_eq!(read(&file).unwrap(), b, "{keys} keys");
        }
    }

    #[test]
    fn damage_is_refused_not_panicked_on() {
        let file = write(&sample(2000, 100));
        assert_eq!(read(&file[..100]).unwrap_err().kind, ErrorKind::DataLoss);
        assert_eq!(read(&[]).unwrap_err().kind, ErrorKind::DataLoss);
        // Every byte of the first pages flipped in turn: an error or a result, never a panic.
        for i in (0..file.len()).step_by(37) {
            let mut bad = file.clone();
            bad[i] ^= 0xff;
            let _ = read(&bad);
        }
    }
}
