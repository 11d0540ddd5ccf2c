//! Consumer group offsets go through the coordinating partition's raft group and survive
//! a restart; members join, sync, heartbeat, commit and leave; groups are described,
//! listed and deleted; the offsets of empty groups expire.

use storage::CommittedOffset;
use tests::requests::*;
use tests::*;

fn committed(offset: i64) -> CommittedOffset {
    CommittedOffset { offset, leader_epoch: 2, metadata: format!("note {offset}"), commit_timestamp: broker::now_ms() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_are_raft_writes_that_survive_a_restart() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "coordinating", 1, &[]).await, 0);
    let p = server.node.partition("coordinating", 0).unwrap();
    p.commit_offsets(
        "billing".into(),
        vec![
            ("orders".into(), 0, committed(42)),
            ("orders".into(), 1, committed(7)),
            ("refunds".into(), 0, committed(3)),
        ],
    )
    .await
    .unwrap();
    p.commit_offsets("billing".into(), vec![("orders".into(), 0, committed(50))]).await.unwrap();
    p.delete_offsets("billing".into(), Some(vec![("refunds".into(), 0)])).await.unwrap();
    p.commit_offsets("audit".into(), vec![("orders".into(), 0, committed(1))]).await.unwrap();
    drop(p);
    server.shutdown().await;

    let server = start(test_config(dir.path())).await;
    let p = server.node.partition("coordinating", 0).unwrap();
    let listed: Vec<(String, i32, i64, String)> = p
        .offsets_store
        .list("billing")
        .unwrap()
        .into_iter()
        .map(|(t, part, o)| (t, part, o.offset, o.metadata))
        .collect();
    assert_eq!(listed, vec![("orders".into(), 0, 50, "note 50".into()), ("orders".into(), 1, 7, "note 7".into())]);
    assert_eq!(p.offsets_store.get("billing", "orders", 1).unwrap().unwrap().leader_epoch, 2);
    p.delete_offsets("billing".into(), None).await.unwrap();
    assert!(p.offsets_store.list("billing").unwrap().is_empty());
    assert_eq!(p.offsets_store.list("audit").unwrap().len(), 1);
    drop(p);
    server.shutdown().await;
}

