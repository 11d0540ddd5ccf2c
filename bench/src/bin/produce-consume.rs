//! Produce-then-consume benchmark with librdkafka (the `rdkafka` crate) against a fresh
//! `quarry` node started by this program.
//!
//! Prints, for 100 B and 1 KiB records and acks=1 / acks=all: produce records/s and MB/s,
//! consume records/s and MB/s; the same produce with enable.idempotence=true beside plain
//! acks=all; a consumer group of 3 members reading a 6-partition topic; p50/p99 produce
//! latency at a fixed 50k records/s; the latency of a fetch whose data is already there;
//! the broker's CPU time and peak RSS.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use bench::Broker;

fn producer(port: u16, acks: &str) -> Result<BaseProducer> {
    producer_with(port, acks, false)
}

fn producer_with(port: u16, acks: &str, idempotent: bool) -> Result<BaseProducer> {
    producer_in_flight(port, acks, idempotent, None)
}

/// A producer; `in_flight` caps the requests in flight per connection.
fn producer_in_flight(port: u16, acks: &str, idempotent: bool, in_flight: Option<u32>) -> Result<BaseProducer> {
    let mut config = ClientConfig::new();
    if let Some(n) = in_flight {
        config.set("max.in.flight.requests.per.connection", n.to_string());
    }
    Ok(config
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("acks", acks)
        .set("enable.idempotence", idempotent.to_string())
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "none")
        .create()?)
}

/// Produces `count` records of `size` bytes to partition 0 as fast as possible.
fn produce_run(port: u16, topic: &str, acks: &str, size: usize, count: usize) -> Result<Duration> {
    produce_with(&producer(port, acks)?, topic, size, count, 1)
}

/// Produces `count` records of `size` bytes round-robin over `partitions` partitions.
fn produce_with(p: &BaseProducer, topic: &str, size: usize, count: usize, partitions: i32) -> Result<Duration> {
    let payload = vec![b'x'; size];
    let start = Instant::now();
    for i in 0..count {
        let partition = (i % partitions as usize) as i32;
        loop {
            match p.send(BaseRecord::<(), [u8]>::to(topic).payload(&payload).partition(partition)) {
                Ok(()) => break,
                Err((e, _)) => {
                    if i == 0 && !matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::QueueFull)) {
                        bail!("produce failed: {e}");
                    }
                    p.poll(Duration::from_millis(1));
                }
            }
        }
        if i % 1000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120))?;
    Ok(start.elapsed())
}

/// Consumes the whole partition from the beginning, taking messages from librdkafka in
/// batches (`rd_kafka_consume_batch_queue`): one `poll` per message costs the client more
/// than the broker spends serving them.
fn consume_run(port: u16, topic: &str, count: usize) -> Result<Duration> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        // librdkafka's 1 MiB per partition and fetch: measured here, 10 MiB fetches consume
        // about 10% slower and 50 MiB ones half as fast. Its local queue is made large so
        // the fetcher never pauses for the application.
        .set("queued.max.messages.kbytes", "1048576")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    let start = Instant::now();
    let total = std::sync::atomic::AtomicUsize::new(0);
    drain(&c, &total, count, Duration::from_secs(10))?;
    Ok(start.elapsed())
}

/// Takes messages from the consumer in batches until `total` (shared by the members of a
/// group) reaches `count`; fails when nothing arrives for `stall`. Returns the messages
/// this consumer took and when its first one came.
fn drain(
    c: &BaseConsumer,
    total: &std::sync::atomic::AtomicUsize,
    count: usize,
    stall: Duration,
) -> Result<(usize, Option<Instant>)> {
    use rdkafka::bindings as rd;
    use std::sync::atomic::Ordering;
    let mut mine = 0;
    let mut first = None;
    let mut last = Instant::now();
    // SAFETY: the queue and messages come from this consumer, which outlives them; every
    // message returned is destroyed once, and the queue handle is released at the end.
    let failure = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(c.client().native_ptr());
        let mut batch = vec![std::ptr::null_mut::<rd::rd_kafka_message_t>(); 10_000];
        let mut failure = None;
        while total.load(Ordering::Relaxed) < count && failure.is_none() {
            let got = rd::rd_kafka_consume_batch_queue(queue, 100, batch.as_mut_ptr(), batch.len());
            let mut n = 0;
            for &m in &batch[..got.max(0) as usize] {
                match (*m).err {
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => n += 1,
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {}
                    e => failure = Some(format!("consume failed: {e:?}")),
                }
                rd::rd_kafka_message_destroy(m);
            }
            if n > 0 {
                first.get_or_insert_with(Instant::now);
                mine += n;
                total.fetch_add(n, Ordering::Relaxed);
                last = Instant::now();
            } else if last.elapsed() > stall {
                failure = Some(format!("consumer stalled at {} of {count}", total.load(Ordering::Relaxed)));
            }
        }
        rd::rd_kafka_queue_destroy(queue);
        failure
    };
    match failure {
        Some(f) => bail!("{f}"),
        None => Ok((mine, first)),
    }
}

