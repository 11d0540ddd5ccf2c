"""One consumer group member on confluent-kafka, run as its own process by the group
scenarios (compat/groups.py describes the JSON lines it prints and the "close" it reads).

Usage: member.py '{"bootstrap": ..., "topic": ..., "group": ..., "name": ...,
                   "session_timeout_ms": ..., "instance_id": ..., "strategy": ...}'
"""

import json
import sys
import threading

from confluent_kafka import Consumer, KafkaException, TopicPartition

conf = json.loads(sys.argv[1])
TOPIC = conf["topic"]
COOPERATIVE = conf.get("strategy") == "cooperative-sticky"
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


settings = {
    "bootstrap.servers": conf["bootstrap"],
    "group.id": conf["group"],
    "client.id": conf["name"],
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": conf["session_timeout_ms"],
    "heartbeat.interval.ms": 500,
    "fetch.wait.max.ms": 100,
}
if conf.get("instance_id"):
    settings["group.instance.id"] = conf["instance_id"]
if conf.get("strategy"):
    settings["partition.assignment.strategy"] = conf["strategy"]
consumer = Consumer(settings)

owned = set()
# Per partition, the offset after the last record handed out but not yet committed.
pending = {}


def commit(parts=None):
    offsets = {p: o for p, o in pending.items() if parts is None or p in parts}
    if not offsets:
        return
    try:
        result = consumer.commit(offsets=[TopicPartition(TOPIC, p, o) for p, o in sorted(offsets.items())],
                                 asynchronous=False)
    except KafkaException as e:
        # Left pending: retried after the next poll.
        emit(ev="commit_failed", offsets={str(p): o for p, o in offsets.items()}, error=str(e))
        return
    done = {tp.partition: tp.offset for tp in result if tp.error is None}
    for p, o in done.items():
        if pending.get(p) == o:
            del pending[p]
    if done:
        emit(ev="commit", offsets={str(p): o for p, o in done.items()})
    failed = {tp.partition: str(tp.error) for tp in result if tp.error is not None}
    if failed:
        emit(ev="commit_failed", offsets={str(p): offsets[p] for p in failed}, error=str(failed))


def on_assign(c, partitions):
    parts = sorted(tp.partition for tp in partitions)
    if COOPERATIVE:
        c.incremental_assign(partitions)
    else:
        c.assign(partitions)
    owned.update(parts)
    emit(ev="assign", parts=parts, owned=sorted(owned))


def on_revoke(c, partitions):
    parts = sorted(tp.partition for tp in partitions)
    # Commit what was consumed before the partitions go to another member.
    commit(set(parts))
    for p in parts:
        pending.pop(p, None)
        owned.discard(p)
    if COOPERATIVE:
        c.incremental_unassign(partitions)
    else:
        c.unassign()
    emit(ev="revoke", parts=parts, owned=sorted(owned))


def on_lost(c, partitions):
    parts = sorted(tp.partition for tp in partitions)
    for p in parts:
        pending.pop(p, None)
        owned.discard(p)
    if COOPERATIVE:
        c.incremental_unassign(partitions)
    else:
        c.unassign()
    emit(ev="lost", parts=parts, owned=sorted(owned))


threading.Thread(target=read_commands, daemon=True).start()
consumer.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
try:
    while not closing.is_set():
        recs = []
        for m in consumer.consume(num_messages=500, timeout=0.1):
            if m.error() is not None:
                emit(ev="error", msg=f"consume: {m.error()}")
                continue
            recs.append([m.partition(), m.offset(), m.key().decode()])
            pending[m.partition()] = m.offset() + 1
        if recs:
            emit(ev="records", recs=recs)
        commit()
    consumer.close()
    emit(ev="closed")
except Exception as e:  # noqa: BLE001 - reported to the scenario, which fails on it
    emit(ev="error", msg=f"{type(e).__name__}: {e}")
    sys.exit(1)
