"""kafka-python 3.x (pure Python) against one node.

Usage: check.py BOOTSTRAP WORK_DIR                  everything up to the broker restart
       check.py --after-restart BOOTSTRAP WORK_DIR  the group scenario's part after it
"""

import os
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError

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

CLIENT = "kafka-python"
AFTER_RESTART = sys.argv[1] == "--after-restart"
BOOTSTRAP, WORK_DIR = sys.argv[2:4] if AFTER_RESTART else sys.argv[1:3]
TOPIC = "kafka-python-3p"
PARTITIONS = 3
PER = 150  # records per partition per round
CREATE_TIME = 0  # ConsumerRecord.timestamp_type for CreateTime


def partitions_of(admin, name):
    topics = admin.describe_topics([name])
    if not topics or topics[0].get("error_code", 0) != 0:
        return None
    return len(topics[0]["partitions"])


def create_topic(admin, name, partitions):
    try:
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}},
                            wait_for_metadata=True)
    except KafkaError as e:
        raise CheckFailed(f"CreateTopics {name} ({partitions} partitions): {e!r}")
    got = partitions_of(admin, name)
    check(got == partitions, f"Metadata for {name}: {got} partitions, want {partitions}")


def produce_round(rnd, codec, acks, expected):
    producer = KafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks=acks if acks == "all" else int(acks),
        compression_type=None if codec == "none" else codec,
        enable_idempotence=False,
        # No retries: a broker error fails the check instead of being
        # retried (which could also reorder records).
        retries=0,
        linger_ms=5,
    )
    sent = []
    for p in range(PARTITIONS):
        for i in range(PER):
            key, value, headers, ts = make_record(rnd, p, i)
            future = producer.send(TOPIC, value=value, key=key, headers=headers,
                                   partition=p, timestamp_ms=ts)
            sent.append((p, len(expected[p]), key, future))
            expected[p].append((key, value, headers, ts))
    producer.flush(timeout=30)
    for p, want_offset, key, future in sent:
        try:
            md = future.get(timeout=30)
        except KafkaError as e:
            raise CheckFailed(f"round {rnd} ({codec}, acks={acks}): Produce to partition {p} failed: {e!r}")
        check(md.offset == want_offset,
              f"round {rnd} ({codec}, acks={acks}): partition {p} record {key!r} acknowledged "
              f"at offset {md.offset}, want {want_offset}")
    producer.close(timeout=10)


def consumer():
    return KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        check_crcs=True,
        fetch_max_wait_ms=500,
    )


def consume_all(expected):
    c = consumer()
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning()
    ends = c.end_offsets(tps, timeout_ms=10_000)
    for tp in tps:
        check(ends[tp] == len(expected[tp.partition]),
              f"ListOffsets latest {TOPIC}/{tp.partition}: {ends[tp]}, want {len(expected[tp.partition])}")

    got = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + 60
    while any(c.position(tp) < ends[tp] for tp in tps):
        check(time.monotonic() < deadline,
              f"consume: not at the end after 60s; got { {p: len(r) for p, r in got.items()} } records")
        for tp, recs in c.poll(timeout_ms=1000, max_records=2000).items():
            got[tp.partition].extend(recs)
    # Nothing may follow the last expected record.
    extra = c.poll(timeout_ms=1000)
    check(not extra, f"consume: records past the high watermark: "
                     f"{ {tp.partition: [r.offset for r in rs] for tp, rs in extra.items()} }")
    c.close()
    check_commits(tps, {tp: len(expected[tp.partition]) for tp in tps})

    total = 0
    for p in range(PARTITIONS):
        recs, want = got[p], expected[p]
        check(len(recs) == len(want), f"{TOPIC}/{p}: consumed {len(recs)} records, want {len(want)}")
        for offset, (rec, w) in enumerate(zip(recs, want)):
            check(rec.offset == offset, f"{TOPIC}/{p}: record #{offset} has offset {rec.offset}")
            check(rec.timestamp_type == CREATE_TIME,
                  f"{TOPIC}/{p} offset {offset}: timestamp type {rec.timestamp_type}, want CreateTime")
            compare(f"{TOPIC}/{p}", offset, w, (rec.key, rec.value, rec.headers, rec.timestamp))
        total += len(recs)
    return total