/// Creates a topic with the admin client, with the broker's default replication factor
/// (1 on one node, 3 on three).
fn create_topic(port: u16, topic: &str, partitions: i32) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", format!("127.0.0.1:{port}")).create()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let created = runtime.block_on(
        admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))], &AdminOptions::new()),
    )?;
    if let Some(Err((topic, e))) = created.into_iter().next() {
        bail!("create {topic}: {e}");
    }
    Ok(())
}

/// Produce with and without idempotence, acks=all, each on a fresh node, round-robin over
/// `partitions` partitions; records/s of: librdkafka plain (requests pipelined), plain
/// with one request in flight, idempotent (librdkafka 2.12 then sends one request at a
/// time per partition: it compares the *messages* in flight with its 5-request window);
/// then the wire-level producer of `bench::wire`, plain and idempotent, both with 5
/// requests in flight (as the Java client), which holds the client side equal.
fn idempotence_run(bin: &Path, size: usize, count: usize, partitions: i32) -> Result<[f64; 5]> {
    let mut rates = [0.0; 5];
    for i in 0..5 {
        let fresh = Broker::start(bin)?;
        let topic = format!("idem-{size}-{i}");
        create_topic(fresh.port, &topic, partitions)?;
        let took = match i {
            0 => produce_with(&producer_in_flight(fresh.port, "all", false, None)?, &topic, size, count, partitions)?,
            1 => {
                produce_with(&producer_in_flight(fresh.port, "all", false, Some(1))?, &topic, size, count, partitions)?
            }
            2 => produce_with(&producer_in_flight(fresh.port, "all", true, None)?, &topic, size, count, partitions)?,
            _ => bench::wire::produce(fresh.port, &topic, partitions, size, count, i == 4)?,
        };
        rates[i] = count as f64 / took.as_secs_f64();
        if std::env::var_os("BENCH_METRICS").is_some() {
            let (cpu, _) = fresh.usage();
            let requests = fresh.metrics("quarry_requests_total{api=\"Produce\"}");
            eprintln!("  run {i}: broker cpu {cpu:.2} s; {}", requests.join("; "));
        }
    }
    Ok(rates)
}

