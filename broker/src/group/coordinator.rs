//! Classic consumer group coordination (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) as
//! pure logic: calls and clock readings in, replies out, no I/O and no clock of its own.
//!
//! A group moves Empty → PreparingRebalance (members (re)join) → CompletingRebalance (the
//! leader's SyncGroup brings the assignment) → Stable, and back to PreparingRebalance
//! whenever a member joins, leaves, changes its protocols or misses its session timeout.
//! JoinGroup and SyncGroup answers may have to wait for other members: a call names a
//! [`Waiter`] and its reply comes out of whichever later call or [`Coordinator::tick`]
//! completes it. The caller owns the waiters (one per request in flight) and the clock,
//! and calls `tick` by [`Coordinator::next_deadline`].
//!
//! Semantics follow Kafka's classic group coordinator: member ids are handed out with
//! MEMBER_ID_REQUIRED before a first join (KIP-394), static members (KIP-345) keep their
//! assignment across a restart within their session, generations fence stale members
//! (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID), and a new group waits
//! `initial_rebalance_delay_ms` for more members before its first generation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use kafka_protocol::ResponseError;

/// Milliseconds on the caller's monotonic clock.
pub type Ms = u64;

/// Identifies one JoinGroup or SyncGroup call whose reply may come later.
pub type Waiter = u64;

/// One assignment protocol a member supports, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty on a member's first join.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new dynamic member is first given its id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
    /// JoinGroup v9+: the client understands `skip_assignment` (KIP-814).
    pub supports_skip_assignment: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinedMember>,
    /// A static leader that rejoined without a rebalance must not compute an assignment.
    pub skip_assignment: bool,
}

impl JoinResponse {
    pub fn error(error: ResponseError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// From the leader: each member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: ResponseError) -> SyncResponse {
        SyncResponse { error: Some(error), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// A reply for a waiting call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(Waiter, JoinResponse),
    Sync(Waiter, SyncResponse),
}

/// The states of a group, as DescribeGroups and ListGroups name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    /// Order of first join: the leader is the oldest member still there.
    joined_seq: u64,
    last_heard: Ms,
    join_waiter: Option<Waiter>,
    sync_waiter: Option<Waiter>,
}

#[derive(Debug, Clone)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or time out.
    pending: HashMap<String, Ms>,
    statics: HashMap<String, String>,
    /// PreparingRebalance: when the join phase ends whoever has not rejoined; and, for a
    /// new group, the earliest it may end.
    join_deadline: Ms,
    join_not_before: Ms,
    /// CompletingRebalance: when members that have not synced are dropped.
    sync_deadline: Ms,
    /// When the group last had no members (offsets retention counts from here).
    empty_since: Option<Ms>,
}

impl Group {
    fn new(now: Ms) -> Group {
        Group {
            empty_since: Some(now),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            join_deadline: 0,
            join_not_before: 0,
            sync_deadline: 0,
        }
    }

    /// A member's metadata for the group's selected protocol (its subscription).
    fn metadata_of(&self, m: &Member) -> Bytes {
        self.protocol
            .as_ref()
            .and_then(|p| m.protocols.iter().find(|q| &q.name == p))
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn max_rebalance_timeout(&self) -> u64 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    /// The protocol every member supports that most members rank highest.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|p| &p.name)
            .filter(|name| self.members.values().all(|m| m.protocols.iter().any(|p| &p.name == *name)))
            .collect();
        let mut votes: Vec<(usize, usize)> = vec![(0, 0); candidates.len()];
        for (i, v) in votes.iter_mut().enumerate() {
            v.1 = i;
        }
        for m in self.members.values() {
            if let Some(best) = m.protocols.iter().position(|p| candidates.contains(&&p.name)) {
                let name = &m.protocols[best].name;
                if let Some(i) = candidates.iter().position(|c| *c == name) {
                    votes[i].0 += 1;
                }
            }
        }
        // Most votes; ties go to the first member's preference.
        votes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        votes.first().map(|(_, i)| candidates[*i].clone())
    }

    fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| self.members.values().all(|m| m.protocols.iter().any(|q| q.name == p.name)))
    }
}

