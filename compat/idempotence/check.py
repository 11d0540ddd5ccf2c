"""Idempotent producers of three clients at once, across a kill -9 of the broker.

Usage: check.py BOOTSTRAP WORK_DIR

confluent-kafka (enable.idempotence=true), kafka-python (idempotent by default) and
kafkajs (idempotent: true) each send COUNT records, in order, to one 3-partition topic.
When each has had a third acknowledged, this script asks run.sh to kill -9 the node and
start it again (it writes WORK_DIR/restart-now and waits for WORK_DIR/restarted); the
producers retry what was in flight. At the end:
- every record of every producer is stored exactly once (retries of batches that were
  written before the kill are recognised, not stored again);
- each acknowledged record is at the offset it was acknowledged with;
- each producer's records keep their send order within a partition.
"""

import json
import os
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer

NAME = "idempotence"
TOPIC = "idempotent"
PARTITIONS = 3
COUNT = 3000
HERE = os.path.dirname(os.path.abspath(__file__))


def fail(msg):
    print(f"{NAME}: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


class Acks:
    """What one producer saw acknowledged: value -> (partition, offset)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.at = {}
        self.errors = []

    def add(self, value, partition, offset):
        with self.lock:
            self.at[value] = (partition, offset)

    def count(self):
        with self.lock:
            return len(self.at)


def run_confluent(bootstrap, acks, done):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                  "message.timeout.ms": 120000})

    def report(err, msg):
        if err is not None:
            acks.errors.append(str(err))
        else:
            acks.add(msg.value().decode(), msg.partition(), msg.offset())

    for i in range(COUNT):
        p.produce(TOPIC, value=f"c-{i}".encode(), key=f"k{i}".encode(), partition=i % PARTITIONS,
                  on_delivery=report)
        p.poll(0)
        if i % 50 == 49:
            time.sleep(0.05)  # paced, so that records are in flight when the node dies
    left = p.flush(150)
    if left:
        acks.errors.append(f"{left} records still in flight")
    done.set()


def run_kafka_python(bootstrap, acks, done):
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, delivery_timeout_ms=120000,
                      request_timeout_ms=10000, reconnect_backoff_max_ms=500)
    if not p.config["enable_idempotence"]:
        acks.errors.append("kafka-python did not enable idempotence")
    futures = []
    for i in range(COUNT):
        value = f"p-{i}"
        f = p.send(TOPIC, value=value.encode(), key=f"k{i}".encode(), partition=i % PARTITIONS)
        f.add_callback(lambda md, v=value: acks.add(v, md.partition, md.offset))
        f.add_errback(lambda e: acks.errors.append(repr(e)))
        futures.append(f)
        if i % 50 == 49:
            time.sleep(0.05)
    p.flush(150)
    p.close(10)
    done.set()


def run_kafkajs(bootstrap, acks, done):
    proc = subprocess.Popen(["node", os.path.join(HERE, "producer.js"), bootstrap, TOPIC, str(COUNT), "j",
                             str(PARTITIONS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines = []
    t = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    t.start()
    for line in proc.stdout:
        r = json.loads(line)
        acks.add(r["value"], r["partition"], r["offset"])
    if proc.wait() != 0:
        t.join(5)
        acks.errors.append("kafkajs producer exited with %d: %s" % (proc.returncode, "".join(err_lines[-5:])))
    done.set()


def main():
    bootstrap, work = sys.argv[1], sys.argv[2]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS)]).values():
        f.result(30)

    clients = {"confluent-kafka": (run_confluent, "c"), "kafka-python": (run_kafka_python, "p"),
               "kafkajs": (run_kafkajs, "j")}
    state = {}
    for name, (fn, prefix) in clients.items():
        acks, done = Acks(), threading.Event()
        threading.Thread(target=fn, args=(bootstrap, acks, done), daemon=True).start()
        state[name] = (prefix, acks, done)

    # A third of each producer's records acknowledged, then the broker is killed.
    deadline = time.time() + 60
    while any(a.count() < COUNT // 3 and not d.is_set() for _, a, d in state.values()):
        if time.time() > deadline:
            fail("producers too slow before the restart: " + ", ".join(
                f"{n} {a.count()}" for n, (_, a, _) in state.items()))
        time.sleep(0.02)
    before = {n: a.count() for n, (_, a, _) in state.items()}
    open(os.path.join(work, "restart-now"), "w").close()
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(work, "restarted")):
        if time.time() > deadline:
            fail("the node was not restarted")
        time.sleep(0.05)

    for name, (_, acks, done) in state.items():
        if not done.wait(180):
            fail(f"{name}: producer did not finish ({acks.count()} of {COUNT} acknowledged)")
    for name, (_, acks, _) in state.items():
        if acks.errors:
            fail(f"{name}: delivery errors: {acks.errors[:3]}")
        if acks.count() != COUNT:
            fail(f"{name}: {acks.count()} of {COUNT} records acknowledged")

    # Read every partition back.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "idempotence-check", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    stored = {}  # value -> [(partition, offset)]
    order = {}  # (prefix, partition) -> [i in offset order]
    for p in range(PARTITIONS):
        _, high = c.get_watermark_offsets(TopicPartition(TOPIC, p), 10)
        c.assign([TopicPartition(TOPIC, p, 0)])
        seen = 0
        deadline = time.time() + 60
        while seen < high:
            if time.time() > deadline:
                fail(f"partition {p}: read {seen} of {high}")
            m = c.poll(1)
            if m is None or m.error():
                continue
            seen += 1
            v = m.value().decode()
            stored.setdefault(v, []).append((p, m.offset()))
            prefix, i = v.split("-")
            order.setdefault((prefix, p), []).append(int(i))
    c.close()

    dupes = {v: at for v, at in stored.items() if len(at) > 1}
    if dupes:
        some = sorted(dupes.items())[:5]
        fail(f"{len(dupes)} records stored more than once, e.g. {some}")
    for name, (prefix, acks, _) in state.items():
        for i in range(COUNT):
            v = f"{prefix}-{i}"
            if v not in stored:
                fail(f"{name}: record {v} acknowledged but not stored")
            if stored[v][0] != acks.at[v]:
                fail(f"{name}: record {v} acknowledged at {acks.at[v]}, stored at {stored[v][0]}")
        for p in range(PARTITIONS):
            seq = order.get((prefix, p), [])
            if seq != sorted(seq):
                fail(f"{name}: partition {p} holds its records out of send order")
    print(f"{NAME}: ok: {COUNT} records from each of {', '.join(state)}, stored once each across a kill -9 "
          f"(acknowledged before it: {before})")


if __name__ == "__main__":
    main()