/// A consumer group of `members` reading a `partitions`-partition topic of `count` 1 KiB
/// records from the start: records/s from the members' subscribe to the last record, the
/// time until the first record (group formation), and each member's share.
fn group_run(bin: &Path, members: usize, partitions: i32, count: usize) -> Result<(f64, Duration, Vec<usize>)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fresh = Broker::start(bin)?;
    let bootstrap = format!("127.0.0.1:{}", fresh.port);
    create_topic(fresh.port, "group-bench", partitions)?;
    produce_with(&producer(fresh.port, "1")?, "group-bench", 1024, count, partitions)?;
    let total = AtomicUsize::new(0);
    let start = Instant::now();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..members)
            .map(|_| {
                scope.spawn(|| -> Result<(usize, Option<Instant>)> {
                    let c: BaseConsumer = ClientConfig::new()
                        .set("bootstrap.servers", &bootstrap)
                        .set("group.id", "group-bench")
                        .set("auto.offset.reset", "earliest")
                        .set("enable.auto.commit", "true")
                        .set("queued.max.messages.kbytes", "262144")
                        .create()?;
                    c.subscribe(&["group-bench"])?;
                    // One poll per message: rebalances reach the application as events
                    // that only `poll` handles, so the batch interface cannot be used here.
                    let (mut mine, mut first, mut last) = (0, None, Instant::now());
                    while total.load(Ordering::Relaxed) < count {
                        match c.poll(Duration::from_millis(100)) {
                            Some(Ok(_)) => {
                                first.get_or_insert_with(Instant::now);
                                mine += 1;
                                total.fetch_add(1, Ordering::Relaxed);
                                last = Instant::now();
                            }
                            Some(Err(e)) => bail!("group member: {e}"),
                            None if last.elapsed() > Duration::from_secs(30) => {
                                bail!("group stalled at {} of {count}", total.load(Ordering::Relaxed))
                            }
                            None => {}
                        }
                    }
                    Ok((mine, first))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("member thread")).collect::<Result<Vec<_>>>()
    })?;
    let shares: Vec<usize> = results.iter().map(|r| r.0).collect();
    let took = start.elapsed();
    let got: usize = shares.iter().sum();
    if got != count {
        bail!("group consumed {got} records of {count}");
    }
    let formed = results.iter().filter_map(|r| r.1).min().map_or(took, |t| t - start);
    Ok((count as f64 / took.as_secs_f64(), formed, shares))
}

