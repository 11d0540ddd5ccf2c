// Consumer group scenarios for kafkajs, as compat/groups.py runs them for the Python
// clients: each scenario has its own 6-partition topic and group (`kafkajs-<scenario>`),
// and its members are kafkajs Consumers in processes of their own (member.js), so one
// can be killed with SIGKILL. A member prints one JSON object per line:
//
//   {"ev": "assign", "parts": [...], "owned": [...]}    its assignment after a join
//   {"ev": "revoke", "parts": [...], "owned": []}        a rebalance took everything away
//   {"ev": "records", "recs": [[partition, offset, key], ...]}
//   {"ev": "commit", "offsets": {"partition": offset}}   a commit that succeeded
//   {"ev": "error", "msg": "..."}                        anything unexpected: fails the scenario
//   {"ev": "closed"}                                     after disconnecting (LeaveGroup)
//
// and disconnects when it reads "close" on stdin or stdin ends.
//
// kafkajs has neither static membership (group.instance.id) nor cooperative
// rebalancing, so those two scenarios are not run for it.
'use strict'

const fs = require('fs')
const path = require('path')
const readline = require('readline')
const { spawn } = require('child_process')

const PARTS = 6
const PER = 10 // records per partition per round
const SESSION_MS = 3000 // members that may be killed: the survivors take over after this
const WAIT = 30000 // ms any one step may take

class CheckFailure extends Error {}

const sleep = ms => new Promise(r => setTimeout(r, ms))
// A timer that does not keep the process alive once everything else is done.
const deadline = ms => new Promise(r => setTimeout(r, ms).unref())
const sorted = a => [...a].sort((x, y) => x - y)
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b)

class Member {
  constructor(sc, name, conf) {
    this.sc = sc
    this.name = name
    this.events = []
    this.stopping = false // closed or killed on purpose
    this.exited = false
    const log = fs.openSync(path.join(sc.logDir, `${sc.group}-${name}.log`), 'w')
    this.proc = spawn(process.execPath, [path.join(__dirname, 'member.js'), JSON.stringify(conf)], {
      stdio: ['pipe', 'pipe', log],
    })
    fs.closeSync(log)
    this.exitCode = new Promise(resolve =>
      this.proc.on('exit', (code, signal) => {
        this.exited = true
        resolve(code === null ? signal : code)
      })
    )
    readline.createInterface({ input: this.proc.stdout }).on('line', line => {
      let event
      try {
        event = JSON.parse(line)
      } catch (e) {
        event = { ev: 'error', msg: `unreadable output line ${JSON.stringify(line)}` }
      }
      event.t = Date.now()
      this.events.push(event)
    })
  }

  owned() {
    for (let i = this.events.length - 1; i >= 0; i--) if (this.events[i].owned) return this.events[i].owned
    return []
  }

  since(mark, ...kinds) {
    return this.events.slice(mark[this.name] || 0).filter(e => kinds.includes(e.ev))
  }

  async close() {
    this.stopping = true
    this.proc.stdin.end('close\n')
    const code = await Promise.race([this.exitCode, deadline(WAIT).then(() => 'timeout')])
    if (code === 'timeout') {
      await this.kill()
      this.sc.fail(`${this.name} did not close within ${WAIT / 1000}s`)
    }
    await sleep(50) // the last lines may still be in the pipe
    const closed = this.events.some(e => e.ev === 'closed')
    this.sc.check(code === 0 && closed, `${this.name} closed with exit code ${code}, 'closed' reported: ${closed}`)
  }

  async kill() {
    this.stopping = true
    if (!this.exited) this.proc.kill('SIGKILL')
    await this.exitCode
  }
}

class Scenario {
  constructor(client, name, title, workDir) {
    this.client = client
    this.title = title
    this.topic = this.group = `kafkajs-${name}`
    this.logDir = path.join(workDir, 'members')
    fs.mkdirSync(this.logDir, { recursive: true })
    this.members = []
    this.produced = new Map() // "partition/offset" -> key
    this.expected = new Set() // "partition/offset" that must be consumed, once
    this.rounds = 0
  }

  fail(msg) {
    throw new CheckFailure(`${this.title}: ${msg}`)
  }

  check(cond, msg) {
    if (!cond) this.fail(msg)
  }

  async killAll() {
    for (const m of this.members) await m.kill()
  }

  start(name, conf = {}) {
    const m = new Member(this, name, {
      bootstrap: this.client.bootstrap,
      topic: this.topic,
      group: this.group,
      name,
      session_timeout_ms: SESSION_MS,
      ...conf,
    })
    this.members.push(m)
    return m
  }