mod wire {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::ResponseError;
    use tests::requests::*;
    use tests::*;

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    async fn commit(
        c: &mut Client,
        group: &str,
        generation: i32,
        parts: &[(&str, i32, i64, &str)],
    ) -> Vec<(String, i32, i16)> {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (t, p, o, m) in parts {
            let part = OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(4)
                .with_committed_metadata(Some(s(m)));
            match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
                Some(x) => x.partitions.push(part),
                None => topics
                    .push(OffsetCommitRequestTopic::default().with_name(TopicName(s(t))).with_partitions(vec![part])),
            }
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(topics);
        match c.call(8, RequestKind::OffsetCommit(req)).await {
            ResponseKind::OffsetCommit(r) => r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), p.partition_index, p.error_code)))
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// OffsetFetch v7 (one group) of the given partitions: (offset, leader epoch, metadata).
    async fn fetch_v7(c: &mut Client, group: &str, topic: &str, parts: &[i32]) -> Vec<(i64, i32, String)> {
        let req = OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name(TopicName(s(topic))).with_partition_indexes(parts.to_vec()),
        ]));
        match c.call(7, RequestKind::OffsetFetch(req)).await {
            ResponseKind::OffsetFetch(r) => {
                assert_eq!(r.error_code, 0);
                r.topics[0]
                    .partitions
                    .iter()
                    .map(|p| {
                        (p.committed_offset, p.committed_leader_epoch, p.metadata.as_deref().unwrap_or("").to_string())
                    })
                    .collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_commits_of_one_connection_land_in_the_order_sent() {
        let dir = temp_dir();
        let server = start(test_config(dir.path())).await;
        let mut c = Client::connect(server.kafka_addr).await;
        assert_eq!(create_topic(&mut c, "orders", 1, &[]).await, 0);
        assert_eq!(commit(&mut c, "async", -1, &[("orders", 0, 0, "")]).await[0].2, 0);
        // As commitAsync does: many commits in flight on one connection, then a fetch.
        const N: i64 = 300;
        for offset in 1..=N {
            let part = OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset);
            let req = OffsetCommitRequest::default()
                .with_group_id(GroupId(s("async")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("orders")))
                    .with_partitions(vec![part])]);
            c.send(ApiKey::OffsetCommit, 8, &RequestKind::OffsetCommit(req)).await;
        }
        let req = OffsetFetchRequest::default().with_group_id(GroupId(s("async"))).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name(TopicName(s("orders"))).with_partition_indexes(vec![0]),
        ]));
        c.send(ApiKey::OffsetFetch, 7, &RequestKind::OffsetFetch(req)).await;
        for _ in 1..=N {
            let frame = c.read_frame().await.expect("commit response");
            match protocol::frame::decode_response(frame, ApiKey::OffsetCommit, 8).unwrap().1 {
                ResponseKind::OffsetCommit(r) => assert_eq!(r.topics[0].partitions[0].error_code, 0),
                other => panic!("unexpected {other:?}"),
            }
        }
        let frame = c.read_frame().await.expect("fetch response");
        match protocol::frame::decode_response(frame, ApiKey::OffsetFetch, 7).unwrap().1 {
            ResponseKind::OffsetFetch(r) => assert_eq!(r.topics[0].partitions[0].committed_offset, N),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(fetch_v7(&mut c, "async", "orders", &[0]).await[0].0, N);
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_commit_and_fetch_over_the_wire_and_survive_a_restart() {
        let dir = temp_dir();
        let mut config = test_config(dir.path());
        config.offsets_topic_num_partitions = 4;
        let server = start(config.clone()).await;
        let mut c = Client::connect(server.kafka_addr).await;
        assert_eq!(create_topic(&mut c, "orders", 2, &[]).await, 0);

        // FindCoordinator, single key (v3) and batched (v4): this node; the offsets topic
        // appears with the configured partitions.
        let req = FindCoordinatorRequest::default().with_key(s("billing")).with_key_type(0);
        match c.call(3, RequestKind::FindCoordinator(req)).await {
            ResponseKind::FindCoordinator(r) => {
                assert_eq!((r.error_code, r.node_id.0, r.port), (0, 1, server.kafka_addr.port() as i32));
            }
            other => panic!("unexpected {other:?}"),
        }
        let req =
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("billing"), s("audit")]).with_key_type(0);
        match c.call(4, RequestKind::FindCoordinator(req)).await {
            ResponseKind::FindCoordinator(r) => {
                assert_eq!(r.coordinators.len(), 2);
                assert!(r.coordinators.iter().all(|x| x.error_code == 0 && x.node_id.0 == 1));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Transactions are not implemented: a fatal error, not a retriable one; an unknown
        // key type is an invalid request.
        for (key_type, code) in
            [(1, ResponseError::TransactionalIdAuthorizationFailed), (7, ResponseError::InvalidRequest)]
        {
            let req = FindCoordinatorRequest::default().with_coordinator_keys(vec![s("tx")]).with_key_type(key_type);
            match c.call(4, RequestKind::FindCoordinator(req)).await {
                ResponseKind::FindCoordinator(r) => assert_eq!(r.coordinators[0].error_code, code.code()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(server.node.metadata().topics["__consumer_offsets"].partitions.len(), 4);

        // Nothing committed yet: -1, not an error.
        assert_eq!(fetch_v7(&mut c, "billing", "orders", &[0]).await, vec![(-1, -1, String::new())]);
        // Commits without group management; an unknown topic or partition is refused alone.
        let got = commit(
            &mut c,
            "billing",
            -1,
            &[("orders", 0, 42, "first"), ("orders", 1, 7, ""), ("orders", 9, 1, ""), ("nope", 0, 1, "")],
        )
        .await;
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(
            got,
            vec![
                ("orders".into(), 0, 0),
                ("orders".into(), 1, 0),
                ("orders".into(), 9, unknown),
                ("nope".into(), 0, unknown)
            ]
        );
        // A commit claiming a generation no member here has is stale.
        let got = commit(&mut c, "billing", 3, &[("orders", 0, 99, "")]).await;
        assert_eq!(got[0].2, ResponseError::IllegalGeneration.code());
        assert_eq!(
            fetch_v7(&mut c, "billing", "orders", &[0, 1]).await,
            vec![(42, 4, "first".to_string()), (7, 4, String::new())]
        );
        drop(c);
        server.shutdown().await;

        let server = start(config).await;
        let mut c = Client::connect(server.kafka_addr).await;
        assert_eq!(fetch_v7(&mut c, "billing", "orders", &[0]).await, vec![(42, 4, "first".to_string())]);
        // v8: several groups, and "all topics" for one of them.
        let req = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default().with_group_id(GroupId(s("billing"))).with_topics(None),
            OffsetFetchRequestGroup::default().with_group_id(GroupId(s("never"))).with_topics(Some(vec![
                OffsetFetchRequestTopics::default().with_name(TopicName(s("orders"))).with_partition_indexes(vec![1]),
            ])),
        ]);
        match c.call(8, RequestKind::OffsetFetch(req)).await {
            ResponseKind::OffsetFetch(r) => {
                assert_eq!(r.groups.len(), 2);
                let billing: Vec<(i32, i64)> =
                    r.groups[0].topics[0].partitions.iter().map(|p| (p.partition_index, p.committed_offset)).collect();
                assert_eq!(billing, vec![(0, 42), (1, 7)]);
                assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, -1);
            }
            other => panic!("unexpected {other:?}"),
        }

        // OffsetDelete drops one partition's commit; a group without offsets is not found.
        let delete = |group: &str| {
            OffsetDeleteRequest::default().with_group_id(GroupId(s(group))).with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("orders")))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(1)
                    ]),
            ])
        };
        match c.call(0, RequestKind::OffsetDelete(delete("billing"))).await {
            ResponseKind::OffsetDelete(r) => assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            fetch_v7(&mut c, "billing", "orders", &[0, 1]).await,
            vec![(42, 4, "first".to_string()), (-1, -1, String::new())]
        );
        match c.call(0, RequestKind::OffsetDelete(delete("never"))).await {
            ResponseKind::OffsetDelete(r) => assert_eq!(r.error_code, ResponseError::GroupIdNotFound.code()),
            other => panic!("unexpected {other:?}"),
        }
        server.shutdown().await;
    }
}

