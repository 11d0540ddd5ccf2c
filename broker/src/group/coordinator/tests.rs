//! The coordinator as pure logic: calls and ticks in, replies checked.

use super::*;

const SESSION: u64 = 10_000;
const REBALANCE: u64 = 30_000;

fn coordinator(initial_delay: u64) -> Coordinator {
    Coordinator::new(Settings { initial_rebalance_delay_ms: initial_delay, ..Settings::default() })
}

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names.iter().map(|n| Protocol { name: n.to_string(), metadata: Bytes::from(format!("meta-{n}")) }).collect()
}

fn join_req(member_id: &str, instance: Option<&str>, names: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: instance.map(str::to_string),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: protocols(names),
        require_known_member_id: true,
        supports_skip_assignment: true,
    }
}

fn sync_req(member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        group_id: "g".into(),
        generation_id: generation,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: None,
        assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from(a.to_string()))).collect(),
    }
}

fn join_reply(replies: &[Reply], waiter: Waiter) -> Option<JoinResponse> {
    replies.iter().find_map(|r| match r {
        Reply::Join(w, resp) if *w == waiter => Some(resp.clone()),
        _ => None,
    })
}

fn sync_reply(replies: &[Reply], waiter: Waiter) -> Option<SyncResponse> {
    replies.iter().find_map(|r| match r {
        Reply::Sync(w, resp) if *w == waiter => Some(resp.clone()),
        _ => None,
    })
}

/// A new member's first join: MEMBER_ID_REQUIRED, then a join with that id.
fn join_new(c: &mut Coordinator, now: Ms, waiter: Waiter, names: &[&str]) -> (String, Vec<Reply>) {
    let first = c.join(now, waiter, join_req("", None, names));
    let resp = join_reply(&first, waiter).expect("answered at once");
    assert_eq!(resp.error, Some(ResponseError::MemberIdRequired));
    assert!(!resp.member_id.is_empty());
    let replies = c.join(now, waiter, join_req(&resp.member_id, None, names));
    (resp.member_id, replies)
}

/// A one-member group, Stable in generation 1 with assignment "a".
fn stable_single(c: &mut Coordinator) -> String {
    let (a, replies) = join_new(c, 0, 1, &["range"]);
    assert_eq!(join_reply(&replies, 1).unwrap().generation_id, 1);
    let replies = c.sync(0, 2, sync_req(&a, 1, &[(&a, "a")]));
    assert_eq!(sync_reply(&replies, 2).unwrap().assignment, Bytes::from("a"));
    a
}

#[test]
fn a_new_group_waits_the_initial_delay_then_makes_the_first_member_leader() {
    let mut c = coordinator(100);
    let (a, replies) = join_new(&mut c, 0, 1, &["range"]);
    assert!(replies.is_empty(), "the join waits for more members");
    assert_eq!(c.describe("g").unwrap().state, State::PreparingRebalance);
    assert!(c.tick(50).is_empty());
    assert_eq!(c.next_deadline(), Some(100));
    let replies = c.tick(100);
    let resp = join_reply(&replies, 1).expect("answered at the end of the delay");
    assert_eq!(resp.error, None);
    assert_eq!(resp.generation_id, 1);
    assert_eq!(resp.leader, a);
    assert_eq!(resp.protocol_name.as_deref(), Some("range"));
    assert_eq!(resp.members.len(), 1);
    assert_eq!(resp.members[0].metadata, Bytes::from("meta-range"));
    assert_eq!(c.describe("g").unwrap().state, State::CompletingRebalance);
}

#[test]
fn a_second_member_triggers_a_rebalance_and_both_get_their_assignments() {
    let mut c = coordinator(0);
    let a = stable_single(&mut c);
    let (b, replies) = join_new(&mut c, 10, 3, &["range"]);
    assert!(join_reply(&replies, 3).is_none(), "B waits for A to rejoin");
    assert_eq!(c.heartbeat(20, "g", &a, None, 1), Some(ResponseError::RebalanceInProgress));
    let replies = c.join(30, 4, join_req(&a, None, &["range"]));
    let (ra, rb) = (join_reply(&replies, 4).unwrap(), join_reply(&replies, 3).unwrap());
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(ra.leader, a, "the oldest member stays leader");
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty(), "only the leader sees the members");

    // B's sync waits for the leader's.
    assert!(c.sync(40, 5, sync_req(&b, 2, &[])).is_empty());
    let replies = c.sync(50, 6, sync_req(&a, 2, &[(&a, "pa"), (&b, "pb")]));
    assert_eq!(sync_reply(&replies, 6).unwrap().assignment, Bytes::from("pa"));
    assert_eq!(sync_reply(&replies, 5).unwrap().assignment, Bytes::from("pb"));
    let described = c.describe("g").unwrap();
    assert_eq!(described.state, State::Stable);
    assert_eq!(described.members.len(), 2);
}