  mark() {
    return Object.fromEntries(this.members.map(m => [m.name, m.events.length]))
  }

  // Produces `per` records to every partition; returns their "partition/offset"s.
  async produceRound(per = PER) {
    this.rounds++
    const items = []
    for (let i = 0; i < per; i++) for (let p = 0; p < PARTS; p++) items.push([p, `${this.group}-${this.rounds}-${p}-${i}`])
    const acked = await this.client.produce(this.topic, items)
    const added = new Set()
    items.forEach(([p, key], i) => {
      const k = `${acked[i][0]}/${acked[i][1]}`
      this.check(acked[i][0] === p && !this.produced.has(k), `round ${this.rounds}: record ${key} acknowledged at ${k}`)
      this.produced.set(k, key)
      added.add(k)
    })
    for (const k of added) this.expected.add(k)
    return added
  }

  problems() {
    for (const m of this.members) {
      const err = m.events.find(e => e.ev === 'error')
      if (err) return `${m.name} reported: ${err.msg}`
      if (m.exited && !m.stopping) return `${m.name} exited on its own (see ${this.logDir})`
    }
    return null
  }

  describe() {
    return (
      this.members
        .filter(m => !m.exited)
        .map(m => {
          const n = m.events.filter(e => e.ev === 'records').reduce((s, e) => s + e.recs.length, 0)
          return `${m.name} owns ${JSON.stringify(m.owned())}, consumed ${n}`
        })
        .join('; ') || 'no live members'
    )
  }

  async waitFor(fn, what, timeout = WAIT) {
    const deadline = Date.now() + timeout
    for (;;) {
      const problem = this.problems()
      if (problem) this.fail(`${what}: ${problem}`)
      const result = fn()
      if (result) return result
      if (Date.now() > deadline) this.fail(`${what}: not within ${timeout / 1000}s (${this.describe()})`)
      await sleep(50)
    }
  }

  // Waits until the live members own all partitions between them, disjoint and
  // balanced, each of `fresh` having been assigned partitions since `mark`.
  waitSettled(live, fresh, mark, what) {
    const sizes = [Math.floor(PARTS / live.length), Math.ceil(PARTS / live.length)]
    const settled = () => {
      if (fresh.some(m => m.since(mark, 'assign').length === 0)) return null
      const owned = Object.fromEntries(live.map(m => [m.name, m.owned()]))
      const every = sorted(Object.values(owned).flat())
      const all = [...Array(PARTS).keys()]
      return same(every, all) && Object.values(owned).every(s => sizes.includes(s.length)) ? owned : null
    }
    return this.waitFor(settled, `${what}: no balanced assignment of ${PARTS} partitions to ${live.map(m => m.name).join(', ')}`)
  }

  consumed() {
    const out = []
    for (const m of this.members) {
      for (const e of m.events) if (e.ev === 'records') for (const [p, o, k] of e.recs) out.push([m.name, p, o, k])
    }
    return out
  }

  // Waits until every expected record is consumed and the group's committed offsets are
  // at the high watermarks; then checks each record came once, with its key.
  async waitDrained(what) {
    const deadline = Date.now() + WAIT
    const want = {}
    for (let p = 0; p < PARTS; p++) want[p] = 0
    for (const k of this.produced.keys()) want[Number(k.split('/')[0])]++
    for (;;) {
      const problem = this.problems()
      if (problem) this.fail(`${what}: ${problem}`)
      const got = new Set(this.consumed().map(([, p, o]) => `${p}/${o}`))
      const missing = [...this.expected].filter(k => !got.has(k))
      let committed, high
      if (missing.length === 0) {
        committed = await this.client.committed(this.group, this.topic)
        high = await this.client.highWatermarks(this.topic)
        if (same(committed, want) && same(high, want)) break
      }
      if (Date.now() > deadline) {
        if (missing.length > 0) {
          this.fail(`${what}: ${missing.length} of ${this.expected.size} records not consumed after ${WAIT / 1000}s (first ${missing.slice(0, 5)}; ${this.describe()})`)
        }
        this.fail(`${what}: committed offsets ${JSON.stringify(committed)}, high watermarks ${JSON.stringify(high)}, want both at ${JSON.stringify(want)} (${this.describe()})`)
      }
      await sleep(100)
    }
    this.checkOnce(what)
  }