/// Settings the coordinator takes from the broker config.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub initial_rebalance_delay_ms: u64,
    pub min_session_timeout_ms: u64,
    pub max_session_timeout_ms: u64,
}

impl Default for Settings {
    /// Kafka's defaults.
    fn default() -> Self {
        Settings { initial_rebalance_delay_ms: 3000, min_session_timeout_ms: 6000, max_session_timeout_ms: 1_800_000 }
    }
}

/// The groups one coordinator owns.
pub struct Coordinator {
    settings: Settings,
    groups: HashMap<String, Group>,
    next_seq: u64,
    /// Each group's record as last handed out by [`Coordinator::take_changes`].
    recorded: HashMap<String, GroupRecord>,
    /// Groups whose record may have changed since then.
    touched: BTreeSet<String>,
}

impl Coordinator {
    pub fn new(settings: Settings) -> Coordinator {
        Coordinator {
            settings,
            groups: HashMap::new(),
            next_seq: 0,
            recorded: HashMap::new(),
            touched: BTreeSet::new(),
        }
    }

    /// A member (re)joins. The reply to `waiter` is in the returned replies if it is
    /// ready now, else in those of a later call or tick.
    pub fn join(&mut self, now: Ms, waiter: Waiter, req: JoinRequest) -> Vec<Reply> {
        self.touched.insert(req.group_id.clone());
        let settings = self.settings;
        if req.session_timeout_ms < settings.min_session_timeout_ms
            || req.session_timeout_ms > settings.max_session_timeout_ms
        {
            return vec![Reply::Join(
                waiter,
                JoinResponse::error(ResponseError::InvalidSessionTimeout, &req.member_id),
            )];
        }
        let group = self.groups.entry(req.group_id.clone()).or_insert_with(|| Group::new(now));
        if group.state == State::Dead {
            return vec![Reply::Join(
                waiter,
                JoinResponse::error(ResponseError::CoordinatorNotAvailable, &req.member_id),
            )];
        }
        if !group.supports(&req.protocol_type, &req.protocols) {
            return vec![Reply::Join(
                waiter,
                JoinResponse::error(ResponseError::InconsistentGroupProtocol, &req.member_id),
            )];
        }

        // Which member this is.
        let member_id = if let Some(instance) = &req.group_instance_id {
            match group.statics.get(instance).cloned() {
                Some(old) if !req.member_id.is_empty() && req.member_id != old => {
                    return vec![Reply::Join(
                        waiter,
                        JoinResponse::error(ResponseError::FencedInstanceId, &req.member_id),
                    )];
                }
                Some(old) if req.member_id.is_empty() => {
                    // A static member restarted: it takes a new id, fencing the old one.
                    let new_id = new_member_id(&req.client_id);
                    return self.replace_static(now, waiter, &req, &old, new_id);
                }
                Some(old) => old,
                None => {
                    let id =
                        if req.member_id.is_empty() { new_member_id(&req.client_id) } else { req.member_id.clone() };
                    group.statics.insert(instance.clone(), id.clone());
                    id
                }
            }
        } else if req.member_id.is_empty() {
            let id = new_member_id(&req.client_id);
            if req.require_known_member_id {
                group.pending.insert(id.clone(), now + req.session_timeout_ms);
                return vec![Reply::Join(waiter, JoinResponse::error(ResponseError::MemberIdRequired, &id))];
            }
            id
        } else {
            let known = group.members.contains_key(&req.member_id) || group.pending.contains_key(&req.member_id);
            if !known {
                return vec![Reply::Join(waiter, JoinResponse::error(ResponseError::UnknownMemberId, &req.member_id))];
            }
            req.member_id.clone()
        };

        let seq = self.next_seq;
        self.next_seq += 1;
        let group = self.groups.get_mut(&req.group_id).expect("group exists");
        group.pending.remove(&member_id);
        let mut replies = Vec::new();
        let changed = match group.members.get_mut(&member_id) {
            Some(m) => {
                // A second join while one waits: the first is answered as superseded.
                if let Some(old) = m.join_waiter.replace(waiter) {
                    replies.push(Reply::Join(old, JoinResponse::error(ResponseError::RebalanceInProgress, &member_id)));
                }
                let changed = m.protocols != req.protocols;
                m.protocols = req.protocols.clone();
                m.session_timeout_ms = req.session_timeout_ms;
                m.rebalance_timeout_ms = req.rebalance_timeout_ms;
                m.last_heard = now;
                changed
            }
            None => {
                group.members.insert(
                    member_id.clone(),
                    Member {
                        id: member_id.clone(),
                        instance_id: req.group_instance_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        session_timeout_ms: req.session_timeout_ms,
                        rebalance_timeout_ms: req.rebalance_timeout_ms,
                        protocols: req.protocols.clone(),
                        assignment: Bytes::new(),
                        joined_seq: seq,
                        last_heard: now,
                        join_waiter: Some(waiter),
                        sync_waiter: None,
                    },
                );
                true
            }
        };
        if group.protocol_type.is_none() || group.state == State::Empty {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        match group.state {
            State::Empty => {
                group.state = State::PreparingRebalance;
                group.join_not_before = now + settings.initial_rebalance_delay_ms.min(req.rebalance_timeout_ms);
                group.join_deadline = now + req.rebalance_timeout_ms;
            }
            State::Stable | State::CompletingRebalance => {
                let is_leader = group.leader.as_deref() == Some(member_id.as_str());
                // As Kafka: a changed member, or the leader rejoining a stable group,
                // rebalances. Anyone else rejoining unchanged (say, after losing the
                // response) gets the current generation again.
                if changed || (is_leader && group.state == State::Stable) {
                    replies.extend(prepare_rebalance(group, now));
                } else {
                    let resp = join_response(group, &member_id, is_leader);
                    let m = group.members.get_mut(&member_id).expect("member exists");
                    let w = m.join_waiter.take().expect("set above");
                    replies.push(Reply::Join(w, resp));
                    return replies;
                }
            }
            State::PreparingRebalance | State::Dead => {}
        }
        replies.extend(maybe_complete_join(group, now));
        replies
    }

    /// A static member rejoined under a new id: if nothing changed, it keeps its
    /// assignment and the group does not rebalance.
    fn replace_static(&mut self, now: Ms, waiter: Waiter, req: &JoinRequest, old: &str, new_id: String) -> Vec<Reply> {
        let group = self.groups.get_mut(&req.group_id).expect("group exists");
        let instance = req.group_instance_id.clone().expect("static member");
        let Some(mut member) = group.members.remove(old) else {
            group.statics.remove(&instance);
            return self.join(now, waiter, JoinRequest { group_instance_id: Some(instance), ..req.clone() });
        };
        let mut replies = Vec::new();
        // The old incarnation's waiting calls are fenced.
        if let Some(w) = member.join_waiter.take() {
            replies.push(Reply::Join(w, JoinResponse::error(ResponseError::FencedInstanceId, old)));
        }
        if let Some(w) = member.sync_waiter.take() {
            replies.push(Reply::Sync(w, SyncResponse::error(ResponseError::FencedInstanceId)));
        }
        let unchanged = member.protocols == req.protocols;
        member.id = new_id.clone();
        member.protocols = req.protocols.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.last_heard = now;
        let old_leader = group.leader.clone().unwrap_or_default();
        let was_leader = old_leader == old;
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        group.statics.insert(instance, new_id.clone());
        group.members.insert(new_id.clone(), member);
        if group.state == State::Stable && unchanged {
            // As Kafka: a stable group would never pass on a new assignment, so a restarted
            // leader must not make one. From v9 it learns it leads (its new id, the
            // members) and is told to skip the assignment; an older client is answered
            // with the leader as it was, not its own id, and acts as a follower.
            let skip = was_leader && req.supports_skip_assignment;
            let mut resp = join_response(group, &new_id, skip);
            resp.skip_assignment = skip;
            if !skip {
                resp.leader = old_leader;
            }
            replies.push(Reply::Join(waiter, resp));
            return replies;
        }
        group.members.get_mut(&new_id).expect("just inserted").join_waiter = Some(waiter);
        if group.state != State::PreparingRebalance {
            replies.extend(prepare_rebalance(group, now));
        }
        replies.extend(maybe_complete_join(group, now));
        replies
    }

    /// A member sends its SyncGroup; the leader's carries everyone's assignment.
    pub fn sync(&mut self, now: Ms, waiter: Waiter, req: SyncRequest) -> Vec<Reply> {
        self.touched.insert(req.group_id.clone());
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return vec![Reply::Sync(waiter, SyncResponse::error(ResponseError::UnknownMemberId))];
        };
        if let Some(e) = check_member(group, &req.member_id, req.group_instance_id.as_deref(), req.generation_id) {
            return vec![Reply::Sync(waiter, SyncResponse::error(e))];
        }
        if req.protocol_type.as_ref().is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || req.protocol_name.as_ref().is_some_and(|p| Some(p) != group.protocol.as_ref())
        {
            return vec![Reply::Sync(waiter, SyncResponse::error(ResponseError::InconsistentGroupProtocol))];
        }
        let member = group.members.get_mut(&req.member_id).expect("checked");
        member.last_heard = now;
        match group.state {
            State::PreparingRebalance => {
                vec![Reply::Sync(waiter, SyncResponse::error(ResponseError::RebalanceInProgress))]
            }
            State::Stable => vec![Reply::Sync(waiter, sync_response(group, &req.member_id))],
            State::CompletingRebalance => {
                let mut replies = Vec::new();
                if let Some(old) = group.members.get_mut(&req.member_id).expect("checked").sync_waiter.replace(waiter) {
                    replies.push(Reply::Sync(old, SyncResponse::error(ResponseError::RebalanceInProgress)));
                }
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    let assignments: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in group.members.values_mut() {
                        m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
                    }
                    group.state = State::Stable;
                    let ids: Vec<String> = group.members.keys().cloned().collect();
                    for id in ids {
                        let w = group.members.get_mut(&id).expect("listed").sync_waiter.take();
                        if let Some(w) = w {
                            replies.push(Reply::Sync(w, sync_response(group, &id)));
                        }
                    }
                }
                replies
            }
            State::Empty | State::Dead => {
                vec![Reply::Sync(waiter, SyncResponse::error(ResponseError::UnknownMemberId))]
            }
        }
    }

    /// A member's heartbeat: resets its session; the error tells it to rejoin if needed.
    pub fn heartbeat(
        &mut self,
        now: Ms,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        let Some(group) = self.groups.get_mut(group_id) else { return Some(ResponseError::UnknownMemberId) };
        if let Some(e) = check_member(group, member_id, instance_id, generation) {
            // During a rebalance a member of the previous generation is told to rejoin.
            if e == ResponseError::IllegalGeneration && group.state == State::PreparingRebalance {
                return Some(ResponseError::RebalanceInProgress);
            }
            return Some(e);
        }
        group.members.get_mut(member_id).expect("checked").last_heard = now;
        match group.state {
            State::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            State::Empty | State::Dead => Some(ResponseError::UnknownMemberId),
            State::CompletingRebalance | State::Stable => None,
        }
    }

    /// Members leave (LeaveGroup; v3+ names several, by member id or instance id).
    /// Returns each one's error and the replies the departure completes.
    pub fn leave(
        &mut self,
        now: Ms,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (Vec<Option<ResponseError>>, Vec<Reply>) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return (leaving.iter().map(|_| Some(ResponseError::UnknownMemberId)).collect(), Vec::new());
        };
        self.touched.insert(group_id.to_string());
        let mut errors = Vec::new();
        let mut replies = Vec::new();
        let mut any = false;
        for (member_id, instance) in leaving {
            let id = match instance {
                Some(instance) => match group.statics.get(instance) {
                    Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                    Some(_) => {
                        errors.push(Some(ResponseError::FencedInstanceId));
                        continue;
                    }
                    None => {
                        errors.push(Some(ResponseError::UnknownMemberId));
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if group.pending.remove(&id).is_some() {
                errors.push(None);
                continue;
            }
            if group.members.contains_key(&id) {
                remove_member(group, &id, &mut replies);
                errors.push(None);
                any = true;
            } else {
                errors.push(Some(ResponseError::UnknownMemberId));
            }
        }
        if any {
            replies.extend(after_departure(group, now));
        }
        (errors, replies)
    }

    /// Applies every deadline that has passed: sessions, the join and sync phases.
    pub fn tick(&mut self, now: Ms) -> Vec<Reply> {
        let mut replies = Vec::new();
        for (id, group) in self.groups.iter_mut() {
            let before = (group.state, group.generation, group.members.len());
            tick_group(group, now, &mut replies);
            if (group.state, group.generation, group.members.len()) != before {
                self.touched.insert(id.clone());
            }
        }
        replies
    }
}

/// One group's part of [`Coordinator::tick`].
fn tick_group(group: &mut Group, now: Ms, out: &mut Vec<Reply>) {
    let mut replies = Vec::new();
    group.pending.retain(|_, deadline| *deadline > now);
    match group.state {
        State::PreparingRebalance => {
            // As Kafka: a member that is not waiting in a join still has its session; one
            // that stopped heartbeating is dropped when it runs out, so the rest need not
            // wait for the whole rebalance timeout.
            let silent: Vec<String> = group
                .members
                .values()
                .filter(|m| m.join_waiter.is_none() && now >= m.last_heard + m.session_timeout_ms)
                .map(|m| m.id.clone())
                .collect();
            for id in silent {
                remove_member(group, &id, &mut replies);
            }
            if now >= group.join_deadline {
                // Whoever has not rejoined is out.
                let gone: Vec<String> =
                    group.members.values().filter(|m| m.join_waiter.is_none()).map(|m| m.id.clone()).collect();
                for id in gone {
                    remove_member(group, &id, &mut replies);
                }
                replies.extend(complete_join(group, now));
            } else {
                replies.extend(maybe_complete_join(group, now));
                if now >= group.join_not_before {
                    // The new group's delay is over: only the join deadline is left.
                    group.join_not_before = 0;
                }
            }
        }
        State::CompletingRebalance if now >= group.sync_deadline => {
            // Members that never synced are out; the rest rebalance again.
            let gone: Vec<String> = group
                .members
                .values()
                .filter(|m| m.sync_waiter.is_none() && group.leader.as_deref() != Some(&m.id))
                .map(|m| m.id.clone())
                .collect();
            let leader_missing =
                group.leader.as_ref().and_then(|l| group.members.get(l)).is_none_or(|l| l.sync_waiter.is_none());
            if leader_missing {
                if let Some(l) = group.leader.clone() {
                    remove_member(group, &l, &mut replies);
                }
            }
            for id in gone {
                remove_member(group, &id, &mut replies);
            }
            replies.extend(after_departure(group, now));
        }
        State::Stable | State::CompletingRebalance => {
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| m.sync_waiter.is_none() && now >= m.last_heard + m.session_timeout_ms)
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                for id in expired {
                    remove_member(group, &id, &mut replies);
                }
                replies.extend(after_departure(group, now));
            }
        }
        State::Empty | State::Dead => {}
    }
    out.extend(replies);
}