#[test]
fn stale_generations_and_unknown_members_are_fenced() {
    let mut c = coordinator(0);
    let a = stable_single(&mut c);
    assert_eq!(c.heartbeat(10, "g", &a, None, 1), None);
    assert_eq!(c.heartbeat(10, "g", &a, None, 0), Some(ResponseError::IllegalGeneration));
    assert_eq!(c.heartbeat(10, "g", "nobody", None, 1), Some(ResponseError::UnknownMemberId));
    let replies = c.sync(10, 9, sync_req(&a, 7, &[]));
    assert_eq!(sync_reply(&replies, 9).unwrap().error, Some(ResponseError::IllegalGeneration));
    let replies = c.join(10, 10, join_req("made-up", None, &["range"]));
    assert_eq!(join_reply(&replies, 10).unwrap().error, Some(ResponseError::UnknownMemberId));
}

#[test]
fn a_member_that_misses_its_session_is_removed_and_the_rest_rebalance() {
    let mut c = coordinator(0);
    let a = stable_single(&mut c);
    let (b, _) = join_new(&mut c, 0, 3, &["range"]);
    let replies = c.join(0, 4, join_req(&a, None, &["range"]));
    assert_eq!(join_reply(&replies, 4).unwrap().generation_id, 2);
    c.sync(0, 5, sync_req(&b, 2, &[]));
    c.sync(0, 6, sync_req(&a, 2, &[(&a, "x"), (&b, "y")]));

    // A keeps heartbeating, B goes silent.
    for t in (1_000..SESSION).step_by(1_000) {
        assert_eq!(c.heartbeat(t, "g", &a, None, 2), None);
    }
    assert!(c.next_deadline().unwrap() <= SESSION);
    c.tick(SESSION);
    assert_eq!(c.heartbeat(SESSION + 1, "g", &a, None, 2), Some(ResponseError::RebalanceInProgress));
    let replies = c.join(SESSION + 2, 7, join_req(&a, None, &["range"]));
    let resp = join_reply(&replies, 7).unwrap();
    assert_eq!(resp.generation_id, 3);
    assert_eq!(resp.members.iter().map(|m| m.member_id.clone()).collect::<Vec<_>>(), vec![a.clone()]);
    assert_eq!(c.heartbeat(SESSION + 3, "g", &b, None, 2), Some(ResponseError::UnknownMemberId));
}

#[test]
fn a_member_that_does_not_rejoin_in_time_is_dropped_from_the_rebalance() {
    let mut c = coordinator(0);
    let a = stable_single(&mut c);
    let (_b, replies) = join_new(&mut c, 0, 3, &["range"]);
    assert!(replies.is_empty());
    // A's session still runs while the group waits for rejoins (as in Kafka), and ends
    // before the rebalance timeout.
    assert_eq!(c.next_deadline(), Some(SESSION));
    // A never rejoins (nor heartbeats): it is out when its session ends, and the join
    // phase completes without it.
    let replies = c.tick(SESSION);
    let resp = join_reply(&replies, 3).unwrap();
    assert_eq!(resp.generation_id, 2);
    assert_eq!(resp.members.len(), 1);
    assert_ne!(resp.leader, a);
}