def check_commits(tps, ends):
    """Commits each partition's end without joining the group (FindCoordinator,
    OffsetCommit), then reads the commits back from another consumer (OffsetFetch)."""
    def group_consumer():
        return KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id="compat-commits", enable_auto_commit=False)
    c = group_consumer()
    c.assign(tps)
    c.commit({tp: OffsetAndMetadata(ends[tp], f"compat-{tp.partition}", -1) for tp in tps})
    c.close()
    other = group_consumer()
    for tp in tps:
        got = other.committed(tp, metadata=True)
        check(got is not None and got.offset == ends[tp] and got.metadata == f"compat-{tp.partition}",
              f"committed {TOPIC}/{tp.partition}: {got}, want offset {ends[tp]} and 'compat-{tp.partition}'")
    other.close()
    print(f"kafka-python: commits of {len(tps)} partitions read back by another consumer")
    check_group_admin(tps, ends)


def check_group_admin(tps, ends):
    """The group as the admin client shows it: listed, described, its offsets and lag
    (ListOffsets against OffsetFetch), then deleted."""
    group = "compat-commits"
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        listed = {g["group_id"]: g for g in admin.list_groups()}
        check(group in listed, f"ListGroups: {group} missing from {sorted(listed)}")
        check(listed[group]["group_state"] == "Empty", f"ListGroups: {group} is {listed[group]}, want Empty")
        empty = {g["group_id"] for g in admin.list_groups(states_filter=["Empty"])}
        stable = {g["group_id"] for g in admin.list_groups(states_filter=["Stable"])}
        check(group in empty and group not in stable, f"ListGroups by state: Empty {empty}, Stable {stable}")
        described = admin.describe_groups([group])[group]
        check(described["group_state"] == "Empty" and not described["members"],
              f"DescribeGroups {group}: {described}")
        offsets = admin.list_group_offsets({group: None})[group]
        got = {tp: om.offset for tp, om in offsets.items()}
        check(got == ends, f"OffsetFetch through the admin client: {got}, want {ends}")
        c = consumer()
        lag = {tp.partition: c.end_offsets([tp], timeout_ms=10_000)[tp] - got[tp] for tp in tps}
        c.close()
        check(all(v == 0 for v in lag.values()), f"lag after committing every partition's end: {lag}")
        admin.delete_groups([group])
        check(group not in {g["group_id"] for g in admin.list_groups()}, f"{group} still listed after DeleteGroups")
        gone = admin.list_group_offsets({group: None})[group]
        check(not gone, f"offsets of the deleted group: {gone}")
    finally:
        admin.close()
    print(f"kafka-python: admin client lists, describes (Empty), fetches offsets (lag 0) and deletes {group}")


def check_list_offsets(expected):
    c = consumer()
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    begins = c.beginning_offsets(tps, timeout_ms=10_000)
    for tp in tps:
        check(begins[tp] == 0, f"ListOffsets earliest {TOPIC}/{tp.partition}: {begins[tp]}, want 0")
    wrong, total = [], 0
    for tp in tps:
        recs = expected[tp.partition]
        for ts in timestamp_probes(recs, PER):
            found = c.offsets_for_times({tp: ts}, timeout_ms=10_000)[tp]
            got = None if found is None else (found.offset, found.timestamp)
            want = first_at_or_after(recs, ts)
            total += 1
            if got != want:
                wrong.append(f"{TOPIC}/{tp.partition} timestamp {ts}: (offset, timestamp) {got}, want {want}")
    c.close()
    check(not wrong, "ListOffsets by timestamp: " + summarize(wrong, total))


