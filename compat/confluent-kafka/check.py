"""confluent-kafka (librdkafka bundled in its wheel) against one node.

Usage: check.py BOOTSTRAP WORK_DIR                  everything up to the broker restart
       check.py --after-restart BOOTSTRAP WORK_DIR  the group scenario's part after it
"""

import os
import sys
import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

import groups
from records import (
    ROUNDS,
    CheckFailed,
    check,
    compare,
    first_at_or_after,
    make_record,
    run_client_checks,
    run_steps,
    summarize,
    timestamp_probes,
)

CLIENT = "confluent-kafka"
AFTER_RESTART = sys.argv[1] == "--after-restart"
BOOTSTRAP, WORK_DIR = sys.argv[2:4] if AFTER_RESTART else sys.argv[1:3]
TOPIC = "confluent-3p"
PARTITIONS = 3
PER = 150  # records per partition per round


def create_topic(admin, name, partitions):
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    except Exception as e:
        raise CheckFailed(f"CreateTopics {name} ({partitions} partitions): {e}")
    wait_for_partitions(admin, name, partitions)


def wait_for_partitions(admin, name, want):
    deadline = time.monotonic() + 10
    while True:
        md = admin.list_topics(name, timeout=10).topics.get(name)
        got = len(md.partitions) if md is not None and md.error is None else None
        if got == want:
            return
        check(time.monotonic() < deadline,
              f"Metadata for {name}: {got} partitions (error {md and md.error}), want {want}")
        time.sleep(0.2)


def produce_round(rnd, codec, acks, expected):
    producer = Producer({
        "bootstrap.servers": BOOTSTRAP,
        "acks": acks,
        "compression.type": codec,
        "enable.idempotence": False,
        # No retries: a broker error fails the check instead of being
        # retried (which could also reorder records).
        "retries": 0,
        "linger.ms": 5,
    })
    reports = []

    def on_delivery(err, msg):
        reports.append((err, msg.partition(), msg.offset(), msg.key()))

    for p in range(PARTITIONS):
        for i in range(PER):
            key, value, headers, ts = make_record(rnd, p, i)
            producer.produce(TOPIC, value=value, key=key, headers=headers,
                             partition=p, timestamp=ts, on_delivery=on_delivery)
            expected[p].append((key, value, headers, ts))
        producer.poll(0)
    left = producer.flush(30)
    check(left == 0, f"round {rnd} ({codec}, acks={acks}): {left} records undelivered after 30s")
    check(len(reports) == PARTITIONS * PER,
          f"round {rnd}: {len(reports)} delivery reports, want {PARTITIONS * PER}")

    # Reports come in produce order per partition; each must carry the
    # offset the record was appended at.
    for p in range(PARTITIONS):
        base = len(expected[p]) - PER
        for i, (err, _, offset, key) in enumerate(r for r in reports if r[1] == p):
            check(err is None, f"round {rnd} ({codec}, acks={acks}): Produce to partition {p} failed: {err}")
            want_key = expected[p][base + i][0]
            check((offset, key) == (base + i, want_key),
                  f"round {rnd} ({codec}, acks={acks}): partition {p} record {key!r} acknowledged "
                  f"at offset {offset}, want {want_key!r} at offset {base + i}")


def consumer():
    return Consumer({
        "bootstrap.servers": BOOTSTRAP,
        # Partitions are assigned by hand, so no group is joined; offsets are
        # committed explicitly, without group management (generation -1).
        "group.id": "compat-commits",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "check.crcs": True,
        "fetch.wait.max.ms": 500,
    })


