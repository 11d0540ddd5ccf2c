"""One consumer group member on kafka-python, run as its own process by the group
scenarios (compat/groups.py describes the JSON lines it prints and the "close" it reads).

Usage: member.py '{"bootstrap": ..., "topic": ..., "group": ..., "name": ...,
                   "session_timeout_ms": ..., "instance_id": ..., "strategy": ...}'
"""

import json
import logging
import sys
import threading

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError
from kafka.structs import MemberState, OffsetAndMetadata

# kafka-python's own log (joins, assignments, commits) goes to stderr, which the
# scenario keeps in a file per member.
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
conf = json.loads(sys.argv[1])
TOPIC = conf["topic"]
out = threading.Lock()


def emit(**event):
    with out:
        print(json.dumps(event), flush=True)


closing = threading.Event()


def read_commands():
    for line in sys.stdin:
        if line.strip() == "close":
            break
    closing.set()


settings = dict(
    bootstrap_servers=conf["bootstrap"],
    group_id=conf["group"],
    client_id=conf["name"],
    auto_offset_reset="earliest",
    # Commits are made after every poll (below). Auto-commit is on for the commit
    # kafka-python makes itself before each rejoin, so that partitions that move
    # are committed first; its periodic commits are kept out of the way.
    enable_auto_commit=True,
    auto_commit_interval_ms=60_000,
    session_timeout_ms=conf["session_timeout_ms"],
    heartbeat_interval_ms=500,
    fetch_max_wait_ms=100,
)
if conf.get("instance_id"):
    settings["group_instance_id"] = conf["instance_id"]
if conf.get("strategy") == "cooperative-sticky":
    settings["partition_assignment_strategy"] = [CooperativeStickyAssignor]
consumer = KafkaConsumer(**settings)

owned = set()
# Per partition, the offset after the last record handed out but not yet committed.
pending = {}


class Listener(ConsumerRebalanceListener):
    # Runs on the consumer's IO loop, within poll() or close(): it only notes and
    # reports the change. What was consumed of revoked partitions has just been
    # committed by kafka-python itself (auto-commit before a rejoin).
    def on_partitions_revoked(self, revoked):
        parts = sorted(tp.partition for tp in revoked)
        owned.difference_update(parts)
        for p in parts:
            pending.pop(p, None)
        emit(ev="revoke", parts=parts, owned=sorted(owned))

    def on_partitions_assigned(self, assigned):
        parts = sorted(tp.partition for tp in assigned)
        owned.update(parts)
        emit(ev="assign", parts=parts, owned=sorted(owned))

    def on_partitions_lost(self, lost):
        parts = sorted(tp.partition for tp in lost)
        owned.difference_update(parts)
        for p in parts:
            pending.pop(p, None)
        emit(ev="lost", parts=parts, owned=sorted(owned))


generation = None

threading.Thread(target=read_commands, daemon=True).start()
consumer.subscribe([TOPIC], listener=Listener())
# kafka-python 3.0.12 can stall for good when a group leader rejoins because the
# subscribed topics' metadata changed since it assigned (README: "Consumer group
# scenarios"). Its record of that metadata is only taken from metadata responses
# handled after subscribe(): topics() waits for one (all topics) before the first
# poll, so a leader never assigns with the topic missing from that record and never
# makes that rejoin.
consumer.topics()
try:
    while not closing.is_set():
        batches = consumer.poll(timeout_ms=100, max_records=500)
        recs = [[r.partition, r.offset, r.key.decode()] for rs in batches.values() for r in rs]
        for p, o, _ in recs:
            pending[p] = o + 1
        if recs:
            emit(ev="records", recs=recs)
        md = consumer.group_metadata()
        if md.state == MemberState.STABLE and md.generation_id != generation:
            generation = md.generation_id
            emit(ev="gen", gen=generation)
        offsets = {p: o for p, o in pending.items() if p in owned}
        if offsets:
            try:
                consumer.commit({TopicPartition(TOPIC, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
            except KafkaError as e:
                # Left pending: retried after the next poll.
                emit(ev="commit_failed", offsets={str(p): o for p, o in offsets.items()}, error=repr(e))
            else:
                for p, o in offsets.items():
                    if pending.get(p) == o:
                        del pending[p]
                emit(ev="commit", offsets={str(p): o for p, o in offsets.items()})
    consumer.close()
    emit(ev="closed")
except Exception as e:  # noqa: BLE001 - reported to the scenario, which fails on it
    emit(ev="error", msg=f"{type(e).__name__}: {e}")
    sys.exit(1)