impl Coordinator {
    /// The earliest time [`Coordinator::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Ms> {
        self.groups
            .values()
            .flat_map(|g| {
                // Exactly what `tick` acts on, so no deadline it would ignore (and that stays
                // in the past) makes the caller tick again at once.
                let phase = match g.state {
                    State::PreparingRebalance if g.join_not_before > 0 => Some(g.join_deadline.min(g.join_not_before)),
                    State::PreparingRebalance => Some(g.join_deadline),
                    State::CompletingRebalance => Some(g.sync_deadline),
                    _ => None,
                };
                let sessions = g
                    .members
                    .values()
                    .filter(move |m| match g.state {
                        State::Stable | State::CompletingRebalance => m.sync_waiter.is_none(),
                        State::PreparingRebalance => m.join_waiter.is_none(),
                        State::Empty | State::Dead => false,
                    })
                    .map(|m| m.last_heard + m.session_timeout_ms);
                phase.into_iter().chain(sessions).chain(g.pending.values().copied())
            })
            .min()
    }

    /// Whether an OffsetCommit from this member and generation may be written: groups
    /// without members take commits without group management (generation < 0); members
    /// commit in their own generation, not while assignments are being handed out.
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        match self.groups.get(group_id) {
            None => (generation >= 0).then_some(ResponseError::IllegalGeneration),
            Some(g) if g.state == State::Empty => (generation >= 0).then_some(ResponseError::IllegalGeneration),
            Some(g) if g.state == State::CompletingRebalance => Some(ResponseError::RebalanceInProgress),
            Some(g) => check_member(g, member_id, instance_id, generation),
        }
    }

    /// A group's state, protocol and members, for DescribeGroups.
    pub fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        let g = self.groups.get(group_id)?;
        Some(GroupSummary {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            members: g
                .members
                .values()
                .map(|m| MemberSummary {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: g.metadata_of(m),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Whether a group has members, or since when it has none.
    pub fn activity(&self, group_id: &str) -> Activity {
        match self.groups.get(group_id) {
            None => Activity::Unknown,
            Some(g) if g.members.is_empty() && g.state == State::Empty => {
                g.empty_since.map_or(Activity::Unknown, Activity::EmptySince)
            }
            Some(_) => Activity::Active,
        }
    }

    /// The topics the members of a consumer group subscribe to (from their join metadata).
    pub fn subscribed_topics(&self, group_id: &str) -> BTreeSet<String> {
        let Some(g) = self.groups.get(group_id) else { return BTreeSet::new() };
        if g.protocol_type.as_deref() != Some("consumer") {
            return BTreeSet::new();
        }
        g.members.values().flat_map(|m| m.protocols.iter().flat_map(|p| subscription_topics(&p.metadata))).collect()
    }

    /// Forgets a group for DeleteGroups: refused with NON_EMPTY_GROUP while it has members.
    pub fn delete(&mut self, group_id: &str) -> Result<(), ResponseError> {
        self.touched.insert(group_id.to_string());
        match self.groups.get(group_id) {
            Some(g) if !g.members.is_empty() || g.state != State::Empty => Err(ResponseError::NonEmptyGroup),
            _ => {
                self.groups.remove(group_id);
                Ok(())
            }
        }
    }

    /// Every group with its state and protocol type, for ListGroups.
    pub fn list(&self) -> Vec<(String, State, String)> {
        self.groups
            .iter()
            .filter(|(_, g)| g.state != State::Dead)
            .map(|(id, g)| (id.clone(), g.state, g.protocol_type.clone().unwrap_or_default()))
            .collect()
    }
}

/// Whether a group is in use, for offsets retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Not known to the coordinator (no member joined since the node started).
    Unknown,
    Active,
    EmptySince(Ms),
}

/// The topics of a consumer protocol subscription (`ConsumerProtocolSubscription`, any
/// version); nothing if it does not decode.
fn subscription_topics(metadata: &Bytes) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    bytes::Buf::advance(&mut buf, 2);
    let version = version.clamp(0, 3);
    ConsumerProtocolSubscription::decode(&mut buf, version)
        .map(|s| s.topics.into_iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// Member ids as Kafka makes them: the client id and a UUID.
fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

/// Whether `member_id` may act in the group's current generation.
fn check_member(group: &Group, member_id: &str, instance_id: Option<&str>, generation: i32) -> Option<ResponseError> {
    if let Some(instance) = instance_id {
        match group.statics.get(instance) {
            Some(id) if id != member_id => return Some(ResponseError::FencedInstanceId),
            None => return Some(ResponseError::UnknownMemberId),
            _ => {}
        }
    }
    if !group.members.contains_key(member_id) {
        return Some(ResponseError::UnknownMemberId);
    }
    if generation != group.generation {
        return Some(ResponseError::IllegalGeneration);
    }
    None
}

/// Starts a rebalance. Members waiting for their assignment learn at once that this
/// generation is over (REBALANCE_IN_PROGRESS), so they rejoin instead of waiting out the
/// rebalance timeout.
#[must_use]
fn prepare_rebalance(group: &mut Group, now: Ms) -> Vec<Reply> {
    let mut replies = Vec::new();
    for m in group.members.values_mut() {
        if let Some(w) = m.sync_waiter.take() {
            replies.push(Reply::Sync(w, SyncResponse::error(ResponseError::RebalanceInProgress)));
        }
    }
    group.state = State::PreparingRebalance;
    group.join_deadline = now + group.max_rebalance_timeout();
    group.join_not_before = 0;
    replies
}

fn remove_member(group: &mut Group, id: &str, replies: &mut Vec<Reply>) {
    if let Some(m) = group.members.remove(id) {
        if let Some(instance) = &m.instance_id {
            group.statics.remove(instance);
        }
        if let Some(w) = m.join_waiter {
            replies.push(Reply::Join(w, JoinResponse::error(ResponseError::UnknownMemberId, id)));
        }
        if let Some(w) = m.sync_waiter {
            replies.push(Reply::Sync(w, SyncResponse::error(ResponseError::UnknownMemberId)));
        }
    }
}

/// The last member is gone: the group is Empty, its generation over.
fn become_empty(group: &mut Group, now: Ms) {
    if group.state != State::Empty {
        group.generation += 1;
        group.empty_since = Some(now);
    }
    group.state = State::Empty;
    group.leader = None;
    group.protocol = None;
    // Kafka keeps the protocol type: an emptied consumer group still lists as "consumer",
    // not as a simple group (one that only ever had offsets committed).
}

/// After members left: an empty group is Empty; otherwise the rest rebalance.
fn after_departure(group: &mut Group, now: Ms) -> Vec<Reply> {
    if group.members.is_empty() {
        become_empty(group, now);
        return Vec::new();
    }
    let mut replies = Vec::new();
    if group.state != State::PreparingRebalance {
        replies.extend(prepare_rebalance(group, now));
    }
    replies.extend(maybe_complete_join(group, now));
    replies
}

/// Ends the join phase if every member has rejoined and no new group delay is running.
fn maybe_complete_join(group: &mut Group, now: Ms) -> Vec<Reply> {
    let all_joined = group.members.values().all(|m| m.join_waiter.is_some()) && group.pending.is_empty();
    if group.state == State::PreparingRebalance && all_joined && now >= group.join_not_before {
        complete_join(group, now)
    } else {
        Vec::new()
    }
}

/// Starts the next generation and answers every waiting join.
fn complete_join(group: &mut Group, now: Ms) -> Vec<Reply> {
    if group.members.is_empty() {
        become_empty(group, now);
        return Vec::new();
    }
    group.generation += 1;
    group.protocol = group.select_protocol();
    let oldest = group.members.values().min_by_key(|m| m.joined_seq).map(|m| m.id.clone());
    if group.leader.as_ref().is_none_or(|l| !group.members.contains_key(l)) {
        group.leader = oldest;
    }
    group.state = State::CompletingRebalance;
    group.sync_deadline = now + group.max_rebalance_timeout();
    let ids: Vec<String> = group.members.keys().cloned().collect();
    let mut replies = Vec::new();
    for id in ids {
        let is_leader = group.leader.as_deref() == Some(id.as_str());
        let resp = join_response(group, &id, is_leader);
        let m = group.members.get_mut(&id).expect("listed");
        m.last_heard = now;
        if let Some(w) = m.join_waiter.take() {
            replies.push(Reply::Join(w, resp));
        }
    }
    replies
}

fn join_response(group: &Group, member_id: &str, with_members: bool) -> JoinResponse {
    let protocol = group.protocol.clone();
    let members = if with_members {
        group
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: group.metadata_of(m),
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinResponse {
        error: None,
        generation_id: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: protocol,
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members,
        skip_assignment: false,
    }
}

fn sync_response(group: &Group, member_id: &str) -> SyncResponse {
    SyncResponse {
        error: None,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        assignment: group.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default(),
    }
}

mod record;
pub use record::{GroupRecord, MemberRecord};

#[cfg(test)]
mod tests;
