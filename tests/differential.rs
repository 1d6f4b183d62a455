//! The node's state machine against real etcd, request for request: a seeded random history
//! of puts, deletes, ranges (every option), transactions (nested, with every compare), leases
//! and compactions is sent to both, and every answer must be the same — the same key-values
//! with the same revisions and versions, the same counts and `more`, the same errors with
//! etcd's texts. Where they differ, the state machine is wrong.

mod support;

use etcdc::node::mvcc::Mvcc;
use etcdc::pb::etcdserverpb::compare::{CompareTarget, TargetUnion};
use etcdc::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use etcdc::pb::etcdserverpb::request_op::Request;
use etcdc::pb::etcdserverpb::response_op::Response;
use etcdc::pb::etcdserverpb::*;
use etcdc::Error;
use support::dl;

/// xorshift64*: a deterministic history without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const KEYS: &[&str] = &["/d/a", "/d/aa", "/d/b", "/d/b/x", "/d/c", "/e", "/f"];
const LEASES: &[i64] = &[0x51, 0x52];

struct Gen {
    rng: Rng,
    /// The revision the history is at (both stores agree on it, or the test has failed).
    rev: i64,
    compacted: i64,
}

impl Gen {
    fn key(&mut self) -> Vec<u8> {
        self.rng.pick(KEYS).as_bytes().to_vec()
    }

    fn span(&mut self) -> (Vec<u8>, Vec<u8>) {
        self.span_from(true)
    }

    /// A key span; `from_key` allows a range end of "\0" (everything from the key on).
    /// Transactions leave it out: etcd 3.4 panics applying a txn whose from-key delete
    /// covers a key it then puts with ignore_value (the node refuses such a txn; see
    /// `mvcc::Intervals`).
    fn span_from(&mut self, from_key: bool) -> (Vec<u8>, Vec<u8>) {
        match self.rng.below(5) {
            0 => (b"/d/".to_vec(), b"/d0".to_vec()),
            1 if from_key => (self.key(), vec![0]),
            2 => {
                let (a, b) = (self.key(), self.key());
                if a <= b {
                    (a, b)
                } else {
                    (b, a)
                }
            }
            _ => (self.key(), vec![]),
        }
    }

    fn revision(&mut self) -> i64 {
        match self.rng.below(10) {
            0 => self.rev + 1,
            1 if self.compacted > 1 => self.compacted - 1,
            2 | 3 if self.rev > 0 => {
                self.compacted.max(1)
                    + self
                        .rng
                        .below((self.rev - self.compacted.max(1) + 1) as u64)
                        as i64
            }
            _ => 0,
        }
    }

    fn range(&mut self) -> RangeRequest {
        let (key, range_end) = self.span();
        RangeRequest {
            key,
            range_end,
            limit: if self.rng.chance(30) {
                self.rng.below(4) as i64
            } else {
                0
            },
            revision: self.revision(),
            sort_order: if self.rng.chance(40) {
                self.rng.below(3) as i32
            } else {
                0
            },
            sort_target: if self.rng.chance(40) {
                self.rng.below(5) as i32
            } else {
                0
            },
            serializable: false,
            keys_only: self.rng.chance(15),
            count_only: self.rng.chance(10),
            min_mod_revision: if self.rng.chance(10) {
                self.rng.below(self.rev as u64 + 2) as i64
            } else {
                0
            },
            max_mod_revision: if self.rng.chance(10) {
                self.rng.below(self.rev as u64 + 2) as i64
            } else {
                0
            },
            min_create_revision: if self.rng.chance(10) {
                self.rng.below(self.rev as u64 + 2) as i64
            } else {
                0
            },
            max_create_revision: if self.rng.chance(10) {
                self.rng.below(self.rev as u64 + 2) as i64
            } else {
                0
            },
        }
    }

