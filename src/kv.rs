//! Key-value logic that the C ABI, the recipes and the node share: which keys a request
//! covers (`Span` on the way in, `KeyRange` on the way through) and compare-and-swap.

use crate::api::{Deadline, Etcd};
use crate::error::{Error, ErrorKind, Result};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::*;

/// Which keys a get, delete or watch covers, given its key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Span {
    /// The key alone.
    #[default]
    Key,
    /// Every key that starts with the key.
    Prefix,
    /// Every key from the key on.
    FromKey,
    /// Keys in [key, end).
    RangeEnd(Vec<u8>),
}

impl Span {
    /// The span [key, end); an empty end is refused.
    pub fn range(end: &[u8]) -> Result<Span> {
        if end.is_empty() {
            return Err(Error::invalid("range end is empty"));
        }
        Ok(Span::RangeEnd(end.to_vec()))
    }

    /// A request's key and range end. An empty key means "every key" for a prefix or
    /// from-key span (etcd's key "\0" with range end "\0") and is refused otherwise.
    pub fn resolve(&self, key: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        if key.is_empty() {
            return match self {
                Span::Prefix | Span::FromKey => Ok((vec![0], vec![0])),
                _ => Err(Error::invalid("key is empty")),
            };
        }
        let end = match self {
            Span::Key => Vec::new(),
            Span::Prefix => prefix_end(key),
            Span::FromKey => vec![0],
            Span::RangeEnd(end) => end.clone(),
        };
        Ok((key.to_vec(), end))
    }
}

/// The keys a request's `key` and `range_end` select, by etcd's rule: the key alone for an
/// empty end, every key from `key` on for "\0", else [key, end) — nothing when end <= key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    Key(&'a [u8]),
    From(&'a [u8]),
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Key(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Key(key) => k == key,
            KeyRange::From(start) => k >= start,
            KeyRange::Between(start, end) => k >= start && k < end,
        }
    }
}

/// The range end that selects every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented; `[0]` (every key) when none is.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// What a compare-and-swap expects of the key before it writes.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    /// The key does not exist (its create revision is 0).
    Absent,
    /// The key's value is exactly this (an empty slice: the empty value).
    Value(&'a [u8]),
}

/// Writes `put` only if the key is as `expect` says, in one transaction; otherwise nothing is
/// written and the error is `CompareFailed`. The response is the put's, with the txn header.
pub async fn compare_and_put(
    etcd: &dyn Etcd,
    put: PutRequest,
    expect: Expect<'_>,
    deadline: Deadline,
) -> Result<PutResponse> {
    let target_union = match expect {
        Expect::Absent => TargetUnion::CreateRevision(0),
        Expect::Value(v) => TargetUnion::Value(v.to_vec()),
    };
    let target = match expect {
        Expect::Absent => CompareTarget::Create,
        Expect::Value(_) => CompareTarget::Value,
    };
    let req = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: target as i32,
            key: put.key.clone(),
            target_union: Some(target_union),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put)),
        }],
        failure: vec![],
    };
    let resp = etcd.txn(req, deadline).await?;
    if !resp.succeeded {
        return Err(Error::new(
            ErrorKind::CompareFailed,
            match expect {
                Expect::Absent => "compare failed: the key exists",
                Expect::Value(_) => "compare failed: the key's value differs",
            },
        ));
    }
    let header = resp.header;
    resp.responses
        .into_iter()
        .find_map(|op| match op.response {
            Some(Response::ResponsePut(mut p)) => {
                p.header = p.header.or(header);
                Some(p)
            }
            _ => None,
        })
        .ok_or_else(|| Error::new(ErrorKind::Internal, "the txn answered without its put"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_resolve_as_etcd_does() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(Span::Key.resolve(b"k").unwrap(), (b"k".to_vec(), vec![]));
        assert_eq!(Span::Prefix.resolve(b"").unwrap(), (vec![0], vec![0]));
        assert_eq!(
            Span::FromKey.resolve(b"k").unwrap(),
            (b"k".to_vec(), vec![0])
        );
        assert!(Span::Key.resolve(b"").is_err());
        assert!(Span::range(b"").is_err());
        assert_eq!(
            Span::range(b"z").unwrap().resolve(b"a").unwrap(),
            (b"a".to_vec(), b"z".to_vec())
        );
    }
}
