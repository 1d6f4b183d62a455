//! The fault checker's own proof: histories with a stale read, a lost write, a write
//! applied twice, a watch gap or a duplicate event must be rejected; correct ones (with
//! operations of unknown outcome, concurrent operations) accepted.

mod support;

use std::collections::BTreeMap;

use support::history::*;

/// An op on key "k" by `client` from `t0` to `t1` (None: unknown outcome).
fn op(client: usize, call: Call, answer: Answer, t0: u64, t1: Option<u64>, rev: i64) -> Op {
    Op {
        client,
        key: "k".into(),
        call,
        answer,
        invoked: t0,
        completed: t1,
        revision: t1.map(|_| rev),
    }
}

const BUDGET: usize = 1_000_000;

#[test]
fn sequential_and_concurrent_histories_pass() {
    let h = vec![
        op(0, Call::Put(1), Answer::Done, 0, Some(10), 2),
        op(1, Call::Get, Answer::Value(Some(1)), 11, Some(20), 2),
        // Concurrent put and get: the get may see either value.
        op(0, Call::Put(2), Answer::Done, 21, Some(40), 3),
        op(1, Call::Get, Answer::Value(Some(1)), 22, Some(30), 2),
        op(
            2,
            Call::Cas { from: 2, to: 3 },
            Answer::Swapped(true, None),
            41,
            Some(50),
            4,
        ),
        op(1, Call::Delete, Answer::Deleted(true), 51, Some(60), 5),
        op(2, Call::Get, Answer::Value(None), 61, Some(70), 5),
    ];
    assert_eq!(linearizable(&h, BUDGET), Verdict::Linearizable);
    assert!(revisions_in_real_time(&h, 10).is_empty());
}

#[test]
fn unknown_outcomes_may_or_may_not_have_happened() {
    // The put of 2 never answered; a later read sees it: it happened.
    let seen = vec![
        op(0, Call::Put(1), Answer::Done, 0, Some(10), 2),
        op(1, Call::Put(2), Answer::Unknown, 11, None, 0),
        op(2, Call::Get, Answer::Value(Some(2)), 100, Some(110), 3),
    ];
    assert_eq!(linearizable(&seen, BUDGET), Verdict::Linearizable);
    // ... or a later read does not see it: it did not happen (yet).
    let unseen = vec![
        op(0, Call::Put(1), Answer::Done, 0, Some(10), 2),
        op(1, Call::Put(2), Answer::Unknown, 11, None, 0),
        op(2, Call::Get, Answer::Value(Some(1)), 100, Some(110), 2),
    ];
    assert_eq!(linearizable(&unseen, BUDGET), Verdict::Linearizable);
}

#[test]
fn a_stale_read_is_rejected() {
    let h = vec![
        op(0, Call::Put(1), Answer::Done, 0, Some(10), 2),
        op(0, Call::Put(2), Answer::Done, 11, Some(20), 3),
        // Began after the put of 2 was acknowledged, yet sees 1.
        op(1, Call::Get, Answer::Value(Some(1)), 21, Some(30), 2),
    ];
    assert!(matches!(
        linearizable(&h, BUDGET),
        Verdict::NotLinearizable(_)
    ));
    // The revision check catches it too, and on another key as well.
    let mut other = h.clone();
    other[2].key = "other".into();
    assert_eq!(revisions_in_real_time(&other, 10).len(), 1);
}

#[test]
fn a_lost_write_is_rejected() {
    let h = vec![
        op(0, Call::Put(1), Answer::Done, 0, Some(10), 2),
        op(0, Call::Put(2), Answer::Done, 11, Some(20), 3),
        op(1, Call::Get, Answer::Value(Some(1)), 100, Some(110), 3),
    ];
    assert!(matches!(
        linearizable(&h, BUDGET),
        Verdict::NotLinearizable(_)
    ));
    let unique = BTreeMap::from([("u".to_string(), Some(5))]);
    let (lost, twice, _) = applied_once(&unique, &BTreeMap::new(), 10);
    assert_eq!((lost, twice), (1, 0));
}

