//! Raft groups on this node.
//!
//! ```text
//!   controller (group 0)                 partition groups (one per topic partition)
//!   ControllerCmd -> client_write          ProduceJob -> batcher -> client_write(PartitionCmd)
//!        |                                      |
//!   machine::Machine<Controller>           machine::Machine<PartitionState>
//!        | apply: topics, configs               | apply: assign offsets, store batches
//!        v                                      v
//!   watch<Arc<Metadata>> --> Node::reconcile    watch<Offsets> --> fetch long polls
//!                            starts/stops partition groups
//! ```
//!
//! Every state change is a raft entry; on one node every group has a single voter. The
//! state machine writes skip the WAL and are rebuilt from the raft log after a crash (see
//! `storage::db`), so [`machine`] flushes memtables before a snapshot lets raft purge.

#[cfg(test)]
mod conformance;
pub mod controller;
pub mod machine;
pub mod network;
pub mod node;
pub mod partition;
pub mod producers;

use std::io::Cursor;

use openraft::BasicNode;

openraft::declare_raft_types!(
    /// Types of the controller group (metadata).
    pub ControllerTypes:
        D = controller::ControllerCmd,
        R = controller::ControllerResp,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<ControllerTypes>,
        SnapshotData = Cursor<Vec<u8>>,
);

openraft::declare_raft_types!(
    /// Types of a partition group (one Kafka partition's log).
    pub PartitionTypes:
        D = partition::PartitionCmd,
        R = partition::PartitionResp,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<PartitionTypes>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// raft config shared by all groups of a node.
/// Every raft group's settings; a group snapshots (and purges its log) every
/// `snapshot_entries` entries.
pub fn raft_config(snapshot_entries: u64) -> openraft::Config {
    let config = openraft::Config {
        cluster_name: "quarry".into(),
        // Also the timeout of every AppendEntries (openraft 0.9), which carries up to
        // `max_payload_entries` produce entries and waits for the follower's fsync: at
        // 150 ms, loaded nodes timed out and resent hundreds of them a second. Idle
        // partitions quiesce, so heartbeats cost nothing there.
        heartbeat_interval: 500,
        election_timeout_min: 1500,
        election_timeout_max: 3000,
        max_payload_entries: 32,
        // Snapshots only let the raft log be purged; the partition log is the data. Each
        // one flushes memtables, whose fsyncs would stall the group sync if frequent; a
        // partition's batcher also asks for one after SNAPSHOT_BYTES, so segment files are
        // not held for raft long.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_entries.max(1)),
        max_in_snapshot_log_to_keep: 16,
        // The last chunk's answer waits for the snapshot to be installed, which for a
        // partition means copying the batches the replica lacks.
        install_snapshot_timeout: 60_000,
        purge_batch_size: snapshot_entries.clamp(1, 512),
        ..Default::default()
    };
    config.validate().expect("static raft config is valid")
}