  checkOnce(what) {
    const by = new Map()
    for (const [name, p, o, k] of this.consumed()) {
      const key = `${p}/${o}`
      this.check(this.produced.get(key) === k, `${what}: ${name} got key ${k} at ${key}, want ${this.produced.get(key)}`)
      by.set(key, [...(by.get(key) || []), name])
    }
    const twice = [...by].filter(([, v]) => v.length > 1)
    this.check(twice.length === 0, `${what}: ${twice.length} records consumed more than once, e.g. ${JSON.stringify(twice.slice(0, 5))} (partition/offset: members)`)
    // Only records below the group's committed offsets are produced but not expected.
    const stray = [...by].filter(([k]) => !this.expected.has(k))
    this.check(stray.length === 0, `${what}: ${stray.length} records consumed that the group had committed before, e.g. ${JSON.stringify(stray.slice(0, 5))} (partition/offset: members)`)
  }

  // Each record in `keys` was consumed by one of `names` (by default: its partition's owner in `owners`).
  checkOwners(keys, owners, what) {
    const where = {}
    for (const [name, parts] of Object.entries(owners)) for (const p of parts) where[p] = name
    const wrong = this.consumed().filter(([name, p, o]) => keys.has(`${p}/${o}`) && where[p] !== name)
    this.check(wrong.length === 0, `${what}: records consumed by a member not owning their partition (owners ${JSON.stringify(owners)}): ${JSON.stringify(wrong.slice(0, 5))}`)
  }

  checkConsumers(keys, names, what) {
    const wrong = this.consumed().filter(([name, p, o]) => keys.has(`${p}/${o}`) && !names.includes(name))
    this.check(wrong.length === 0, `${what}: records consumed by a member other than ${names}: ${JSON.stringify(wrong.slice(0, 5))}`)
  }
}

// Runs fn with a scenario whose members are all killed when it ends, however it ends.
async function withScenario(client, name, title, workDir, fn) {
  const sc = new Scenario(client, name, title, workDir)
  try {
    return await fn(sc)
  } finally {
    await sc.killAll()
  }
}