#[test]
fn a_write_applied_twice_is_rejected() {
    // A compare-and-swap applied, then applied "again" by a retry whose compare failed and
    // told the client so: the value it reports was written by nobody it knows of.
    let h = vec![
        op(0, Call::Put(1), Answer::Done, 0, Some(10), 2),
        op(
            1,
            Call::Cas { from: 1, to: 2 },
            Answer::Swapped(false, Some(2)),
            11,
            Some(20),
            3,
        ),
    ];
    assert!(matches!(
        linearizable(&h, BUDGET),
        Verdict::NotLinearizable(_)
    ));
    // A put applied twice around another write: the reads see 1, 2, then 1 again.
    let h = vec![
        op(0, Call::Put(1), Answer::Done, 0, Some(50), 4),
        op(1, Call::Put(2), Answer::Done, 1, Some(5), 3),
        op(2, Call::Get, Answer::Value(Some(2)), 6, Some(7), 3),
        op(2, Call::Get, Answer::Value(Some(1)), 8, Some(9), 4),
        op(2, Call::Get, Answer::Value(Some(2)), 10, Some(11), 4),
    ];
    assert!(matches!(
        linearizable(&h, BUDGET),
        Verdict::NotLinearizable(_)
    ));
    // A key written by one put, found at version 2.
    let unique = BTreeMap::from([("u".to_string(), Some(5))]);
    let store = BTreeMap::from([(
        "u".to_string(),
        Stored {
            value: b"x".to_vec(),
            mod_revision: 7,
            create_revision: 5,
            version: 2,
        },
    )]);
    let (lost, twice, _) = applied_once(&unique, &store, 10);
    assert_eq!((lost, twice), (0, 1));
}

fn event(
    key: &str,
    value: Option<&str>,
    rev: i64,
    create: i64,
    version: i64,
    prev: Option<&str>,
    response: u64,
) -> WatchEvent {
    WatchEvent {
        key: key.into(),
        value: value.map(|v| v.as_bytes().to_vec()),
        mod_revision: rev,
        create_revision: create,
        version,
        prev: prev.map(|v| v.as_bytes().to_vec()),
        response,
    }
}

#[test]
fn watch_logs_are_checked() {
    let good = vec![
        event("a", Some("1"), 2, 2, 1, None, 0),
        event("b", Some("1"), 3, 3, 1, None, 0),
        event("a", Some("2"), 4, 2, 2, Some("1"), 1),
        event("b", None, 5, 0, 0, Some("1"), 2),
    ];
    let store = BTreeMap::from([(
        "a".to_string(),
        Stored {
            value: b"2".to_vec(),
            mod_revision: 4,
            create_revision: 2,
            version: 2,
        },
    )]);
    let acked = vec![Acked {
        key: "a".into(),
        value: Some(b"2".to_vec()),
        revision: 4,
    }];
    assert_eq!(
        watch_log(&[good.clone(), good.clone()], &store, 5, &acked, 10),
        Vec::<String>::new()
    );
    // A gap: the acknowledged write at 4 is missing.
    let mut gap = good.clone();
    gap.remove(2);
    assert!(!watch_log(&[gap], &store, 5, &acked, 10).is_empty());
    // A duplicate delivery.
    let mut dup = good.clone();
    dup.insert(2, good[1].clone());
    assert!(!watch_log(&[dup], &store, 5, &acked, 10).is_empty());
    // Out of order.
    let mut swapped = good.clone();
    swapped.swap(0, 1);
    assert!(!watch_log(&[swapped], &store, 5, &acked, 10).is_empty());
    // A wrong prev_kv.
    let mut prev = good.clone();
    prev[2].prev = Some(b"0".to_vec());
    assert!(!watch_log(&[prev], &store, 5, &acked, 10).is_empty());
    // Two watchers that disagree.
    let mut other = good.clone();
    other[3].key = "c".into();
    assert!(!watch_log(&[good, other], &store, 5, &acked, 10).is_empty());
}

#[test]
fn a_search_past_its_budget_is_not_a_pass() {
    // Many concurrent unknown writes and no reads: a tiny budget cannot finish.
    let mut h: Vec<Op> = (0..40)
        .map(|i| {
            op(
                i,
                Call::Put(i as u64 + 10),
                Answer::Unknown,
                i as u64,
                None,
                0,
            )
        })
        .collect();
    h.push(op(
        99,
        Call::Get,
        Answer::Value(Some(3)),
        1000,
        Some(1001),
        2,
    ));
    assert!(matches!(linearizable(&h, 50), Verdict::Inconclusive(_)));
}