    fn put(&mut self) -> PutRequest {
        let ignore_value = self.rng.chance(8);
        let ignore_lease = self.rng.chance(8);
        PutRequest {
            key: self.key(),
            value: if ignore_value && self.rng.chance(80) {
                vec![]
            } else {
                format!("v{}", self.rng.below(5)).into_bytes()
            },
            lease: if ignore_lease && self.rng.chance(80) {
                0
            } else if self.rng.chance(25) {
                *self.rng.pick(LEASES)
            } else {
                0
            },
            prev_kv: self.rng.chance(50),
            ignore_value,
            ignore_lease,
        }
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = self.span();
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.rng.chance(50),
        }
    }

    fn compare(&mut self) -> Compare {
        let target = self.rng.below(5) as i32;
        let n = self.rng.below(self.rev as u64 + 2) as i64;
        let target_union = match CompareTarget::try_from(target).unwrap() {
            CompareTarget::Version => TargetUnion::Version(self.rng.below(4) as i64),
            CompareTarget::Create => TargetUnion::CreateRevision(n),
            CompareTarget::Mod => TargetUnion::ModRevision(n),
            CompareTarget::Value => {
                TargetUnion::Value(format!("v{}", self.rng.below(5)).into_bytes())
            }
            CompareTarget::Lease => TargetUnion::Lease(*self.rng.pick(&[0, LEASES[0], LEASES[1]])),
        };
        let (key, range_end) = if self.rng.chance(20) {
            self.span()
        } else {
            (self.key(), vec![])
        };
        Compare {
            result: self.rng.below(4) as i32,
            target,
            key,
            range_end,
            target_union: Some(target_union),
        }
    }

    fn ops(&mut self, depth: u32) -> Vec<RequestOp> {
        (0..self.rng.below(4))
            .map(|_| RequestOp {
                request: Some(match self.rng.below(if depth < 2 { 4 } else { 3 }) {
                    0 => Request::RequestRange(RangeRequest {
                        revision: 0,
                        ..self.range()
                    }),
                    1 => Request::RequestPut(self.put()),
                    2 => {
                        let (key, range_end) = self.span_from(false);
                        Request::RequestDeleteRange(DeleteRangeRequest {
                            key,
                            range_end,
                            prev_kv: self.rng.chance(50),
                        })
                    }
                    _ => Request::RequestTxn(self.txn(depth + 1)),
                }),
            })
            .collect()
    }

    fn txn(&mut self, depth: u32) -> TxnRequest {
        TxnRequest {
            compare: (0..self.rng.below(3)).map(|_| self.compare()).collect(),
            success: self.ops(depth),
            failure: self.ops(depth),
        }
    }
}

/// Only a header's revision is the state machine's business.
fn h(header: &mut Option<ResponseHeader>) {
    if let Some(x) = header {
        *x = ResponseHeader {
            revision: x.revision,
            ..Default::default()
        };
    }
}

fn norm_txn(t: &mut TxnResponse) {
    h(&mut t.header);
    for op in &mut t.responses {
        match &mut op.response {
            Some(Response::ResponseRange(r)) => h(&mut r.header),
            Some(Response::ResponsePut(p)) => h(&mut p.header),
            Some(Response::ResponseDeleteRange(d)) => h(&mut d.header),
            Some(Response::ResponseTxn(n)) => norm_txn(n),
            None => {}
        }
    }
}