// Groups of two and three; a member closing; a member killed with SIGKILL.
function checkMembership(client, workDir) {
  return withScenario(client, 'group', 'group membership', workDir, async sc => {
    await client.createTopic(sc.topic, PARTS)
    const m1 = sc.start('m1')
    const m2 = sc.start('m2')
    const two = await sc.waitSettled([m1, m2], [m1, m2], {}, '2 members')
    let keys = await sc.produceRound()
    await sc.waitDrained('2 members')
    sc.checkOwners(keys, two, '2 members')

    let mark = sc.mark()
    const m3 = sc.start('m3')
    const three = await sc.waitSettled([m1, m2, m3], [m1, m2, m3], mark, 'a third member joins')
    keys = await sc.produceRound()
    await sc.waitDrained('3 members')
    sc.checkOwners(keys, three, '3 members')

    mark = sc.mark()
    await m3.close()
    keys = await sc.produceRound()
    const afterLeave = await sc.waitSettled([m1, m2], [m1, m2], mark, 'm3 closed')
    await sc.waitDrained('m3 closed')
    sc.checkConsumers(keys, ['m1', 'm2'], 'm3 closed')

    mark = sc.mark()
    const killedAt = Date.now()
    await m2.kill()
    keys = await sc.produceRound()
    const alone = await sc.waitSettled([m1], [m1], mark, 'm2 killed')
    const tookOver = (m1.since(mark, 'assign')[0].t - killedAt) / 1000
    sc.check(tookOver >= SESSION_MS / 1000 - 1,
      `m2 killed: m1 was given its partitions ${tookOver.toFixed(1)}s after the kill, before m2's session (${SESSION_MS} ms) could have expired`)
    await sc.waitDrained('m2 killed')
    sc.checkOwners(keys, alone, 'm2 killed')
    sc.check(sc.members.some(m => m.events.some(e => e.ev === 'commit')), 'no member reported a successful commit')
    await m1.close()
    const show = o => JSON.stringify(o).replace(/"/g, '')
    console.log(`kafkajs: group of 2 ${show(two)}, of 3 ${show(three)}; after m3 closed ${show(afterLeave)}; ` +
      `m2 killed: m1 took all ${PARTS} after ${tookOver.toFixed(1)}s (session ${SESSION_MS} ms); ` +
      `${sc.expected.size} records each consumed once, commits at the high watermarks`)
  })
}

const stateFile = workDir => path.join(workDir, 'kafkajs-restart.json')

// Before the broker restart: a group consumes and commits everything, closes, and more
// records follow. What the part after the restart needs is kept in a file.
async function checkRestartBefore(client, workDir) {
  const state = await withScenario(client, 'restart', 'broker restart', workDir, async sc => {
    await client.createTopic(sc.topic, PARTS)
    const r1 = sc.start('r1')
    const r2 = sc.start('r2')
    await sc.waitSettled([r1, r2], [r1, r2], {}, 'before the restart')
    await sc.produceRound()
    await sc.waitDrained('before the restart')
    await r1.close()
    await r2.close()
    const committed = await client.committed(sc.group, sc.topic)
    const later = await sc.produceRound(5)
    return { committed, produced: [...sc.produced], resume: [...later] }
  })
  fs.writeFileSync(stateFile(workDir), JSON.stringify(state))
  console.log(`kafkajs: before the restart: group committed ${JSON.stringify(state.committed)}, then ${state.resume.length} more records`)
}

// After the broker restart (kill -9, same data): the commits are still there, and new
// members of the group read exactly the records after them.
async function checkRestartAfter(client, workDir) {
  if (!fs.existsSync(stateFile(workDir))) {
    console.log('kafkajs: broker restart: skipped, the part before the restart failed')
    return
  }
  const state = JSON.parse(fs.readFileSync(stateFile(workDir)))
  await withScenario(client, 'restart', 'broker restart', workDir, async sc => {
    sc.produced = new Map(state.produced)
    sc.expected = new Set(state.resume)
    sc.rounds = 100
    const committed = await client.committed(sc.group, sc.topic)
    sc.check(same(committed, state.committed), `committed offsets after the restart ${JSON.stringify(committed)}, before it ${JSON.stringify(state.committed)}`)
    const high = await client.highWatermarks(sc.topic)
    const want = {}
    for (let p = 0; p < PARTS; p++) want[p] = [...sc.produced.keys()].filter(k => Number(k.split('/')[0]) === p).length
    sc.check(same(high, want), `high watermarks after the restart ${JSON.stringify(high)}, want ${JSON.stringify(want)}`)
    await sc.produceRound(5)
    const r3 = sc.start('r3')
    const r4 = sc.start('r4')
    await sc.waitSettled([r3, r4], [r3, r4], {}, 'after the restart')
    await sc.waitDrained('after the restart')
    await r3.close()
    await r4.close()
    console.log(`kafkajs: after a SIGKILL restart: commits ${JSON.stringify(committed)} kept; new members read exactly the ${sc.expected.size} records after them`)
  })
}

// What the scenarios do with kafkajs outside the members.
class GroupClient {
  constructor(kafka, admin, bootstrap) {
    this.kafka = kafka
    this.admin = admin
    this.bootstrap = bootstrap
    this.producer = null
  }

  async createTopic(name, partitions) {
    const created = await this.admin.createTopics({ topics: [{ topic: name, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true })
    if (created !== true) throw new CheckFailure(`CreateTopics ${name}: returned ${created}`)
  }

  // [[partition, key]] -> [[partition, offset]] as acknowledged.
  async produce(topic, items) {
    if (!this.producer) {
      const { Partitioners } = require('kafkajs')
      this.producer = this.kafka.producer({ idempotent: false, createPartitioner: Partitioners.DefaultPartitioner })
      await this.producer.connect()
    }
    const meta = await this.producer.send({ topic, acks: -1, messages: items.map(([partition, key]) => ({ partition, key, value: key })) })
    const next = {}
    for (const m of meta) {
      if (m.errorCode !== 0) throw new CheckFailure(`produce to ${topic}/${m.partition}: error ${m.errorCode}`)
      next[m.partition] = Number(m.baseOffset)
    }
    return items.map(([p]) => [p, next[p]++])
  }

  // {partition: offset or null} (OffsetFetch).
  async committed(group, topic) {
    const [t] = await this.admin.fetchOffsets({ groupId: group, topics: [topic] })
    return Object.fromEntries(t.partitions.map(p => [p.partition, Number(p.offset) < 0 ? null : Number(p.offset)]).sort((a, b) => a[0] - b[0]))
  }

  async highWatermarks(topic) {
    const offsets = await this.admin.fetchTopicOffsets(topic)
    return Object.fromEntries(offsets.map(o => [o.partition, Number(o.high)]).sort((a, b) => a[0] - b[0]))
  }

  async close() {
    if (this.producer) await this.producer.disconnect()
  }
}

module.exports = { GroupClient, CheckFailure, checkMembership, checkRestartBefore, checkRestartAfter }
