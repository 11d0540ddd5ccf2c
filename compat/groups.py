"""Consumer group scenarios shared by the Python client checks.

Every scenario has its own 6-partition topic and group (both named
`<client>-<scenario>`). Its members run as separate processes, `member.py` in the
client's folder, so that one can be killed with SIGKILL and a static member can
restart. A member gets its settings as one JSON argument (bootstrap, topic, group,
name, session_timeout_ms, and optionally instance_id and strategy) and prints one
JSON object per line:

    {"ev": "assign", "parts": [...], "owned": [...]}   partitions it was given, and all it owns
    {"ev": "revoke", "parts": [...], "owned": [...]}   partitions taken from it
    {"ev": "lost", "parts": [...], "owned": [...]}     partitions lost with its membership
    {"ev": "records", "recs": [[partition, offset, key], ...]}
    {"ev": "commit", "offsets": {"partition": offset}} a commit that succeeded
    {"ev": "commit_failed", ...}                        one that did not (retried)
    {"ev": "gen", "gen": N}                            its generation, where the client tells
    {"ev": "error", "msg": "..."}                      anything unexpected: fails the scenario
    {"ev": "closed"}                                   after closing its consumer

It commits what it has consumed after every batch and, in the revoke callback,
before partitions move, and it closes its consumer (leaving the group, unless it
is a static member) when it reads "close" on stdin or stdin ends.

The check supplies a client object for the rest: `name`, `member_cmd`,
`create_topic(name, partitions)`, `produce(topic, [(partition, key)])` returning
[(partition, offset)] as acknowledged, `committed(group, topic, partitions)`
returning {partition: offset or None} (OffsetFetch), `high_watermarks(topic,
partitions)` returning {partition: offset}, and `close()`.
"""

import json
import os
import subprocess
import threading
import time
from collections import Counter

from records import CheckFailed

PARTS = 6
PER = 10  # records per partition per round
SESSION_MS = 3000  # members that may be killed: the survivors take over after this
STATIC_SESSION_MS = 6000  # long enough for a killed static member to come back within
WAIT = 30  # seconds any one step may take


