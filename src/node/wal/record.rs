//! What the log remembers, and how each record is framed on disk.

/// A segment is closed and a new one started once it holds this many bytes.
pub(crate) const SEGMENT_BYTES: u64 = 16 << 20;
pub(super) const MAGIC: &[u8; 8] = b"ETCDCWL1";
pub(super) const FRAME: usize = 8;

pub(super) const ENTRY: u8 = 1;
pub(super) const VOTE: u8 = 2;
pub(super) const COMMITTED: u8 = 3;
pub(super) const TRUNCATE: u8 = 4;
pub(super) const PURGE: u8 = 5;

/// One thing the log remembers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The entry at `index`; entries at `index` and after that were there before are gone.
    Entry { index: u64, data: Vec<u8> },
    /// The vote (the latest one counts).
    Vote(Vec<u8>),
    /// The last known committed log id (the latest one counts).
    Committed(Vec<u8>),
    /// Entries from `from` on are gone (a conflicting suffix).
    Truncate { from: u64 },
    /// Entries up to `upto` are gone (behind a snapshot); `data` is the purged log id.
    Purge { upto: u64, data: Vec<u8> },
}

impl Record {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME]);
        match self {
            Record::Entry { index, data } => {
                out.push(ENTRY);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(data);
            }
            Record::Vote(data) => {
                out.push(VOTE);
                out.extend_from_slice(data);
            }
            Record::Committed(data) => {
                out.push(COMMITTED);
                out.extend_from_slice(data);
            }
            Record::Truncate { from } => {
                out.push(TRUNCATE);
                out.extend_from_slice(&from.to_be_bytes());
            }
            Record::Purge { upto, data } => {
                out.push(PURGE);
                out.extend_from_slice(&upto.to_be_bytes());
                out.extend_from_slice(data);
            }
        }
        let body = &out[start + FRAME..];
        let len = (body.len() as u32).to_be_bytes();
        let crc = crc32fast::hash(body).to_be_bytes();
        out[start..start + 4].copy_from_slice(&len);
        out[start + 4..start + FRAME].copy_from_slice(&crc);
    }

    pub(super) fn decode(body: &[u8]) -> Option<Record> {
        let (&kind, rest) = body.split_first()?;
        let index = |b: &[u8]| Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?));
        Some(match kind {
            ENTRY => Record::Entry {
                index: index(rest)?,
                data: rest[8..].to_vec(),
            },
            VOTE => Record::Vote(rest.to_vec()),
            COMMITTED => Record::Committed(rest.to_vec()),
            TRUNCATE if rest.len() == 8 => Record::Truncate { from: index(rest)? },
            PURGE => Record::Purge {
                upto: index(rest)?,
                data: rest[8..].to_vec(),
            },
            _ => return None,
        })
    }
}
