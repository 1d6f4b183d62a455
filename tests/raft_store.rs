//! openraft's storage conformance suite against the node's log store (on the write-ahead
//! log) and state machine (on the MVCC store), each case in a fresh directory. (Reopening
//! after a restart, which the suite does not check, is covered by the node's tests.)

use etcdc::node::raft::{LogStore, NodeId, StateMachine, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("wal")).expect("log store");
        let sm = StateMachine::open(&dir.path().join("snap")).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn the_storage_passes_openrafts_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft's storage suite failed: {e}");
    }
}

/// The same suite with every committed entry but the last let go of from memory: each
/// read of an older entry comes back from the write-ahead log.
#[test]
fn the_storage_passes_openrafts_suite_reading_entries_back_from_disk() {
    struct FromDisk;
    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FromDisk {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = LogStore::open_keeping(&dir.path().join("wal"), 0).expect("log store");
            let sm = StateMachine::open(&dir.path().join("snap")).expect("state machine");
            Ok((dir, log, sm))
        }
    }
    if let Err(e) = Suite::test_all(FromDisk) {
        panic!("openraft's storage suite failed reading back from disk: {e}");
    }
}