#[test]
fn leaving_rebalances_the_rest_and_the_last_one_empties_the_group() {
    let mut c = coordinator(0);
    let a = stable_single(&mut c);
    let (b, _) = join_new(&mut c, 0, 3, &["range"]);
    c.join(0, 4, join_req(&a, None, &["range"]));
    c.sync(0, 5, sync_req(&b, 2, &[]));
    c.sync(0, 6, sync_req(&a, 2, &[]));
    let (errors, _) = c.leave(10, "g", &[(a.clone(), None), ("ghost".into(), None)]);
    assert_eq!(errors, vec![None, Some(ResponseError::UnknownMemberId)]);
    assert_eq!(c.heartbeat(11, "g", &b, None, 2), Some(ResponseError::RebalanceInProgress));
    let replies = c.join(12, 7, join_req(&b, None, &["range"]));
    let resp = join_reply(&replies, 7).unwrap();
    assert_eq!((resp.generation_id, resp.leader.as_str()), (3, b.as_str()));
    let (errors, _) = c.leave(20, "g", &[(b.clone(), None)]);
    assert_eq!(errors, vec![None]);
    assert_eq!(c.describe("g").unwrap().state, State::Empty);
    // An emptied group keeps its protocol type (a consumer group, not a simple one)...
    assert_eq!(c.list(), vec![("g".to_string(), State::Empty, "consumer".to_string())]);
    // ...and the next first member may bring another.
    let connect = |id: &str| JoinRequest { protocol_type: "connect".into(), ..join_req(id, None, &["range"]) };
    let replies = c.join(30, 8, connect(""));
    let resp = join_reply(&replies, 8).unwrap();
    assert_eq!(resp.error, Some(ResponseError::MemberIdRequired));
    c.join(30, 9, connect(&resp.member_id));
    assert_eq!(c.list()[0].2, "connect");
}

#[test]
fn a_static_member_restarting_within_its_session_keeps_its_assignment() {
    let mut c = coordinator(0);
    let replies = c.join(0, 1, join_req("", Some("pod-1"), &["range"]));
    let first = join_reply(&replies, 1).expect("static members join without MEMBER_ID_REQUIRED");
    assert_eq!(first.generation_id, 1);
    let old = first.member_id.clone();
    let replies =
        c.sync(0, 2, SyncRequest { group_instance_id: Some("pod-1".into()), ..sync_req(&old, 1, &[(&old, "p0")]) });
    assert_eq!(sync_reply(&replies, 2).unwrap().assignment, Bytes::from("p0"));

    // Restart: a join without member id, same instance id, same protocols.
    let replies = c.join(5_000, 3, join_req("", Some("pod-1"), &["range"]));
    let again = join_reply(&replies, 3).expect("answered at once, no rebalance");
    assert_eq!(again.error, None);
    assert_eq!(again.generation_id, 1, "same generation");
    assert_ne!(again.member_id, old);
    assert!(again.skip_assignment, "the leader must not reassign");
    assert_eq!(again.leader, again.member_id, "a v9 leader is told it leads, and to skip the assignment");
    assert_eq!(again.members.len(), 1);
    let new = again.member_id.clone();
    let replies = c.sync(5_001, 4, SyncRequest { group_instance_id: Some("pod-1".into()), ..sync_req(&new, 1, &[]) });
    assert_eq!(sync_reply(&replies, 4).unwrap().assignment, Bytes::from("p0"));
    assert_eq!(c.describe("g").unwrap().state, State::Stable);
    // The old incarnation is fenced.
    assert_eq!(c.heartbeat(5_002, "g", &old, Some("pod-1"), 1), Some(ResponseError::FencedInstanceId));

    // A client older than JoinGroup v9 cannot skip the assignment: it is answered as a
    // follower (no members, someone else's id as leader) and simply syncs.
    let old_client = JoinRequest { supports_skip_assignment: false, ..join_req("", Some("pod-1"), &["range"]) };
    let replies = c.join(6_000, 5, old_client);
    let older = join_reply(&replies, 5).expect("answered at once");
    assert_eq!((older.error, older.generation_id, older.skip_assignment), (None, 1, false));
    assert!(older.members.is_empty());
    assert_eq!(older.leader, new);
    assert_ne!(older.member_id, older.leader);
    let replies =
        c.sync(6_001, 6, SyncRequest { group_instance_id: Some("pod-1".into()), ..sync_req(&older.member_id, 1, &[]) });
    assert_eq!(sync_reply(&replies, 6).unwrap().assignment, Bytes::from("p0"));
}