def consume_all(expected):
    c = consumer()
    c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got = {p: [] for p in range(PARTITIONS)}
    at_eof = set()
    deadline = time.monotonic() + 60
    while len(at_eof) < PARTITIONS:
        check(time.monotonic() < deadline,
              f"consume: not at the end after 60s; got {({p: len(r) for p, r in got.items()})} records")
        for msg in c.consume(num_messages=1000, timeout=1):
            err = msg.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                p = msg.partition()
                check(msg.offset() >= len(expected[p]),
                      f"{TOPIC}/{p}: end of partition (high watermark) at offset {msg.offset()} "
                      f"after {len(got[p])} records, want {len(expected[p])} records")
                at_eof.add(p)
                continue
            check(err is None, f"consume {TOPIC}/{msg.partition()}: {err}")
            got[msg.partition()].append(msg)
    # Commit where each partition ends (FindCoordinator, OffsetCommit), then read the
    # commits back from another consumer of the group (OffsetFetch).
    ends = [TopicPartition(TOPIC, p, len(expected[p]), metadata=f"compat-{p}") for p in range(PARTITIONS)]
    for tp in c.commit(offsets=ends, asynchronous=False):
        check(tp.error is None, f"commit {TOPIC}/{tp.partition}: {tp.error}")
    c.close()
    other = consumer()
    committed = other.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=30)
    other.close()
    for tp in committed:
        check(tp.error is None and tp.offset == len(expected[tp.partition]) and tp.metadata == f"compat-{tp.partition}",
              f"committed {TOPIC}/{tp.partition}: offset {tp.offset} metadata {tp.metadata!r} error {tp.error}, "
              f"want {len(expected[tp.partition])} and 'compat-{tp.partition}'")
    print(f"confluent-kafka: commits of {len(committed)} partitions read back by another consumer")

    total = 0
    for p in range(PARTITIONS):
        msgs, want = got[p], expected[p]
        check(len(msgs) == len(want), f"{TOPIC}/{p}: consumed {len(msgs)} records, want {len(want)}")
        for offset, (msg, w) in enumerate(zip(msgs, want)):
            check(msg.offset() == offset, f"{TOPIC}/{p}: record #{offset} has offset {msg.offset()}")
            ts_type, ts = msg.timestamp()
            check(ts_type == TIMESTAMP_CREATE_TIME,
                  f"{TOPIC}/{p} offset {offset}: timestamp type {ts_type}, want CreateTime")
            compare(f"{TOPIC}/{p}", offset, w, (msg.key(), msg.value(), msg.headers() or [], ts))
        total += len(msgs)
    return total


def check_list_offsets(expected):
    c = consumer()
    for p in range(PARTITIONS):
        low, high = c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
        check((low, high) == (0, len(expected[p])),
              f"ListOffsets {TOPIC}/{p}: watermarks ({low}, {high}), want (0, {len(expected[p])})")
    wrong, total = [], 0
    for p in range(PARTITIONS):
        for ts in timestamp_probes(expected[p], PER):
            want = first_at_or_after(expected[p], ts)
            want_offset = OFFSET_END if want is None else want[0]
            [tp] = c.offsets_for_times([TopicPartition(TOPIC, p, ts)], timeout=10)
            total += 1
            if tp.error is not None or tp.offset != want_offset:
                wrong.append(f"{TOPIC}/{p} timestamp {ts}: offset {tp.offset} (error {tp.error}), want {want_offset}")
    c.close()
    check(not wrong, "ListOffsets by timestamp: " + summarize(wrong, total))


def check_tail(expected):
    """Reading at the end must return nothing, promptly, and a record
    produced while the consumer waits there must reach it promptly."""
    c = consumer()
    c.assign([TopicPartition(TOPIC, p, OFFSET_END) for p in range(PARTITIONS)])
    start = time.monotonic()
    at_eof = set()
    while len(at_eof) < PARTITIONS and time.monotonic() - start < 10:
        for msg in c.consume(num_messages=100, timeout=0.5):
            err = msg.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                at_eof.add(msg.partition())
                continue
            raise CheckFailed(f"consume at the end of {TOPIC}/{msg.partition()}: "
                              f"{err or f'unexpected record at offset {msg.offset()}'}")
    elapsed = time.monotonic() - start
    check(len(at_eof) == PARTITIONS, f"consume at the end of {TOPIC}: no end-of-partition after 10s")
    check(elapsed < 5, f"consume at the end of {TOPIC}: took {elapsed:.1f}s, want < 5s")

    producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": False})
    producer.produce(TOPIC, value=b"late", key=b"late", partition=1)
    check(producer.flush(10) == 0, "producing the late record timed out")
    start = time.monotonic()
    msg = None
    while msg is None and time.monotonic() - start < 10:
        for m in c.consume(num_messages=1, timeout=0.5):
            if m.error() is None:
                msg = m
            elif m.error().code() != KafkaError._PARTITION_EOF:
                raise CheckFailed(f"consume at the end of {TOPIC}/{m.partition()}: {m.error()}")
    elapsed = time.monotonic() - start
    check(msg is not None, f"a record produced to {TOPIC}/1 did not reach a consumer at the end within 10s")
    check((msg.partition(), msg.offset(), msg.value()) == (1, len(expected[1]), b"late"),
          f"late record came back as partition {msg.partition()} offset {msg.offset()} value {msg.value()!r}, "
          f"want partition 1 offset {len(expected[1])} value b'late'")
    check(elapsed < 5, f"a record produced at the tail took {elapsed:.1f}s to reach the consumer, want < 5s")
    c.close()