fn same<T: PartialEq + std::fmt::Debug>(
    step: usize,
    what: &str,
    req: &dyn std::fmt::Debug,
    etcd: Result<T, Error>,
    node: Result<T, Error>,
) -> Option<T> {
    match (etcd, node) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "step {step}: {what} answers differ for {req:?}");
            Some(a)
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                (a.kind, &a.message),
                (b.kind, &b.message),
                "step {step}: {what} errors differ for {req:?}"
            );
            None
        }
        (a, b) => panic!("step {step}: {what} for {req:?}: etcd {a:?}, state machine {b:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_answers_as_etcd_does() {
    let Some(target) = support::remote_etcd() else {
        return;
    };
    let etcd = target.etcd;
    let cluster = target.cluster.as_ref().expect("a local etcd");
    let mut maintenance = MaintenanceClient::connect(cluster.client_url(0))
        .await
        .expect("etcd's maintenance service");
    let mut node = Mvcc::new();
    // Superseded values go to the history file at once, so every past read comes back
    // from it, as a member's do once written.
    let history = tempfile::tempdir().expect("temp dir");
    node.keep_history_in_pieces(history.path(), 1)
        .expect("history file");
    for id in LEASES {
        let req = LeaseGrantRequest { ttl: 600, id: *id };
        let a = etcd.lease_grant(req, dl()).await.map(|r| (r.id, r.ttl));
        let b = node.lease_grant(*id, 600, 2).map(|r| (r.id, r.ttl));
        same(0, "lease grant", &req, a, b);
    }
    let seed = std::env::var("ETCDC_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_e7cd);
    let steps: usize = std::env::var("ETCDC_DIFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let mut gen = Gen {
        rng: Rng(seed),
        rev: node.revision(),
        compacted: 0,
    };
    let (mut ranges, mut writes, mut txns, mut errors, mut hashes) = (0, 0, 0, 0, 0);
    for step in 1..=steps {
        // etcd's HashKV, at the current revision and a past one (compacted or not): the
        // same hash from the same history, so a copy can be checked against etcd.
        if step % 50 == 0 {
            for revision in [0, gen.revision()] {
                let a = maintenance
                    .hash_kv(HashKvRequest { revision })
                    .await
                    .map(|r| (r.get_ref().hash, r.get_ref().compact_revision))
                    .map_err(|s| s.message().to_string());
                let b = node.hash_kv(revision).map_err(|e| e.message);
                assert_eq!(a, b, "step {step}: hash at revision {revision}");
                hashes += 1;
            }
        }
        match gen.rng.below(100) {
            0..=29 => {
                let req = gen.range();
                let a = etcd.range(req.clone(), dl()).await.map(|mut r| {
                    h(&mut r.header);
                    r
                });
                let b = node.range(&req).map(|mut r| {
                    h(&mut r.header);
                    r
                });
                errors += same(step, "range", &req, a, b).is_none() as u32;
                ranges += 1;
            }
            30..=59 => {
                let req = gen.put();
                let a = etcd.put(req.clone(), dl()).await.map(|mut r| {
                    h(&mut r.header);
                    r
                });
                let b = node.put(req.clone()).map(|(mut r, _)| {
                    h(&mut r.header);
                    r
                });
                errors += same(step, "put", &req, a, b).is_none() as u32;
                writes += 1;
            }
            60..=74 => {
                let req = gen.delete();
                let a = etcd.delete_range(req.clone(), dl()).await.map(|mut r| {
                    h(&mut r.header);
                    r
                });
                let b = node.delete_range(req.clone()).map(|(mut r, _)| {
                    h(&mut r.header);
                    r
                });
                errors += same(step, "delete", &req, a, b).is_none() as u32;
                writes += 1;
            }
            75..=96 => {
                let req = gen.txn(0);
                let a = etcd.txn(req.clone(), dl()).await.map(|mut r| {
                    norm_txn(&mut r);
                    r
                });
                let b = node.txn(req.clone()).map(|(mut r, _)| {
                    norm_txn(&mut r);
                    r
                });
                errors += same(step, "txn", &req, a, b).is_none() as u32;
                txns += 1;
            }
            _ => {
                let revision = gen.revision().max(gen.compacted.max(1) - 1);
                let req = CompactionRequest {
                    revision,
                    physical: true,
                };
                let a = etcd.compact(req, dl()).await.map(|_| ());
                let b = node.compact(revision).map(|_| ());
                if same(step, "compact", &req, a, b).is_some() {
                    gen.compacted = revision;
                }
            }
        }
        gen.rev = node.revision();
    }
    eprintln!(
        "seed {seed:#x}, {steps} steps: {ranges} ranges, {writes} puts/deletes, {txns} txns, {errors} errors, {hashes} hashes answered alike; revision {}",
        gen.rev
    );
    assert!(
        errors > 10 && gen.compacted > 0,
        "the history must exercise errors and compaction"
    );
}
