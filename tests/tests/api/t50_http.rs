use tests::requests::*;
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    let status = body.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_describe_the_node() {
    let dir = temp_dir();
    let server = start(test_config(dir.path())).await;
    let mut c = Client::connect(server.kafka_addr).await;
    assert_eq!(create_topic(&mut c, "seen", 2, &[]).await, 0);
    produce(&mut c, "seen", 1, encode_batch(&[TestRecord::new("k", "v", 1), TestRecord::new("k", "w", 2)]), -1)
        .await
        .unwrap();
    fetch(&mut c, "seen", 1, 0, 0, 1).await;

    let (status, body) = http_get(server.http_addr, "/health").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    let (status, body) = http_get(server.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        "quarry_high_watermark{topic=\"seen\",partition=\"1\"} 2",
        "quarry_high_watermark{topic=\"seen\",partition=\"0\"} 0",
        "quarry_records_in_total{topic=\"seen\"}",
        "quarry_bytes_in_total{topic=\"seen\"}",
        "quarry_records_out_total{topic=\"seen\"}",
        "quarry_bytes_out_total{topic=\"seen\"}",
        "quarry_requests_total{api=\"Produce\"}",
        "quarry_request_seconds_bucket{api=\"Fetch\"",
        "quarry_fsync_seconds_count",
    ] {
        assert!(body.contains(series), "/metrics lacks {series}");
    }
    let (status, _) = http_get(server.http_addr, "/nope").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}
