//! DescribeCluster: the nodes, the cluster id and the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::{operations, Call};

pub fn handle(call: &Call, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let node = &call.node;
    let brokers = node
        .brokers()
        .into_iter()
        .map(|(id, host, port)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id as i32))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
        .collect();
    let controller = node.controller_leader().unwrap_or(node.config.node_id);
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(node.metadata().cluster_id.clone()))
        .with_controller_id(BrokerId(controller as i32))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(operations::answer(
            req.include_cluster_authorized_operations,
            operations::CLUSTER,
        ))
}