class Member:
    """One member process and the events it has printed."""

    def __init__(self, sc, name, conf):
        self.sc = sc
        self.name = name
        self.events = []
        self.stopping = False  # closed or killed on purpose
        self.exited = False
        log = open(os.path.join(sc.log_dir, f"{sc.group}-{name}.log"), "w")
        self.proc = subprocess.Popen(sc.client.member_cmd + [json.dumps(conf)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
        log.close()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"ev": "error", "msg": f"unreadable output line {line.strip()!r}"}
            event["t"] = time.monotonic()
            with self.sc.cond:
                self.events.append(event)
                self.sc.cond.notify_all()
        with self.sc.cond:
            self.exited = True
            self.sc.cond.notify_all()

    def owned(self):
        """The partitions it owns after its latest assignment change (caller holds sc.cond)."""
        for e in reversed(self.events):
            if "owned" in e:
                return set(e["owned"])
        return set()

    def since(self, mark, *kinds):
        return [e for e in self.events[mark.get(self.name, 0):] if e["ev"] in kinds]

    def close(self):
        """Closes its consumer (LeaveGroup, unless static) and waits for the process to end."""
        self.stopping = True
        try:
            self.proc.stdin.write("close\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            self.sc.fail(f"{self.name} did not close within {WAIT}s")
        with self.sc.cond:
            self.sc.cond.wait_for(lambda: self.exited, 5)
            closed = any(e["ev"] == "closed" for e in self.events)
        self.sc.check(code == 0 and closed, f"{self.name} closed with exit code {code}, 'closed' reported: {closed}")

    def kill(self):
        self.stopping = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        with self.sc.cond:
            self.sc.cond.wait_for(lambda: self.exited, 5)


class Scenario:
    """A topic, a group, its members and the records produced to it."""

    def __init__(self, client, name, title, work_dir):
        self.client = client
        self.title = title
        self.topic = self.group = f"{client.name}-{name}"
        self.log_dir = os.path.join(work_dir, "members")
        os.makedirs(self.log_dir, exist_ok=True)
        self.cond = threading.Condition()
        self.members = []
        self.produced = {}  # (partition, offset) -> key
        self.expected = set()  # (partition, offset) that must be consumed, once
        self.rounds = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for m in self.members:
            m.kill()
        return False

    def fail(self, msg):
        raise CheckFailed(f"{self.title}: {msg}")

    def check(self, cond, msg):
        if not cond:
            self.fail(msg)

    def create(self):
        self.client.create_topic(self.topic, PARTS)

    def start(self, name, **conf):
        settings = {"bootstrap": self.client.bootstrap, "topic": self.topic, "group": self.group, "name": name,
                    "session_timeout_ms": SESSION_MS}
        settings.update(conf)
        m = Member(self, name, settings)
        self.members.append(m)
        return m

    def mark(self):
        """How many events each member has printed so far."""
        with self.cond:
            return {m.name: len(m.events) for m in self.members}

    def produce_round(self, per=PER):
        """Produces `per` records to every partition; returns their (partition, offset)s."""
        self.rounds += 1
        items = [(p, f"{self.group}-{self.rounds}-{p}-{i}") for i in range(per) for p in range(PARTS)]
        acked = self.client.produce(self.topic, items)
        self.check(len(acked) == len(items), f"round {self.rounds}: {len(acked)} of {len(items)} records acknowledged")
        added = set()
        for (p, key), (ap, offset) in zip(items, acked):
            self.check(ap == p and (p, offset) not in self.produced,
                       f"round {self.rounds}: record {key} acknowledged at {ap}/{offset}")
            self.produced[(p, offset)] = key
            added.add((p, offset))
        with self.cond:
            self.expected |= added
        return added

    def _problems(self):
        """Errors members reported, and members that ended on their own (caller holds cond)."""
        for m in self.members:
            for e in m.events:
                if e["ev"] == "error":
                    return f"{m.name} reported: {e['msg']}"
            if m.exited and not m.stopping:
                return f"{m.name} exited on its own (code {m.proc.poll()}; see {self.log_dir})"
        return None

    def describe(self):
        """Who owns what and how much each member has consumed (caller holds cond)."""
        parts = []
        for m in self.members:
            if m.exited:
                continue
            n = sum(len(e["recs"]) for e in m.events if e["ev"] == "records")
            failed = sum(1 for e in m.events if e["ev"] == "commit_failed")
            parts.append(f"{m.name} owns {sorted(m.owned())}, consumed {n}"
                         + (f", {failed} failed commits" if failed else ""))
        return "; ".join(parts) or "no live members"

    def wait_for(self, fn, what, timeout=WAIT):
        """Waits until fn() (called with cond held) returns something true, and returns it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                problem = self._problems()
                if problem:
                    self.fail(f"{what}: {problem}")
                result = fn()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    self.fail(f"{what}: not within {timeout}s ({self.describe()})")
                self.cond.wait(min(left, 0.2))

    def wait_settled(self, live, fresh, mark, what, timeout=WAIT):
        """Waits until the live members own all partitions between them, disjoint and
        balanced, each of `fresh` having been assigned partitions since `mark`.
        Returns {member name: sorted partitions}."""
        sizes = {PARTS // len(live), -(-PARTS // len(live))}

        def settled():
            if any(not m.since(mark, "assign") for m in fresh):
                return None
            owned = {m.name: m.owned() for m in live}
            every = sorted(p for s in owned.values() for p in s)
            if every == list(range(PARTS)) and all(len(s) in sizes for s in owned.values()):
                return {n: sorted(s) for n, s in owned.items()}
            return None

        names = ", ".join(m.name for m in live)
        return self.wait_for(settled, f"{what}: no balanced assignment of {PARTS} partitions to {names}", timeout)

    def consumed(self):
        """[(member name, partition, offset, key)] for every record any member reported (caller holds cond)."""
        return [(m.name, p, o, k) for m in self.members for e in m.events if e["ev"] == "records"
                for p, o, k in e["recs"]]

    def wait_drained(self, what):
        """Waits until every expected record is consumed and the group's committed offsets
        are at the high watermarks; then checks each record came once, with its key."""
        deadline = time.monotonic() + WAIT
        want = {p: sum(1 for q, _ in self.produced if q == p) for p in range(PARTS)}
        while True:
            with self.cond:
                problem = self._problems()
                if problem:
                    self.fail(f"{what}: {problem}")
                got = Counter((p, o) for _, p, o, _ in self.consumed())
                missing = sorted(self.expected - set(got))
            committed = high = None
            if not missing:
                committed = self.client.committed(self.group, self.topic, PARTS)
                high = self.client.high_watermarks(self.topic, PARTS)
                if committed == want and high == want:
                    break
            if time.monotonic() > deadline:
                with self.cond:
                    state = self.describe()
                if missing:
                    self.fail(f"{what}: {len(missing)} of {len(self.expected)} records not consumed after {WAIT}s "
                              f"(first {missing[:5]}; {state})")
                self.fail(f"{what}: committed offsets {committed}, high watermarks {high}, want both at {want} "
                          f"({state})")
            time.sleep(0.1)
        self.check_once(what)

    def check_once(self, what):
        with self.cond:
            records = self.consumed()
        by = {}
        for name, p, o, k in records:
            by.setdefault((p, o), []).append(name)
            self.check(self.produced.get((p, o)) == k,
                       f"{what}: {name} got key {k!r} at {p}/{o}, want {self.produced.get((p, o))!r}")
        twice = {k: v for k, v in sorted(by.items()) if len(v) > 1}
        self.check(not twice, f"{what}: {len(twice)} records consumed more than once, e.g. "
                              f"{list(twice.items())[:5]} ((partition, offset): members)")
        # Only records below the group's committed offsets are produced but not expected.
        stray = sorted(set(by) - self.expected)
        self.check(not stray, f"{what}: {len(stray)} records consumed that the group had committed before, e.g. "
                              f"{[(k, by[k]) for k in stray[:5]]} ((partition, offset): members)")

    def check_owners(self, keys, owners, what):
        """Each record in `keys` was consumed by the member that owns its partition."""
        where = {p: name for name, parts in owners.items() for p in parts}
        with self.cond:
            wrong = [(name, p, o) for name, p, o, _ in self.consumed() if (p, o) in keys and where.get(p) != name]
        self.check(not wrong, f"{what}: records consumed by a member not owning their partition "
                              f"(owners {owners}): {wrong[:5]}")

    def check_consumers(self, keys, names, what):
        """Each record in `keys` was consumed by one of `names`."""
        with self.cond:
            wrong = [(name, p, o) for name, p, o, _ in self.consumed() if (p, o) in keys and name not in names]
        self.check(not wrong, f"{what}: records consumed by a member other than {names}: {wrong[:5]}")

    def check_committed_by_members(self, what):
        with self.cond:
            commits = sum(1 for m in self.members for e in m.events if e["ev"] == "commit")
        self.check(commits > 0, f"{what}: no member reported a successful commit")


def check_membership(client, work_dir):
    """Groups of two and three; a member closing; a member killed with SIGKILL."""
    with Scenario(client, "group", "group membership", work_dir) as sc:
        sc.create()
        m1, m2 = sc.start("m1"), sc.start("m2")
        two = sc.wait_settled([m1, m2], [m1, m2], {}, "2 members")
        keys = sc.produce_round()
        sc.wait_drained("2 members")
        sc.check_owners(keys, two, "2 members")

        mark = sc.mark()
        m3 = sc.start("m3")
        three = sc.wait_settled([m1, m2, m3], [m1, m2, m3], mark, "a third member joins")
        keys = sc.produce_round()
        sc.wait_drained("3 members")
        sc.check_owners(keys, three, "3 members")

        mark = sc.mark()
        m3.close()
        keys = sc.produce_round()
        after_leave = sc.wait_settled([m1, m2], [m1, m2], mark, "m3 closed")
        sc.wait_drained("m3 closed")
        sc.check_consumers(keys, {"m1", "m2"}, "m3 closed")

        mark = sc.mark()
        killed_at = time.monotonic()
        m2.kill()
        keys = sc.produce_round()
        alone = sc.wait_settled([m1], [m1], mark, "m2 killed")
        with sc.cond:
            took_over = m1.since(mark, "assign")[0]["t"] - killed_at
        sc.check(took_over >= SESSION_MS / 1000 - 1,
                 f"m2 killed: m1 was given its partitions {took_over:.1f}s after the kill, "
                 f"before m2's session ({SESSION_MS} ms) could have expired")
        sc.wait_drained("m2 killed")
        sc.check_owners(keys, alone, "m2 killed")
        sc.check_committed_by_members("group membership")
        m1.close()
        print(f"{client.name}: group of 2 {two}, of 3 {three}; after m3 closed {after_leave}; "
              f"m2 killed: m1 took all {PARTS} after {took_over:.1f}s (session {SESSION_MS} ms); "
              f"{len(sc.expected)} records each consumed once, commits at the high watermarks")


def check_static(client, work_dir):
    """Static members killed and restarted within their session keep their partitions,
    and the other member sees no rebalance, then or when the old sessions would have
    ended. Both members are restarted in turn, so the group's leader is one of them."""
    with Scenario(client, "static", "static member", work_dir) as sc:
        sc.create()
        conf = {"session_timeout_ms": STATIC_SESSION_MS}
        s1 = sc.start("s1", instance_id="s1", **conf)
        s2 = sc.start("s2", instance_id="s2", **conf)
        owners = sc.wait_settled([s1, s2], [s1, s2], {}, "2 static members")
        sc.produce_round()
        sc.wait_drained("2 static members")
        with sc.cond:
            gen = ([e["gen"] for e in s2.events if e["ev"] == "gen"] or [None])[-1]

        first = sc.mark()
        live = {"s1": s1, "s2": s2}
        for name in ("s1", "s2"):
            other = live["s2" if name == "s1" else "s1"]
            mark = sc.mark()
            killed_at = time.monotonic()
            live[name].kill()
            again = sc.start(f"{name}-again", instance_id=name, **conf)
            back = sc.wait_settled([again, other], [again], mark, f"{name} restarted",
                                   timeout=STATIC_SESSION_MS / 1000 + 4)
            sc.check(back[again.name] == owners[name],
                     f"{name} restarted with partitions {back[again.name]}, had {owners[name]}")
            live[name] = again
            current = {live[n].name: owners[n] for n in ("s1", "s2")}
            keys = sc.produce_round()
            sc.wait_drained(f"{name} restarted")
            sc.check_owners(keys, current, f"{name} restarted")

        # Past the end of the killed incarnations' sessions: their expiry must not
        # rebalance the group either.
        until = killed_at + STATIC_SESSION_MS / 1000 + 1.5

        def quiet_until():
            for m in live.values():
                moved = [e for e in m.since(first, "assign", "revoke", "lost") if e["parts"]][1:]
                if moved:
                    sc.fail(f"{m.name}'s assignment changed after the restarts: {moved}")
            return time.monotonic() >= until

        sc.wait_for(quiet_until, "waiting out the old sessions")
        keys = sc.produce_round()
        sc.wait_drained("after the old sessions' timeout")
        sc.check_owners(keys, current, "after the old sessions' timeout")

        with sc.cond:
            # Until it was killed, each original member saw no change; each restarted
            # one got its old partitions once. (Some clients revoke the empty
            # assignment before a first join: empty changes are left out.)
            for old in (s1, s2):
                moves = old.since(first, "assign", "revoke", "lost")
                sc.check(not moves, f"{old.name}'s assignment changed while the other restarted: {moves}")
            for name in ("s1", "s2"):
                m = live[name]
                moves = [(e["ev"], e["parts"]) for e in m.since(first, "assign", "revoke", "lost") if e["parts"]]
                sc.check(moves == [("assign", owners[name])],
                         f"restarted {name}: assignment changes {moves}, want one assign of {owners[name]}")
            gens = {m.name: [e["gen"] for e in m.since(first, "gen")] for m in [s1, s2] + list(live.values())}
        if gen is not None:
            # The client tells its generation: nobody may have moved to a new one.
            sc.check(all(g == [gen] for n, g in gens.items() if n.endswith("-again"))
                     and not gens["s1"] and not gens["s2"],
                     f"generations after the restarts {gens}, want all still in {gen}")
        for m in live.values():
            m.close()
        in_gen = f" in generation {gen}" if gen is not None else ""
        print(f"{client.name}: static members s1 and s2 each killed and restarted within the session: kept "
              f"{owners['s1']} and {owners['s2']}{in_gen}, no rebalance, also past the old sessions' end")


def check_cooperative(client, work_dir):
    """cooperative-sticky: a second member joining takes some partitions from the
    first, which keeps the rest without revoking them; records produced all along
    are each consumed once."""
    with Scenario(client, "cooperative", "cooperative rebalance", work_dir) as sc:
        sc.create()
        conf = {"strategy": "cooperative-sticky"}
        c1 = sc.start("c1", **conf)
        sc.wait_settled([c1], [c1], {}, "1 member")
        sc.produce_round()
        sc.wait_drained("1 member")

        # Records keep coming while the second member joins.
        stop = threading.Event()
        errors = []

        def produce_meanwhile():
            try:
                while not stop.is_set():
                    sc.produce_round(1)
                    stop.wait(0.03)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        mark = sc.mark()
        producer = threading.Thread(target=produce_meanwhile)
        producer.start()
        try:
            c2 = sc.start("c2", **conf)
            owners = sc.wait_settled([c1, c2], [c2], mark, "c2 joins")
        finally:
            stop.set()
            producer.join()
        sc.check(not errors, f"producing while c2 joined: {errors[:1]}")
        keys = sc.produce_round()
        sc.wait_drained("c2 joined")
        sc.check_owners(keys, owners, "c2 joined")

        with sc.cond:
            revoked = sorted(p for e in c1.since(mark, "revoke") for p in e["parts"])
            c1_added = sorted(p for e in c1.since(mark, "assign") for p in e["parts"])
            c1_lost = c1.since(mark, "lost")
            c2_moves = [(e["ev"], e["parts"]) for e in c2.since({}, "assign", "revoke", "lost") if e["parts"]]
        sc.check(not c1_lost, f"c1 lost partitions: {c1_lost}")
        sc.check(revoked == owners["c2"],
                 f"c1 revoked {revoked}, want exactly the partitions c2 got, {owners['c2']}")
        sc.check(not c1_added, f"c1 was assigned {c1_added} again")
        sc.check(c2_moves == [("assign", owners["c2"])], f"c2's assignment changes {c2_moves}, "
                                                          f"want one assign of {owners['c2']}")
        c2.close()
        c1.close()
        print(f"{client.name}: cooperative-sticky: c2 joined and took {owners['c2']}; c1 revoked only those "
              f"and kept {owners['c1']}; {len(sc.expected)} records, produced all along, each consumed once")


def state_file(client, work_dir):
    return os.path.join(work_dir, f"{client.name}-restart.json")


def check_restart_before(client, work_dir):
    """Before the broker restart: a group consumes and commits everything, closes, and
    more records follow. What the part after the restart needs is kept in a file."""
    path = state_file(client, work_dir)
    with Scenario(client, "restart", "broker restart", work_dir) as sc:
        sc.create()
        r1, r2 = sc.start("r1"), sc.start("r2")
        sc.wait_settled([r1, r2], [r1, r2], {}, "before the restart")
        sc.produce_round()
        sc.wait_drained("before the restart")
        r1.close()
        r2.close()
        committed = client.committed(sc.group, sc.topic, PARTS)
        later = sc.produce_round(5)
        state = {
            "committed": {str(p): o for p, o in committed.items()},
            "produced": [[p, o, k] for (p, o), k in sorted(sc.produced.items())],
            "resume": sorted(later),
        }
    with open(path, "w") as f:
        json.dump(state, f)
    print(f"{client.name}: before the restart: group committed {committed}, then {len(later)} more records")


def check_restart_after(client, work_dir):
    """After the broker restart (kill -9, same data): the commits are still there, and new
    members of the group read exactly the records after them."""
    path = state_file(client, work_dir)
    if not os.path.exists(path):
        print(f"{client.name}: broker restart: skipped, the part before the restart failed")
        return
    with open(path) as f:
        state = json.load(f)
    with Scenario(client, "restart", "broker restart", work_dir) as sc:
        sc.produced = {(p, o): k for p, o, k in state["produced"]}
        sc.expected = {tuple(k) for k in state["resume"]}
        sc.rounds = 100
        before = {int(p): o for p, o in state["committed"].items()}
        committed = client.committed(sc.group, sc.topic, PARTS)
        sc.check(committed == before, f"committed offsets after the restart {committed}, before it {before}")
        high = client.high_watermarks(sc.topic, PARTS)
        want = {p: sum(1 for q, _ in sc.produced if q == p) for p in range(PARTS)}
        sc.check(high == want, f"high watermarks after the restart {high}, want {want}")
        sc.produce_round(5)
        r3, r4 = sc.start("r3"), sc.start("r4")
        sc.wait_settled([r3, r4], [r3, r4], {}, "after the restart")
        sc.wait_drained("after the restart")
        r3.close()
        r4.close()
        print(f"{client.name}: after a SIGKILL restart: commits {committed} kept; new members read exactly the "
              f"{len(sc.expected)} records after them")