def check_admin(admin):
    # A second create of the same topic must fail with TOPIC_ALREADY_EXISTS.
    try:
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])[TOPIC].result(30)
    except Exception as e:
        err = e.args[0] if e.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        check(code == KafkaError.TOPIC_ALREADY_EXISTS,
              f"CreateTopics {TOPIC} again: {e}, want TOPIC_ALREADY_EXISTS")
    else:
        raise CheckFailed(f"CreateTopics {TOPIC} again succeeded, want TOPIC_ALREADY_EXISTS")

    res = ConfigResource(ConfigResource.Type.TOPIC, TOPIC)
    try:
        configs = admin.describe_configs([res])[res].result(30)
    except Exception as e:
        raise CheckFailed(f"DescribeConfigs topic {TOPIC}: {e}")
    check(len(configs) > 0, f"DescribeConfigs topic {TOPIC}: no config entries")

    scratch = "confluent-scratch"
    create_topic(admin, scratch, 1)
    try:
        admin.create_partitions([NewPartitions(scratch, 4)])[scratch].result(30)
    except Exception as e:
        raise CheckFailed(f"CreatePartitions {scratch} 1 -> 4: {e}")
    wait_for_partitions(admin, scratch, 4)
    try:
        admin.delete_topics([scratch])[scratch].result(30)
    except Exception as e:
        raise CheckFailed(f"DeleteTopics {scratch}: {e}")
    deadline = time.monotonic() + 10
    while scratch in admin.list_topics(timeout=10).topics:
        check(time.monotonic() < deadline, f"{scratch} still listed in Metadata 10s after DeleteTopics")
        time.sleep(0.2)


class GroupClient:
    """What the group scenarios (groups.py) do with confluent-kafka outside the members."""

    name = CLIENT
    bootstrap = BOOTSTRAP
    member_cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "member.py")]

    def __init__(self, admin):
        self.admin = admin
        self.producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": False, "acks": "all",
                                  "linger.ms": 5})
        self.readers = {}  # group -> consumer that never subscribes: OffsetFetch and ListOffsets only

    def create_topic(self, name, partitions):
        create_topic(self.admin, name, partitions)

    def produce(self, topic, items):
        acks = {}

        def on_delivery(err, msg, i):
            acks[i] = (err, msg.partition(), msg.offset())

        for i, (p, key) in enumerate(items):
            self.producer.produce(topic, key=key, value=key, partition=p,
                                  on_delivery=lambda err, msg, i=i: on_delivery(err, msg, i))
        left = self.producer.flush(30)
        check(left == 0, f"produce to {topic}: {left} records undelivered after 30s")
        errors = [a[0] for a in acks.values() if a[0] is not None]
        check(not errors, f"produce to {topic}: {errors[:3]}")
        return [acks[i][1:] for i in range(len(items))]

    def reader(self, group):
        if group not in self.readers:
            self.readers[group] = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group,
                                            "enable.auto.commit": False})
        return self.readers[group]

    def committed(self, group, topic, partitions):
        tps = self.reader(group).committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        for tp in tps:
            check(tp.error is None, f"OffsetFetch {group} {topic}/{tp.partition}: {tp.error}")
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in tps}

    def high_watermarks(self, topic, partitions):
        reader = self.reader("compat-watermarks")
        return {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}

    def close(self):
        for c in self.readers.values():
            c.close()
        self.producer.flush(10)


def main():
    # log_level 4 hides librdkafka's notice about the partition count change.
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 4})
    client = GroupClient(admin)
    if AFTER_RESTART:
        run_steps(CLIENT, [], [], [lambda: groups.check_restart_after(client, WORK_DIR)])
        client.close()
        return

    def group_membership():
        groups.check_membership(client, WORK_DIR)

    def static_member():
        groups.check_static(client, WORK_DIR)

    def cooperative_rebalance():
        groups.check_cooperative(client, WORK_DIR)

    def before_restart():
        groups.check_restart_before(client, WORK_DIR)

    run_client_checks(CLIENT, TOPIC, PARTITIONS, ROUNDS, admin, create_topic, produce_round, consume_all,
                      check_list_offsets, check_tail, check_admin,
                      [group_membership, static_member, cooperative_rebalance, before_restart])
    client.close()


if __name__ == "__main__":
    main()