def check_tail(expected):
    """Polling at the end must return nothing within the poll timeout, and a
    record produced while the consumer waits there must reach it promptly."""
    c = consumer()
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_end()
    start = time.monotonic()
    recs = c.poll(timeout_ms=2000)
    elapsed = time.monotonic() - start
    check(not recs, f"poll at the end of {TOPIC} returned records: "
                    f"{ {tp.partition: [r.offset for r in rs] for tp, rs in recs.items()} }")
    check(elapsed < 4, f"poll(timeout_ms=2000) at the end of {TOPIC} took {elapsed:.1f}s, want < 4s")

    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=False)
    producer.send(TOPIC, key=b"late", value=b"late", partition=2).get(timeout=10)
    producer.close(timeout=10)
    start = time.monotonic()
    got = []
    while not got and time.monotonic() - start < 10:
        for tp, rs in c.poll(timeout_ms=500).items():
            got.extend(rs)
    elapsed = time.monotonic() - start
    check(got, f"a record produced to {TOPIC}/2 did not reach a consumer at the end within 10s")
    r = got[0]
    check(len(got) == 1 and (r.partition, r.offset, r.value) == (2, len(expected[2]), b"late"),
          f"late record came back as {[(x.partition, x.offset, x.value) for x in got]}, "
          f"want [(2, {len(expected[2])}, b'late')]")
    check(elapsed < 5, f"a record produced at the tail took {elapsed:.1f}s to reach the consumer, want < 5s")
    c.close()


def check_admin(admin):
    try:
        admin.create_topics({TOPIC: {"num_partitions": PARTITIONS, "replication_factor": 1}})
    except TopicAlreadyExistsError:
        pass
    except KafkaError as e:
        raise CheckFailed(f"CreateTopics {TOPIC} again: {e!r}, want TOPIC_ALREADY_EXISTS")
    else:
        raise CheckFailed(f"CreateTopics {TOPIC} again succeeded, want TOPIC_ALREADY_EXISTS")

    try:
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)],
                                         config_filter="all")
    except KafkaError as e:
        raise CheckFailed(f"DescribeConfigs topic {TOPIC}: {e!r}")
    check(configs.get("topic", {}).get(TOPIC), f"DescribeConfigs topic {TOPIC}: no config entries: {configs}")

    scratch = "kafka-python-scratch"
    create_topic(admin, scratch, 1)
    try:
        admin.create_partitions({scratch: 4})
    except KafkaError as e:
        raise CheckFailed(f"CreatePartitions {scratch} 1 -> 4: {e!r}")
    deadline = time.monotonic() + 10
    while partitions_of(admin, scratch) != 4:
        check(time.monotonic() < deadline,
              f"{scratch}: {partitions_of(admin, scratch)} partitions 10s after CreatePartitions to 4")
        time.sleep(0.2)
    try:
        admin.delete_topics([scratch])
    except KafkaError as e:
        raise CheckFailed(f"DeleteTopics {scratch}: {e!r}")
    deadline = time.monotonic() + 10
    while scratch in admin.list_topics():
        check(time.monotonic() < deadline, f"{scratch} still listed in Metadata 10s after DeleteTopics")
        time.sleep(0.2)


class GroupClient:
    """What the group scenarios (groups.py) do with kafka-python outside the members."""

    name = CLIENT
    bootstrap = BOOTSTRAP
    member_cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "member.py")]

    def __init__(self, admin):
        self.admin = admin
        self.producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, enable_idempotence=False, acks="all", linger_ms=5)
        self.readers = {}  # group -> consumer that never subscribes: OffsetFetch and ListOffsets only

    def create_topic(self, name, partitions):
        create_topic(self.admin, name, partitions)

    def produce(self, topic, items):
        futures = [self.producer.send(topic, key=key.encode(), value=key.encode(), partition=p) for p, key in items]
        self.producer.flush(timeout=30)
        acks = []
        for (p, key), future in zip(items, futures):
            try:
                md = future.get(timeout=30)
            except KafkaError as e:
                raise CheckFailed(f"produce {key} to {topic}/{p}: {e!r}")
            acks.append((md.partition, md.offset))
        return acks

    def reader(self, group):
        if group not in self.readers:
            self.readers[group] = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False)
        return self.readers[group]

    def committed(self, group, topic, partitions):
        reader = self.reader(group)
        return {p: reader.committed(TopicPartition(topic, p)) for p in range(partitions)}

    def high_watermarks(self, topic, partitions):
        ends = self.reader(None).end_offsets([TopicPartition(topic, p) for p in range(partitions)], timeout_ms=10_000)
        return {tp.partition: o for tp, o in ends.items()}

    def close(self):
        for c in self.readers.values():
            c.close()
        self.producer.close(timeout=10)


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    client = GroupClient(admin)
    if AFTER_RESTART:
        run_steps(CLIENT, [], [], [lambda: groups.check_restart_after(client, WORK_DIR)])
        client.close()
        admin.close()
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
    admin.close()


if __name__ == "__main__":
    main()