#[test]
fn the_protocol_is_one_every_member_supports() {
    let mut c = coordinator(0);
    let (a, _) = join_new(&mut c, 0, 1, &["range", "roundrobin"]);
    c.sync(0, 2, sync_req(&a, 1, &[]));
    let (_, _) = join_new(&mut c, 0, 3, &["roundrobin"]);
    let replies = c.join(0, 4, join_req(&a, None, &["range", "roundrobin"]));
    assert_eq!(join_reply(&replies, 4).unwrap().protocol_name.as_deref(), Some("roundrobin"));
    // A member with nothing in common, or another protocol type, is refused.
    let replies = c.join(0, 5, join_req("", None, &["sticky"]));
    assert_eq!(join_reply(&replies, 5).unwrap().error, Some(ResponseError::InconsistentGroupProtocol));
    let replies = c.join(0, 6, JoinRequest { protocol_type: "connect".into(), ..join_req("", None, &["roundrobin"]) });
    assert_eq!(join_reply(&replies, 6).unwrap().error, Some(ResponseError::InconsistentGroupProtocol));
}

#[test]
fn session_timeouts_outside_the_broker_limits_are_refused() {
    let mut c = coordinator(0);
    let replies = c.join(0, 1, JoinRequest { session_timeout_ms: 10, ..join_req("", None, &["range"]) });
    assert_eq!(join_reply(&replies, 1).unwrap().error, Some(ResponseError::InvalidSessionTimeout));
}

#[test]
fn a_member_rejoining_unchanged_while_assignments_are_pending_gets_the_same_generation() {
    let mut c = coordinator(0);
    let (a, replies) = join_new(&mut c, 0, 1, &["range"]);
    assert_eq!(join_reply(&replies, 1).unwrap().generation_id, 1);
    // The join response was lost; the member asks again before syncing.
    let replies = c.join(5, 2, join_req(&a, None, &["range"]));
    let resp = join_reply(&replies, 2).unwrap();
    assert_eq!((resp.error, resp.generation_id, resp.members.len()), (None, 1, 1));
    assert_eq!(c.describe("g").unwrap().state, State::CompletingRebalance);
}

#[test]
fn activity_subscriptions_and_deletion_follow_membership() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut c = coordinator(0);
    assert_eq!(c.activity("g"), Activity::Unknown);
    // A real consumer subscription (version 1) as the member's protocol metadata.
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("orders"), StrBytes::from_static_str("refunds")]);
    let mut metadata = bytes::BytesMut::from(&1i16.to_be_bytes()[..]);
    subscription.encode(&mut metadata, 1).unwrap();
    let mut req = join_req("", None, &["range"]);
    req.protocols[0].metadata = metadata.freeze();
    let first = c.join(0, 1, req.clone());
    req.member_id = join_reply(&first, 1).unwrap().member_id;
    let a = req.member_id.clone();
    c.join(0, 2, req);
    c.sync(0, 3, sync_req(&a, 1, &[(&a, "a")]));

    assert_eq!(c.activity("g"), Activity::Active);
    assert_eq!(c.subscribed_topics("g").into_iter().collect::<Vec<_>>(), ["orders", "refunds"]);
    assert_eq!(c.delete("g"), Err(ResponseError::NonEmptyGroup));
    c.leave(500, "g", &[(a, None)]);
    assert_eq!(c.activity("g"), Activity::EmptySince(500));
    assert!(c.subscribed_topics("g").is_empty());
    assert_eq!(c.delete("g"), Ok(()));
    assert_eq!(c.activity("g"), Activity::Unknown);
    assert!(c.list().is_empty());
}

