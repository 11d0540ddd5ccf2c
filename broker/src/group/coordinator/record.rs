//! What the coordinator keeps of a group across restarts: its generation, protocol,
//! leader, and each member with its subscription and assignment, as of the last time the
//! group was Stable or Empty (Kafka stores the same after SyncGroup and when a group
//! empties). The service writes changed records through the coordinating partition's
//! raft group; a restarted node loads them, so members carry on in their generation
//! without a rebalance.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Coordinator, Group, Member, Ms, Protocol, State};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberRecord>,
    /// When the group last became empty, if it has no members (offsets retention).
    pub empty_since: Option<Ms>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// The member's metadata for the group's protocol (its subscription).
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

impl Group {
    /// The record of a group at rest (Stable or Empty); `None` in the middle of a rebalance.
    fn record(&self) -> Option<GroupRecord> {
        if !matches!(self.state, State::Stable | State::Empty) {
            return None;
        }
        let members = self
            .members
            .values()
            .map(|m| MemberRecord {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                metadata: self.metadata_of(m).to_vec(),
                assignment: m.assignment.to_vec(),
            })
            .collect();
        Some(GroupRecord {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            empty_since: if self.members.is_empty() { self.empty_since } else { None },
            leader: self.leader.clone(),
            members,
        })
    }
}

impl Coordinator {
    /// Restores a group from its record, as if every member had just heartbeated.
    pub fn load(&mut self, now: Ms, group_id: &str, record: GroupRecord) {
        let mut group = Group::new(now);
        group.empty_since = record.empty_since;
        group.generation = record.generation;
        group.protocol_type = record.protocol_type.clone();
        group.protocol = record.protocol.clone();
        group.leader = record.leader.clone();
        let mut members = BTreeMap::new();
        let mut statics = HashMap::new();
        for m in &record.members {
            let seq = self.next_seq;
            self.next_seq += 1;
            if let Some(instance) = &m.instance_id {
                statics.insert(instance.clone(), m.id.clone());
            }
            let protocols = record
                .protocol
                .iter()
                .map(|name| Protocol { name: name.clone(), metadata: Bytes::from(m.metadata.clone()) })
                .collect();
            members.insert(
                m.id.clone(),
                Member {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols,
                    assignment: Bytes::from(m.assignment.clone()),
                    joined_seq: seq,
                    last_heard: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        group.state = if members.is_empty() { State::Empty } else { State::Stable };
        group.members = members;
        group.statics = statics;
        self.groups.insert(group_id.to_string(), group);
        self.recorded.insert(group_id.to_string(), record);
    }

    /// Forgets the groups `ours` picks that are not in `kept`, without recording their
    /// removal: their records are gone from storage already (deleted while another node
    /// coordinated them).
    pub fn unload_missing(&mut self, ours: impl Fn(&str) -> bool, kept: &std::collections::HashSet<String>) {
        let gone: Vec<String> = self.groups.keys().filter(|g| ours(g) && !kept.contains(*g)).cloned().collect();
        for g in gone {
            self.groups.remove(&g);
            self.recorded.remove(&g);
            self.touched.remove(&g);
        }
    }

    /// Makes the group's next record count as changed (its last one was not stored).
    pub fn forget_recorded(&mut self, group_id: &str) {
        self.recorded.remove(group_id);
        self.touched.insert(group_id.to_string());
    }

    /// The records that changed since the last call, among the groups touched since:
    /// `None` for a group that is gone.
    pub fn take_changes(&mut self) -> Vec<(String, Option<GroupRecord>)> {
        let mut changes = Vec::new();
        for id in std::mem::take(&mut self.touched) {
            let record = match self.groups.get(&id) {
                Some(g) => match g.record() {
                    Some(r) => Some(r),
                    // Mid-rebalance: the last record at rest stands.
                    None => continue,
                },
                None => None,
            };
            if self.recorded.get(&id) == record.as_ref() {
                continue;
            }
            // A group that never completed a generation has nothing worth keeping.
            if !self.recorded.contains_key(&id) && record.as_ref().is_some_and(|r| r.generation == 0) {
                continue;
            }
            match &record {
                Some(r) => self.recorded.insert(id.clone(), r.clone()),
                None => self.recorded.remove(&id),
            };
            changes.push((id, record));
        }
        changes
    }
}
