use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tests::requests::*;
use tests::*;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn describe_topic_configs(c: &mut Client, topic: &str) -> Vec<(String, String, i8)> {
    let req = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s(topic))
        .with_configuration_keys(None)]);
    let ResponseKind::DescribeConfigs(r) = c.call(4, RequestKind::DescribeConfigs(req)).await else { panic!() };
    assert_eq!(r.results[0].error_code, 0);
    r.results[0]
        .configs
        .iter()
        .map(|c| (c.name.to_string(), c.value.as_ref().unwrap().to_string(), c.config_source))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_validates_names_configs_and_replication() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "good", 2, &[("retention.ms", "1000")]).await, 0);
    assert_eq!(create_topic(&mut c, "good", 2, &[]).await, ResponseError::TopicAlreadyExists.code());
    assert_eq!(create_topic(&mut c, "bad/name", 1, &[]).await, ResponseError::InvalidTopicException.code());
    assert_eq!(create_topic(&mut c, "cfg", 1, &[("retention.ms", "soon")]).await, ResponseError::InvalidConfig.code());
    assert_eq!(create_topic(&mut c, "cfg", 1, &[("no.such.config", "1")]).await, ResponseError::InvalidConfig.code());
    assert_eq!(create_topic(&mut c, "zero", 0, &[]).await, ResponseError::InvalidPartitions.code());

    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(s("rf")))
        .with_num_partitions(1)
        .with_replication_factor(3)]);
    let ResponseKind::CreateTopics(r) = c.call(7, RequestKind::CreateTopics(req)).await else { panic!() };
    assert_eq!(r.topics[0].error_code, ResponseError::InvalidReplicationFactor.code());

    let req = CreateTopicsRequest::default().with_validate_only(true).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(s("dry")))
        .with_num_partitions(3)
        .with_replication_factor(-1)]);
    let ResponseKind::CreateTopics(r) = c.call(7, RequestKind::CreateTopics(req)).await else { panic!() };
    assert_eq!((r.topics[0].error_code, r.topics[0].num_partitions), (0, 3));
    let names: Vec<String> = server.node.metadata().topics.keys().cloned().collect();
    assert_eq!(names, vec!["good".to_string()], "only the valid, non-dry-run topic exists");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_alter_topic_configs() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "t", 1, &[("retention.ms", "1000")]).await, 0);
    let configs = describe_topic_configs(&mut c, "t").await;
    assert!(configs.contains(&("retention.ms".into(), "1000".into(), 1)));
    assert!(configs.contains(&("cleanup.policy".into(), "delete".into(), 5)));
    assert!(configs.contains(&("max.message.bytes".into(), "1048588".into(), 5)));

    let alter = |op: i8, name: &str, value: Option<&str>| {
        AlterableConfig::default().with_name(s(name)).with_config_operation(op).with_value(value.map(s))
    };
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s("t"))
        .with_configs(vec![
            alter(0, "message.timestamp.type", Some("LogAppendTime")),
            alter(1, "retention.ms", None),
        ])]);
    let ResponseKind::IncrementalAlterConfigs(r) = c.call(1, RequestKind::IncrementalAlterConfigs(req)).await else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0);
    let configs = describe_topic_configs(&mut c, "t").await;
    assert!(configs.contains(&("message.timestamp.type".into(), "LogAppendTime".into(), 1)));
    assert!(configs.contains(&("retention.ms".into(), "604800000".into(), 5)));

    // LogAppendTime now stamps batches with the broker's time.
    let before = broker::now_ms();
    let resp = produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "v", 5)]), -1).await.unwrap();
    assert!(resp.log_append_time_ms >= before);
    let stored = fetch(&mut c, "t", 0, 0, 0, 1).await.records.unwrap();
    let header = protocol::batch::BatchHeader::parse(&stored).unwrap();
    assert!(header.has_log_append_time());
    assert_eq!(header.max_timestamp, resp.log_append_time_ms);
    protocol::batch::validate(&header, &stored).expect("crc recomputed");

    let bad = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s("t"))
        .with_configs(vec![alter(0, "retention.bytes", Some("lots"))])]);
    let ResponseKind::IncrementalAlterConfigs(r) = c.call(1, RequestKind::IncrementalAlterConfigs(bad)).await else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, ResponseError::InvalidConfig.code());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_and_delete_topics() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "t", 1, &[]).await, 0);
    produce(&mut c, "t", 0, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();

    let grow = |count| {
        CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default().with_name(TopicName(s("t"))).with_count(count)])
    };
    let ResponseKind::CreatePartitions(r) = c.call(3, RequestKind::CreatePartitions(grow(3))).await else { panic!() };
    assert_eq!(r.results[0].error_code, 0);
    let ResponseKind::CreatePartitions(r) = c.call(3, RequestKind::CreatePartitions(grow(2))).await else { panic!() };
    assert_eq!(r.results[0].error_code, ResponseError::InvalidPartitions.code());
    let resp = produce(&mut c, "t", 2, encode_batch(&[TestRecord::new("k", "v", 1)]), -1).await.unwrap();
    assert_eq!((resp.error_code, resp.base_offset), (0, 0));

    let del = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default().with_name(Some(TopicName(s("t"))))]);
    let ResponseKind::DeleteTopics(r) = c.call(6, RequestKind::DeleteTopics(del.clone())).await else { panic!() };
    assert_eq!(r.responses[0].error_code, 0);
    let ResponseKind::DeleteTopics(r) = c.call(6, RequestKind::DeleteTopics(del)).await else { panic!() };
    assert_eq!(r.responses[0].error_code, ResponseError::UnknownTopicOrPartition.code());
    let md = metadata(&mut c, &["t"], false).await;
    assert_eq!(md.topics[0].error_code, ResponseError::UnknownTopicOrPartition.code());

    // A topic created again under the same name starts empty.
    assert_eq!(create_topic(&mut c, "t", 1, &[]).await, 0);
    let data = fetch(&mut c, "t", 0, 0, 0, 1).await;
    assert_eq!(data.high_watermark, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_names_this_broker() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    let ResponseKind::DescribeCluster(r) =
        c.call(1, RequestKind::DescribeCluster(DescribeClusterRequest::default())).await
    else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    assert_eq!(r.brokers.len(), 1);
    assert_eq!(r.brokers[0].port, server.kafka_addr.port() as i32);
    assert!(!r.cluster_id.is_empty());
    assert_eq!(r.cluster_authorized_operations, i32::MIN, "not asked for");

    // Authorized operations, when asked for: with no ACLs, everything each resource
    // supports (Kafka's AclOperation codes as bits).
    let req = DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
    let ResponseKind::DescribeCluster(r) = c.call(1, RequestKind::DescribeCluster(req)).await else { panic!() };
    let cluster = [5, 7, 8, 9, 10, 11, 12].iter().fold(0, |bits, op| bits | 1 << op);
    assert_eq!(r.cluster_authorized_operations, cluster);
    assert_eq!(create_topic(&mut c, "t", 1, &[]).await, 0);
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s("t"))))]))
        .with_include_cluster_authorized_operations(true)
        .with_include_topic_authorized_operations(true);
    let ResponseKind::Metadata(r) = c.call(10, RequestKind::Metadata(req)).await else { panic!() };
    assert_eq!(r.cluster_authorized_operations, cluster);
    let topic = [3, 4, 5, 6, 7, 8, 10, 11].iter().fold(0, |bits, op| bits | 1 << op);
    assert_eq!(r.topics[0].topic_authorized_operations, topic);
    assert_eq!(metadata(&mut c, &["t"], false).await.topics[0].topic_authorized_operations, i32::MIN);
    server.shutdown().await;
}