mod membership {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::ResponseError;
    use tests::requests::*;
    use tests::*;

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    async fn describe(c: &mut Client, version: i16) -> describe_groups_response::DescribedGroup {
        let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("members"))]);
        match c.call(version, RequestKind::DescribeGroups(req)).await {
            ResponseKind::DescribeGroups(mut r) => r.groups.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// ListGroups v5 with a state filter: `(group, state, protocol type)`.
    async fn list(c: &mut Client, states: &[&str]) -> Vec<(String, String, String)> {
        let req = ListGroupsRequest::default().with_states_filter(states.iter().map(|v| s(v)).collect());
        match c.call(5, RequestKind::ListGroups(req)).await {
            ResponseKind::ListGroups(r) => {
                assert_eq!(r.error_code, 0);
                r.groups
                    .into_iter()
                    .map(|g| (g.group_id.0.to_string(), g.group_state.to_string(), g.protocol_type.to_string()))
                    .collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn delete_group(c: &mut Client) -> i16 {
        let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("members"))]);
        match c.call(2, RequestKind::DeleteGroups(req)).await {
            ResponseKind::DeleteGroups(r) => r.results[0].error_code,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_joins_syncs_heartbeats_commits_and_leaves() {
        let dir = temp_dir();
        let mut config = test_config(dir.path());
        config.offsets_topic_num_partitions = 2;
        config.group_initial_rebalance_delay_ms = 0;
        let server = start(config).await;
        let mut c = Client::connect(server.kafka_addr).await;
        assert_eq!(create_topic(&mut c, "events", 1, &[]).await, 0);

        // KIP-394: the first join only hands out a member id.
        let first = join_group(&mut c, "members", "").await;
        assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
        let member = first.member_id.to_string();
        assert!(!member.is_empty());
        let joined = join_group(&mut c, "members", &member).await;
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(joined.leader.as_str(), member);
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));
        assert_eq!(joined.members.len(), 1);

        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("members")))
            .with_generation_id(1)
            .with_member_id(s(&member))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(bytes::Bytes::from("events-0"))]);
        match c.call(5, RequestKind::SyncGroup(sync)).await {
            ResponseKind::SyncGroup(r) => assert_eq!((r.error_code, r.assignment.as_ref()), (0, &b"events-0"[..])),
            other => panic!("unexpected {other:?}"),
        }
        let beat = |generation| {
            RequestKind::Heartbeat(
                HeartbeatRequest::default()
                    .with_group_id(GroupId(s("members")))
                    .with_generation_id(generation)
                    .with_member_id(s(&member)),
            )
        };
        match c.call(4, beat(1)).await {
            ResponseKind::Heartbeat(r) => assert_eq!(r.error_code, 0),
            other => panic!("unexpected {other:?}"),
        }
        match c.call(4, beat(0)).await {
            ResponseKind::Heartbeat(r) => assert_eq!(r.error_code, ResponseError::IllegalGeneration.code()),
            other => panic!("unexpected {other:?}"),
        }

        // The admin view of the running group.
        let g = describe(&mut c, 5).await;
        assert_eq!(g.error_code, 0);
        assert_eq!(
            (g.group_state.as_str(), g.protocol_type.as_str(), g.protocol_data.as_str()),
            ("Stable", "consumer", "range")
        );
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.members[0].member_id.as_str(), member);
        assert_eq!(g.members[0].client_host.as_str(), "/127.0.0.1");
        assert_eq!(g.members[0].member_metadata.as_ref(), b"m");
        assert_eq!(g.members[0].member_assignment.as_ref(), b"events-0");
        assert_eq!(list(&mut c, &[]).await, [("members".to_string(), "Stable".to_string(), "consumer".to_string())]);
        assert!(list(&mut c, &["empty"]).await.is_empty());
        assert_eq!(delete_group(&mut c).await, ResponseError::NonEmptyGroup.code());

        // Commits: the member in its generation is accepted; one without group management
        // is not, now that the group has members.
        let commit = |generation: i32, member: &str| {
            RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("members")))
                    .with_generation_id_or_member_epoch(generation)
                    .with_member_id(s(member))
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s("events")))
                        .with_partitions(vec![OffsetCommitRequestPartition::default().with_committed_offset(5)])]),
            )
        };
        for (generation, who, want) in [(1, member.as_str(), 0), (-1, "", ResponseError::UnknownMemberId.code())] {
            match c.call(8, commit(generation, who)).await {
                ResponseKind::OffsetCommit(r) => {
                    assert_eq!(r.topics[0].partitions[0].error_code, want, "generation {generation}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }

        let leave = LeaveGroupRequest::default().with_group_id(GroupId(s("members"))).with_members(vec![
            leave_group_request::MemberIdentity::default().with_member_id(s(&member)),
            leave_group_request::MemberIdentity::default().with_member_id(s("stranger")),
        ]);
        match c.call(4, RequestKind::LeaveGroup(leave)).await {
            ResponseKind::LeaveGroup(r) => {
                let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
                assert_eq!(codes, vec![0, ResponseError::UnknownMemberId.code()]);
            }
            other => panic!("unexpected {other:?}"),
        }
        // The group is empty again: commits without group management are back.
        match c.call(8, commit(-1, "")).await {
            ResponseKind::OffsetCommit(r) => assert_eq!(r.topics[0].partitions[0].error_code, 0),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(describe(&mut c, 5).await.group_state.as_str(), "Empty");
        assert_eq!(list(&mut c, &["Empty"]).await.len(), 1);
        // Deleting the empty group drops its offsets too.
        assert_eq!(delete_group(&mut c).await, 0);
        assert!(server
            .node
            .coordinator_for("members")
            .await
            .unwrap()
            .offsets_store
            .list("members")
            .unwrap()
            .is_empty());
        assert!(list(&mut c, &[]).await.is_empty());
        let gone = describe(&mut c, 5).await;
        assert_eq!((gone.error_code, gone.group_state.as_str()), (0, "Dead"));
        assert_eq!(describe(&mut c, 6).await.error_code, ResponseError::GroupIdNotFound.code());
        assert_eq!(delete_group(&mut c).await, ResponseError::GroupIdNotFound.code());
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stable_group_carries_on_after_a_restart_without_a_rebalance() {
        let dir = temp_dir();
        let config = || {
            let mut config = test_config(dir.path());
            config.offsets_topic_num_partitions = 2;
            config.group_initial_rebalance_delay_ms = 0;
            config
        };
        let server = start(config()).await;
        let mut c = Client::connect(server.kafka_addr).await;
        let member = join_group(&mut c, "members", "").await.member_id.to_string();
        assert_eq!(join_group(&mut c, "members", &member).await.generation_id, 1);
        assert_eq!(sync_group(&mut c, "members", &member, 1).await.error_code, 0);
        // The record of the stable generation is written through raft in the background.
        let p = server.node.coordinator_for("members").await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while p.offsets_store.records().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "group record never stored");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop((p, c));
        server.shutdown().await;

        let server = start(config()).await;
        let mut c = Client::connect(server.kafka_addr).await;
        // The member heartbeats in its generation as if nothing happened.
        assert_eq!(heartbeat(&mut c, "members", &member, 1).await, 0);
        let g = describe(&mut c, 5).await;
        assert_eq!((g.group_state.as_str(), g.protocol_data.as_str()), ("Stable", "range"));
        assert_eq!(g.members[0].member_id.as_str(), member);
        assert_eq!(g.members[0].member_assignment.as_ref(), b"events-0");
        // A follower's sync in the same generation gets its assignment back.
        assert_eq!(sync_group(&mut c, "members", &member, 1).await.assignment.as_ref(), b"events-0");
        // A rejoin after the restart is the next generation.
        assert_eq!(join_group(&mut c, "members", &member).await.generation_id, 2);
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_of_empty_groups_expire_and_groups_with_offsets_are_listed() {
        let dir = temp_dir();
        let mut config = test_config(dir.path());
        config.offsets_topic_num_partitions = 3;
        config.group_initial_rebalance_delay_ms = 0;
        let server = start(config).await;
        let mut c = Client::connect(server.kafka_addr).await;
        assert_eq!(create_topic(&mut c, "events", 1, &[]).await, 0);
        let commit = |group: &str| {
            RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(GroupId(s(group)))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s("events")))
                        .with_partitions(vec![OffsetCommitRequestPartition::default().with_committed_offset(3)])]),
            )
        };
        for group in ["idle", "members"] {
            match c.call(8, commit(group)).await {
                ResponseKind::OffsetCommit(r) => assert_eq!(r.topics[0].partitions[0].error_code, 0),
                other => panic!("unexpected {other:?}"),
            }
        }
        // "members" gets a member; "idle" only has offsets, yet is listed, as Empty.
        let member = join_group(&mut c, "members", "").await.member_id.to_string();
        assert_eq!(join_group(&mut c, "members", &member).await.error_code, 0);
        let mut listed = list(&mut c, &[]).await;
        listed.sort();
        assert_eq!(listed[0], ("idle".to_string(), "Empty".to_string(), String::new()));
        assert_eq!(listed[1].0, "members");

        let offsets = |server: &broker::Server, group: &'static str| {
            let node = server.node.clone();
            async move { node.coordinator_for(group).await.unwrap().offsets_store.list(group).unwrap().len() }
        };
        // Within the retention nothing goes.
        broker::retention::expire_offsets(&server.node).await;
        assert_eq!((offsets(&server, "idle").await, offsets(&server, "members").await), (1, 1));
        drop(c);
        server.shutdown().await;

        // With a retention of zero, the group without members loses its offsets at the next
        // pass; the group with a member keeps them.
        let mut config = test_config(dir.path());
        config.offsets_retention_minutes = 0;
        config.group_initial_rebalance_delay_ms = 0;
        let server = start(config).await;
        let mut c = Client::connect(server.kafka_addr).await;
        let member = join_group(&mut c, "members", "").await.member_id.to_string();
        assert_eq!(join_group(&mut c, "members", &member).await.error_code, 0);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        broker::retention::expire_offsets(&server.node).await;
        assert_eq!((offsets(&server, "idle").await, offsets(&server, "members").await), (0, 1));
        server.shutdown().await;
    }
}