/// Records each delivery's latency, from the send time carried as the opaque.
struct LatencyContext {
    latencies: std::sync::Mutex<Vec<Duration>>,
    failures: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for LatencyContext {
    /// With BENCH_METRICS set, the client's own view of where the time went (µs):
    /// in its queue before sending, in its output buffer, and the broker round trip.
    fn stats(&self, stats: rdkafka::Statistics) {
        for (name, b) in stats.brokers.iter().filter(|(_, b)| b.nodeid >= 0) {
            let w = |w: &Option<rdkafka::statistics::Window>| {
                w.as_ref().map(|w| format!("p50 {} p99 {} max {}", w.p50, w.p99, w.max)).unwrap_or_default()
            };
            eprintln!(
                "  client {name}: queue [{}] outbuf [{}] rtt [{}]",
                w(&b.int_latency),
                w(&b.outbuf_latency),
                w(&b.rtt)
            );
        }
    }
}

impl rdkafka::producer::ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, sent: Box<Instant>) {
        match result {
            Ok(_) => self.latencies.lock().unwrap().push(sent.elapsed()),
            Err(_) => {
                self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// p50 and p99 produce latency (ms) of 1 KiB records sent at `rate` records/s for `secs`.
fn latency_run(port: u16, topic: &str, acks: &str, rate: u64, secs: u64) -> Result<(f64, f64)> {
    let ctx = LatencyContext { latencies: Default::default(), failures: Default::default() };
    let p: BaseProducer<LatencyContext> = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("acks", acks)
        .set("linger.ms", std::env::var("BENCH_LINGER_MS").unwrap_or_else(|_| "1".into()))
        .set("statistics.interval.ms", if std::env::var_os("BENCH_METRICS").is_some() { "5000" } else { "0" })
        .create_with_context(ctx)?;
    let payload = vec![b'y'; 1024];
    let total = rate * secs;
    let start = Instant::now();
    for i in 0..total {
        // Paced in steps of about 200 µs, sleeping between them, so the client does not
        // spin on a core the broker needs.
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        while Instant::now() < due {
            p.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(200));
        }
        // Delivery callbacks run inside poll: poll on every send so that a late loop does
        // not hold back reports of records already acknowledged.
        p.poll(Duration::ZERO);
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(Instant::now())).payload(&payload[..]).partition(0);
        loop {
            match p.send::<(), [u8]>(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    p.poll(Duration::from_millis(1));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60))?;
    let failures = p.context().failures.load(std::sync::atomic::Ordering::Relaxed);
    if failures > 0 {
        bail!("{failures} records failed");
    }
    let mut l = p.context().latencies.lock().unwrap().clone();
    l.sort();
    let pct = |q: f64| l[((l.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
    Ok((pct(0.50), pct(0.99)))
}

/// Produce-to-consume latency (median of 50 single records, ms) for a consumer whose
/// fetches wait up to 5 s: a broker that held fetches for the full wait, or answered a
/// fetch with data late, would show seconds here.
fn end_to_end_run(port: u16, topic: &str) -> Result<f64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("group.id", "bench-e2e")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5000")
        .set("fetch.min.bytes", "1")
        .create()?;
    let p: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", format!("127.0.0.1:{port}")).set("linger.ms", "0").create()?;
    p.send(BaseRecord::<(), [u8]>::to(topic).payload(&b"warm-up"[..]).partition(0)).map_err(|(e, _)| e)?;
    p.flush(Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    if !matches!(c.poll(Duration::from_secs(30)), Some(Ok(_))) {
        bail!("no warm-up record");
    }
    let mut times = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        p.send(BaseRecord::<(), [u8]>::to(topic).payload(&b"ping"[..]).partition(0)).map_err(|(e, _)| e)?;
        while p.in_flight_count() > 0 {
            p.poll(Duration::from_millis(1));
        }
        match c.poll(Duration::from_secs(30)) {
            Some(Ok(_)) => times.push(start.elapsed()),
            _ => bail!("record not consumed"),
        }
    }
    times.sort();
    Ok(times[times.len() / 2].as_secs_f64() * 1000.0)
}

/// The disk's own share of produce latency: p50/p99 (ms) of appending 70 KiB (what one
/// produce request carries at 50k records/s of 1 KiB) to a file and fdatasyncing it, 700
/// times a second for `secs` seconds, as the broker's group commit does.
fn disk_run(dir: &Path, secs: u64) -> Result<(f64, f64)> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("disk-probe");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![b'd'; 70 << 10];
    let mut times = Vec::new();
    let start = Instant::now();
    for i in 0..700 * secs {
        let due = start + Duration::from_micros(i * 1_000_000 / 700);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        file.write_all(&chunk)?;
        file.sync_data()?;
        times.push(t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    times.sort();
    let pct = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
    Ok((pct(0.50), pct(0.99)))
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let bin = root.join("target/release/quarry");
    let broker = Broker::start(&bin)?;
    // `produce-consume [throughput|latency|fetch]...` runs only the named parts.
    let parts: Vec<String> = std::env::args().skip(1).collect();
    let run = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    println!("# quarry produce/consume benchmark, librdkafka {}", rdkafka::util::get_rdkafka_version().1);
    println!(
        "{:<8} {:>6} {:>10} {:>14} {:>10} {:>14} {:>10} {:>9} {:>8}",
        "record", "acks", "records", "produce rec/s", "MB/s", "consume rec/s", "MB/s", "cpu s", "rss MiB"
    );
    for (size, count) in [(100usize, 2_000_000usize), (1024, 500_000)] {
        if !run("throughput") {
            break;
        }
        for acks in ["1", "all"] {
            // BENCH_CASE="1024 all" runs one case only (for profiling).
            if let Ok(only) = std::env::var("BENCH_CASE") {
                if only != format!("{size} {acks}") {
                    continue;
                }
            }
            // Each run on a fresh node, so one run's flushes and compactions do not land in
            // the next one's figures. The machine's disk and CPU vary from run to run: each
            // case runs BENCH_REPEAT times (default 3) and shows the median, then the range.
            let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
            let mut runs = Vec::new();
            for _ in 0..repeat {
                let fresh = Broker::start(&bin)?;
                let topic = format!("bench-{size}-{acks}");
                let p = produce_run(fresh.port, &topic, acks, size, count)?;
                let c = consume_run(fresh.port, &topic, count)?;
                let (cpu, rss) = fresh.usage();
                if std::env::var_os("BENCH_METRICS").is_some() {
                    for line in fresh.metrics("_count").into_iter().chain(fresh.metrics("request_seconds_sum")) {
                        eprintln!("  {size} B acks={acks}: {line}");
                    }
                }
                drop(fresh);
                runs.push((count as f64 / p.as_secs_f64(), count as f64 / c.as_secs_f64(), cpu, rss));
            }
            let median = |f: &dyn Fn(&(f64, f64, f64, f64)) -> f64| {
                let mut v: Vec<f64> = runs.iter().map(f).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                (v[v.len() / 2], v[0], v[v.len() - 1])
            };
            let (prod, prod_lo, prod_hi) = median(&|r| r.0);
            let (cons, cons_lo, cons_hi) = median(&|r| r.1);
            let mb = |recs: f64| recs * size as f64 / 1e6;
            println!(
                "{:<8} {:>6} {:>10} {:>14.0} {:>10.1} {:>14.0} {:>10.1} {:>9.1} {:>8.0}   produce {:.0}-{:.0} MB/s, consume {:.0}-{:.0} MB/s over {} runs",
                format!("{size} B"),
                acks,
                count,
                prod,
                mb(prod),
                cons,
                mb(cons),
                median(&|r| r.2).0,
                median(&|r| r.3).0,
                mb(prod_lo),
                mb(prod_hi),
                mb(cons_lo),
                mb(cons_hi),
                repeat
            );
        }
    }
    for acks in ["1", "all"] {
        if !run("latency") {
            break;
        }
        let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
        let mut runs = Vec::new();
        for i in 0..repeat {
            runs.push(latency_run(broker.port, &format!("latency-{acks}-{i}"), acks, 50_000, 10)?);
        }
        runs.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (p50, p99) = runs[runs.len() / 2];
        let all: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.1)).collect();
        println!(
            "produce latency at 50k records/s, 1 KiB, acks={acks}: p50 {p50:.2} ms, p99 {p99:.2} ms (median run; p99 of each: {})",
            all.join(", ")
        );
    }
    if run("idempotence") {
        let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
        for (size, count, partitions) in [(100usize, 2_000_000usize, 1), (1024, 500_000, 1), (1024, 500_000, 6)] {
            let mut runs = Vec::new();
            for _ in 0..repeat {
                runs.push(idempotence_run(&bin, size, count, partitions)?);
            }
            let median = |f: &dyn Fn(&[f64; 5]) -> f64| {
                let mut v: Vec<f64> = runs.iter().map(f).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            let [plain, one, idem, wire_plain, wire_idem] = [0, 1, 2, 3, 4].map(|i| median(&|r| r[i]));
            let ratios =
                |a: usize, b: usize| runs.iter().map(|r| format!("{:.2}", r[a] / r[b])).collect::<Vec<_>>().join(", ");
            let mb = |r: f64| r * size as f64 / 1e6;
            println!(
                "idempotence, {size} B acks=all, {partitions} partition(s), 5 requests in flight (wire-level client): idempotent {wire_idem:.0} rec/s ({:.1} MB/s), plain {wire_plain:.0} rec/s ({:.1} MB/s): {:+.1}% (per run: {})",
                mb(wire_idem),
                mb(wire_plain),
                (wire_idem / wire_plain - 1.0) * 100.0,
                ratios(4, 3),
            );
            println!(
                "idempotence, {size} B acks=all, {partitions} partition(s), librdkafka: idempotent {idem:.0} rec/s ({:.1} MB/s); plain with one request in flight {one:.0} rec/s ({:.1} MB/s): {:+.1}% (per run: {}); plain pipelined {plain:.0} rec/s ({:.1} MB/s)",
                mb(idem),
                mb(one),
                (idem / one - 1.0) * 100.0,
                ratios(2, 1),
                mb(plain),
            );
        }
    }
    // BENCH_REPEAT runs of 1 KiB acks=all on a fresh single node and a fresh 3-node
    // cluster (3 replicas), one after the other on the same machine.
    if run("cluster") {
        let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
        let count = 300_000;
        let mut runs = Vec::new();
        for i in 0..repeat {
            // Topics made first: the figures leave out creating the partition and its
            // first election.
            let single = Broker::start(&bin)?;
            create_topic(single.port, "replicated", 1)?;
            let one = count as f64 / produce_run(single.port, "replicated", "all", 1024, count)?.as_secs_f64();
            let one_latency = latency_run(single.port, &format!("latency-single-{i}"), "all", 20_000, 10)?;
            drop(single);
            let cluster = Broker::start_cluster(&bin)?;
            create_topic(cluster[0].port, "replicated", 1)?;
            let three = count as f64 / produce_run(cluster[0].port, "replicated", "all", 1024, count)?.as_secs_f64();
            let three_latency = latency_run(cluster[0].port, &format!("latency-cluster-{i}"), "all", 20_000, 10)?;
            drop(cluster);
            runs.push((one, three, one_latency, three_latency));
        }
        runs.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
        let (one, three, l1, l3) = runs[runs.len() / 2];
        let ratios: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.1 / r.0)).collect();
        println!(
            "replication, 1 KiB acks=all, 1 partition: 3 replicas on 3 nodes {three:.0} rec/s ({:.1} MB/s), single node {one:.0} rec/s ({:.1} MB/s): {:.0}% (per run: {}); latency at 20k rec/s: 3 replicas p50 {:.2} ms p99 {:.2} ms, single p50 {:.2} ms p99 {:.2} ms",
            three * 1024.0 / 1e6,
            one * 1024.0 / 1e6,
            three / one * 100.0,
            ratios.join(", "),
            l3.0,
            l3.1,
            l1.0,
            l1.1
        );
    }
    // An idle 3-node cluster holding 1,000 partitions (3 replicas each): requests a
    // second between the nodes once the partitions are quiet, by kind.
    if run("idle") {
        let partitions = 1000;
        let cluster = Broker::start_cluster(&bin)?;
        let started = Instant::now();
        create_topic(cluster[0].port, "idle", partitions)?;
        let created = started.elapsed();
        let sent = |kind: &str| -> f64 {
            let needle = format!("quarry_node_requests_sent_total{{kind=\"{kind}\"}}");
            cluster
                .iter()
                .flat_map(|n| n.metrics(&needle))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .sum()
        };
        // Quiet two seconds after the last append; the first reports then reach everyone.
        std::thread::sleep(Duration::from_secs(10));
        let kinds = ["append_entries", "vote", "leaders"];
        let before: Vec<f64> = kinds.iter().map(|k| sent(k)).collect();
        let window = Duration::from_secs(10);
        std::thread::sleep(window);
        let rates: Vec<String> = kinds
            .iter()
            .zip(&before)
            .map(|(k, b)| format!("{k} {:.1}/s", (sent(k) - b) / window.as_secs_f64()))
            .collect();
        let cpu: f64 = cluster.iter().map(|n| n.usage().0).sum();
        println!(
            "idle cluster, {partitions} partitions x 3 replicas on 3 nodes (created in {:.1} s): requests between nodes {} (all nodes, heartbeats of idle partitions would be {:.0}/s); cpu of the 3 nodes {cpu:.1} s in all",
            created.as_secs_f64(),
            rates.join(", "),
            partitions as f64 * 2.0 / 0.5,
        );
    }
    if run("group") {
        let count = 600_000;
        let (rate, formed, shares) = group_run(&bin, 3, 6, count)?;
        println!(
            "consumer group of 3 on 6 partitions, {count} x 1 KiB: {rate:.0} rec/s ({:.0} MB/s) from subscribe to last record; first record after {:.2} s (group formation, group.initial.rebalance.delay.ms 3000), {:.0} rec/s from then on; shares {shares:?}",
            rate * 1024.0 / 1e6,
            formed.as_secs_f64(),
            count as f64 / (count as f64 / rate - formed.as_secs_f64())
        );
    }
    if run("disk") {
        let (p50, p99) = disk_run(&broker.dir, 10)?;
        println!("disk alone, 70 KiB append + fdatasync 700/s: p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
    if run("fetch") {
        println!(
            "produce-to-consume latency, fetch.wait.max.ms=5000: median {:.2} ms",
            end_to_end_run(broker.port, "e2e")?
        );
    }
    if std::env::var_os("BENCH_METRICS").is_some() {
        let lines = ["quarry_fsync_seconds", "quarry_raft_write_seconds", "api=\"Produce\""]
            .iter()
            .flat_map(|f| broker.metrics(f));
        for line in lines {
            println!("  {line}");
        }
    }
    let (cpu, rss) = broker.usage();
    println!("broker cpu {cpu:.1} s, peak rss {rss:.0} MiB");
    Ok(())
}