#[test]
fn records_are_handed_out_at_rest_and_restore_the_group() {
    let mut c = coordinator(0);
    // A first join that only hands out a member id leaves nothing worth storing.
    let first = c.join(0, 1, join_req("", None, &["range"]));
    assert!(c.take_changes().is_empty());
    let a = join_reply(&first, 1).unwrap().member_id;
    c.join(0, 2, join_req(&a, None, &["range"]));
    // Mid-rebalance (CompletingRebalance) is not a state to store.
    assert!(c.take_changes().is_empty());
    c.sync(0, 3, sync_req(&a, 1, &[(&a, "a-assignment")]));
    let changes = c.take_changes();
    assert_eq!(changes.len(), 1);
    let record = changes[0].1.clone().expect("stable group");
    assert_eq!((record.generation, record.leader.as_deref(), record.members.len()), (1, Some(a.as_str()), 1));
    assert_eq!(record.members[0].metadata, b"meta-range");
    assert_eq!(record.members[0].assignment, b"a-assignment");
    // Heartbeats change nothing stored.
    c.heartbeat(10, "g", &a, None, 1);
    assert!(c.take_changes().is_empty());

    // Another coordinator (a restarted node) loads the record: the member carries on.
    let mut restarted = coordinator(0);
    restarted.load(5_000, "g", record.clone());
    assert_eq!(restarted.heartbeat(5_001, "g", &a, None, 1), None);
    let replies = restarted.sync(5_002, 9, sync_req(&a, 1, &[]));
    assert_eq!(sync_reply(&replies, 9).unwrap().assignment, Bytes::from("a-assignment"));
    assert!(restarted.take_changes().is_empty(), "a loaded record is not stored again");
    // Its session runs from the load: silent past it, the member is dropped.
    restarted.tick(5_002 + SESSION);
    assert_eq!(restarted.describe("g").unwrap().state, State::Empty);
    let emptied = restarted.take_changes();
    assert_eq!(emptied[0].1.as_ref().unwrap().members.len(), 0);
    assert_eq!(emptied[0].1.as_ref().unwrap().generation, 2);
    // Deleting the group hands out its removal.
    assert_eq!(restarted.delete("g"), Ok(()));
    assert_eq!(restarted.take_changes(), vec![("g".to_string(), None)]);
}

#[test]
fn a_join_while_assignments_are_handed_out_answers_waiting_syncs_at_once() {
    let mut c = coordinator(0);
    let a = stable_single(&mut c);
    let (b, _) = join_new(&mut c, 10, 3, &["range"]);
    let replies = c.join(10, 4, join_req(&a, None, &["range"]));
    assert_eq!(join_reply(&replies, 4).unwrap().generation_id, 2);
    // The follower syncs first and waits for the leader's assignments.
    assert!(c.sync(11, 5, sync_req(&b, 2, &[])).is_empty());
    // A third member joins before the leader syncs: the waiting follower must hear now
    // that the generation is over, not at the rebalance timeout.
    let first = c.join(12, 6, join_req("", None, &["range"]));
    let third = join_reply(&first, 6).unwrap().member_id;
    let replies = c.join(12, 7, join_req(&third, None, &["range"]));
    assert_eq!(sync_reply(&replies, 5).map(|r| r.error), Some(Some(ResponseError::RebalanceInProgress)));
    assert_eq!(c.describe("g").unwrap().state, State::PreparingRebalance);
}

#[test]
fn a_silent_member_is_dropped_at_its_session_end_during_a_rebalance() {
    let mut c = coordinator(0);
    let a = stable_single(&mut c);
    let (b, _) = join_new(&mut c, 0, 3, &["range"]);
    let replies = c.join(0, 4, join_req(&a, None, &["range"]));
    c.sync(0, 5, sync_req(&b, 2, &[]));
    c.sync(0, 6, sync_req(&a, 2, &[(&a, "a"), (&b, "b")]));
    assert_eq!(join_reply(&replies, 4).unwrap().generation_id, 2);
    // A third member joins; a rejoins, b has stopped (no heartbeat, no join).
    let (_, _) = join_new(&mut c, 1_000, 7, &["range"]);
    c.join(1_000, 8, join_req(&a, None, &["range"]));
    assert_eq!(c.describe("g").unwrap().state, State::PreparingRebalance);
    // b's session (10 s from its last word at 0) ends long before the rebalance timeout:
    // that is the next thing due, and at that moment b is out and the rest go on.
    assert_eq!(c.next_deadline(), Some(SESSION));
    let replies = c.tick(SESSION);
    let joined: Vec<JoinResponse> = [7, 8].iter().filter_map(|w| join_reply(&replies, *w)).collect();
    assert_eq!(joined.len(), 2, "both waiting joins are answered");
    assert!(joined.iter().all(|r| r.generation_id == 3));
    assert!(c.describe("g").unwrap().members.iter().all(|m| m.member_id != b));
}
