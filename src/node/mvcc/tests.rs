use super::*;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request;

fn put(m: &mut Mvcc, k: &str, v: &str) -> i64 {
    m.put(PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
    .unwrap()
    .0
    .header
    .unwrap()
    .revision
}

fn get_at(m: &Mvcc, k: &str, rev: i64) -> Result<Vec<KeyValue>> {
    m.range(&RangeRequest {
        key: k.into(),
        revision: rev,
        ..Default::default()
    })
    .map(|r| r.kvs)
}

#[test]
fn history_tombstones_and_generations() {
    let mut m = Mvcc::new();
    let r1 = put(&mut m, "a", "1");
    let r2 = put(&mut m, "a", "2");
    let (d, events) = m
        .delete_range(DeleteRangeRequest {
            key: "a".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(d.deleted, 1);
    assert_eq!(events[0].r#type, EventType::Delete as i32);
    let r3 = m.revision();
    let r4 = put(&mut m, "a", "3");
    assert_eq!(
        (r1, r2, r3, r4),
        (2, 3, 4, 5),
        "etcd's first write is revision 2"
    );
    let kv = &get_at(&m, "a", 0).unwrap()[0];
    assert_eq!((kv.create_revision, kv.version), (5, 1), "a new generation");
    assert_eq!(get_at(&m, "a", 3).unwrap()[0].version, 2);
    assert!(get_at(&m, "a", 4).unwrap().is_empty(), "deleted at 4");
    // A delete of nothing writes no revision.
    m.delete_range(DeleteRangeRequest {
        key: "zz".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(m.revision(), 5);
    m.compact(4).unwrap();
    assert_eq!(get_at(&m, "a", 3).unwrap_err().kind, ErrorKind::Compacted);
    assert!(get_at(&m, "a", 4).unwrap().is_empty());
    assert_eq!(
        get_at(&m, "a", 9).unwrap_err().kind,
        ErrorKind::FutureRevision
    );
    assert_eq!(m.compact(4).unwrap_err().kind, ErrorKind::Compacted);
}

#[test]
fn revoke_deletes_the_leases_keys_in_one_revision() {
    let mut m = Mvcc::new();
    m.lease_grant(7, 1, 2).unwrap();
    for k in ["x", "y"] {
        m.put(PutRequest {
            key: k.into(),
            lease: 7,
            ..Default::default()
        })
        .unwrap();
    }
    assert_eq!(m.lease(7).unwrap(), (2, vec![b"x".to_vec(), b"y".to_vec()]));
    let (_, events) = m.lease_revoke(7).unwrap();
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == 4));
    assert_eq!(m.revision(), 4);
    assert!(m.lease(7).is_none());
    assert_eq!(m.lease_revoke(7).unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn a_from_key_delete_then_a_put_of_a_deleted_key_is_refused_whole() {
    let mut m = Mvcc::new();
    put(&mut m, "/d/b", "1");
    let before = m.revision();
    let txn = TxnRequest {
        success: vec![
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: "/d/a".into(),
                    range_end: vec![0],
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: "/d/b".into(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    let e = m.txn(txn).unwrap_err();
    assert_eq!(e.message, "etcdserver: duplicate key given in txn request");
    assert_eq!(m.revision(), before);
    assert_eq!(get_at(&m, "/d/b", 0).unwrap()[0].value, b"1");
}

#[test]
fn an_unfinished_write_leaves_nothing_behind() {
    let mut m = Mvcc::new();
    m.lease_grant(9, 60, 2).unwrap();
    put(&mut m, "k", "old");
    let snapshot = format!("{m:?}");
    {
        let mut w = m.write();
        w.put(PutRequest {
            key: "k".into(),
            value: "new".into(),
            lease: 9,
            ..Default::default()
        })
        .unwrap();
        w.put(PutRequest {
            key: "fresh".into(),
            ..Default::default()
        })
        .unwrap();
        w.delete_range(DeleteRangeRequest {
            key: "k".into(),
            ..Default::default()
        })
        .unwrap();
        // Dropped without commit, as on an error half-way through a request.
    }
    assert_eq!(format!("{m:?}"), snapshot);
}

#[test]
fn a_snapshot_restores_the_same_store() {
    let mut m = Mvcc::new();
    m.lease_grant(3, 60, 2).unwrap();
    put(&mut m, "a", "1");
    m.put(PutRequest {
        key: "b".into(),
        value: "2".into(),
        lease: 3,
        ..Default::default()
    })
    .unwrap();
    m.delete_range(DeleteRangeRequest {
        key: "a".into(),
        ..Default::default()
    })
    .unwrap();
    put(&mut m, "a", "3");
    m.compact(3).unwrap();
    m.set_alarm(7, ALARM_NOSPACE, true);
    m.set_attributes(
        7,
        Attributes {
            name: "n7".into(),
            client_urls: vec!["http://127.0.0.1:1".into(), "http://[::1]:2".into()],
        },
    );
    m.members_changed(&[7, 8], &[7]);
    assert!(m.is_removed(8) && !m.is_removed(7));
    use crate::node::auth::AuthCommand;
    for change in [
        AuthCommand::UserAdd {
            name: "root".into(),
            hash: "$2b$04$hash".into(),
        },
        AuthCommand::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
        AuthCommand::Enable,
    ] {
        m.auth.apply(change).unwrap();
    }
    let back = Mvcc::from_image(&m.image()).unwrap();
    assert_eq!(format!("{back:?}"), format!("{m:?}"));
    assert!(back.auth.enabled && back.auth.users["root"].password == "$2b$04$hash");
    assert_eq!(
        Mvcc::from_image(&m.image()[..10]).unwrap_err().kind,
        ErrorKind::DataLoss
    );
}

/// Every answer of `a` and `b` that reads history: ranges at each readable revision,
/// watch history from each, hashes, the snapshot bytes.
fn same_history(a: &Mvcc, b: &Mvcc) {
    assert_eq!(a.revision(), b.revision());
    for rev in a.oldest_readable().max(1)..=a.revision() {
        let all = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        };
        assert_eq!(
            a.range(&all).unwrap(),
            b.range(&all).unwrap(),
            "range at {rev}"
        );
        let (ha, hb) = (a.history(&[0], &[0], rev, 7), b.history(&[0], &[0], rev, 7));
        assert_eq!(ha.unwrap(), hb.unwrap(), "history from {rev}");
        // As etcd, no hash at the compacted revision itself.
        assert_eq!(
            a.hash_kv(rev).map_err(|e| e.message),
            b.hash_kv(rev).map_err(|e| e.message),
            "hash at {rev}"
        );
    }
    assert_eq!(a.image(), b.image());
}

/// A store that keeps superseded values in its history file answers as one that keeps
/// them in memory: writes, compares, past ranges, watch history, hashes and snapshots,
/// across compactions (which free the file's prefix) and after a reload.
#[test]
fn a_store_with_a_history_file_answers_as_one_without() {
    let dir = tempfile::tempdir().unwrap();
    let mut mem = Mvcc::new();
    let mut file = Mvcc::new();
    // A piece of one byte: every superseded value is in the file at once.
    file.keep_history_in_pieces(dir.path(), 1).unwrap();
    let mut seed = 7u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    for step in 0..2000 {
        let key = format!("k{}", next() % 30).into_bytes();
        let value = format!("{}{step}", "v".repeat(next() % 40)).into_bytes();
        match next() % 10 {
            0 => {
                let d = DeleteRangeRequest {
                    key: key.clone(),
                    prev_kv: true,
                    ..Default::default()
                };
                let (a, b) = (mem.delete_range(d.clone()), file.delete_range(d));
                assert_eq!(a.unwrap(), b.unwrap(), "step {step}");
            }
            1 if step % 200 == 1 => {
                let at = mem.revision() - (next() % 40) as i64;
                if at > mem.compact_revision() {
                    let before = file.past.as_ref().map(History::bytes);
                    mem.compact(at).unwrap();
                    file.compact(at).unwrap();
                    let after = file.past.as_ref().map(History::bytes);
                    assert!(after <= before, "a compaction frees the file's prefix");
                }
            }
            2 => {
                // A compare on the value the key holds (or held) now.
                let t = TxnRequest {
                    compare: vec![Compare {
                        key: key.clone(),
                        target: CompareTarget::Value as i32,
                        result: CompareResult::Greater as i32,
                        target_union: Some(TargetUnion::Value(b"v".to_vec())),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: key.clone(),
                            value: value.clone(),
                            prev_kv: true,
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                };
                let (a, b) = (mem.txn(t.clone()), file.txn(t));
                assert_eq!(a.unwrap(), b.unwrap(), "step {step}");
            }
            _ => {
                let p = PutRequest {
                    key,
                    value,
                    prev_kv: true,
                    ..Default::default()
                };
                let (a, b) = (mem.put(p.clone()), file.put(p));
                assert_eq!(a.unwrap(), b.unwrap(), "step {step}");
            }
        }
    }
    assert!(file.compact_revision() > 0, "the run compacted");
    same_history(&mem, &file);
    // Loaded from its snapshot, a store spills its old values again, in order.
    let encoded = file.image();
    let mut back = Mvcc::read_image(&encoded[..], Some((dir.path(), 1))).unwrap();
    same_history(&mem, &back);
    let at = mem.revision() - 5;
    mem.compact(at).unwrap();
    back.compact(at).unwrap();
    same_history(&mem, &back);
}

/// A mirror applies its source's revisions at the same revisions, once, in order, and only
/// while it is a mirror; the events it makes are the source's.
#[test]
fn a_mirror_applies_each_source_revision_once_at_its_revision() {
    let mut source = Mvcc::new();
    let mut mirror = Mvcc::new();
    mirror.mirror = Some("http://source".into());
    source.lease_grant(7, 30, 1).unwrap();
    let mut revisions = Vec::new();
    let (_, e) = source
        .put(PutRequest {
            key: "a".into(),
            value: "1".into(),
            lease: 7,
            ..Default::default()
        })
        .unwrap();
    revisions.push(e);
    revisions.push(
        source
            .put(PutRequest {
                key: "a".into(),
                value: "2".into(),
                ..Default::default()
            })
            .unwrap()
            .1,
    );
    revisions.push(
        source
            .delete_range(DeleteRangeRequest {
                key: "a".into(),
                ..Default::default()
            })
            .unwrap()
            .1,
    );
    let at = |e: &[Event]| e[0].kv.as_ref().unwrap().mod_revision;
    // A revision out of order is refused; the first one, with the lease it names, goes in.
    let gap = mirror.mirrored(at(&revisions[1]), revisions[1].clone(), &[]);
    assert_eq!(gap.unwrap_err().kind, ErrorKind::DataLoss);
    let events = mirror
        .mirrored(at(&revisions[0]), revisions[0].clone(), &[(7, 30)])
        .unwrap();
    assert_eq!(events[0].kv, revisions[0][0].kv);
    // Sent again (a new leader resuming): nothing happens.
    let again = mirror.mirrored(at(&revisions[0]), revisions[0].clone(), &[]);
    assert!(again.unwrap().is_empty());
    for r in &revisions[1..] {
        let events = mirror.mirrored(at(r), r.clone(), &[]).unwrap();
        assert_eq!(events[0].kv, r[0].kv);
    }
    assert_eq!(mirror.revision(), source.revision());
    assert_eq!(mirror.hash_kv(0).unwrap(), source.hash_kv(0).unwrap());
    // Promoted: no more mirrored revisions.
    mirror.mirror = None;
    let late = mirror.mirrored(source.revision() + 1, revisions[0].clone(), &[]);
    assert_eq!(late.unwrap_err().kind, ErrorKind::FailedPrecondition);
}

/// An image written in turns, with writes between them, is the image of the store as it
/// was at the first turn (writes add only newer versions, which it leaves out); a
/// compaction between two turns interrupts it.
#[test]
fn an_image_written_in_turns_is_the_store_at_its_first_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Mvcc::new();
    // Superseded values in the file at once: the turns read them there.
    m.keep_history_in_pieces(dir.path(), 1).unwrap();
    m.lease_grant(3, 60, 2).unwrap();
    for i in 0..60 {
        put(&mut m, &format!("k{}", i % 20), &format!("v{i}"));
    }
    m.put(PutRequest {
        key: "leased".into(),
        value: "x".into(),
        lease: 3,
        ..Default::default()
    })
    .unwrap();
    m.delete_range(DeleteRangeRequest {
        key: "k1".into(),
        ..Default::default()
    })
    .unwrap();
    let before = m.image();
    let store = std::cell::RefCell::new(m);
    let (s, mut turns) = (&store, 0);
    let mut out = Vec::new();
    write_image_in_turns(
        || {
            turns += 1;
            if turns > 1 {
                // Panics if the image still held the store from the turn before.
                let mut m = s.borrow_mut();
                put(&mut m, &format!("k{}", turns % 25), "later");
                put(&mut m, &format!("new{turns}"), "later");
                m.delete_range(DeleteRangeRequest {
                    key: format!("k{}", turns % 20).into_bytes(),
                    ..Default::default()
                })
                .unwrap();
                m.lease_grant(100 + turns, 60, 2).unwrap();
                m.set_alarm(turns as u64, ALARM_NOSPACE, true);
            }
            s.borrow()
        },
        3,
        &mut out,
    )
    .unwrap();
    assert!(turns > 10, "{turns} turns");
    assert_eq!(out, before);

    let mut turns = 0;
    let interrupted = write_image_in_turns(
        || {
            turns += 1;
            if turns == 3 {
                let mut m = s.borrow_mut();
                let at = m.revision() - 1;
                m.compact(at).unwrap();
            }
            s.borrow()
        },
        3,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(interrupted.kind(), std::io::ErrorKind::Interrupted);
}
