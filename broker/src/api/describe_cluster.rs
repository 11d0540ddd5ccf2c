//! DescribeCluster: this node, the cluster id and the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::{operations, Call};

pub fn handle(call: &Call, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let node = &call.node;
    let (host, port) = crate::config::split_host_port(node.config.advertised());
    let id = BrokerId(node.config.node_id as i32);
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(node.metadata().cluster_id.clone()))
        .with_controller_id(id)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(id)
            .with_host(StrBytes::from_string(host))
            .with_port(port)])
        .with_cluster_authorized_operations(operations::answer(
            req.include_cluster_authorized_operations,
            operations::CLUSTER,
        ))
}
