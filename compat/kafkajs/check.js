// kafkajs 2.x against one node.
//
// Usage: node check.js BOOTSTRAP WORK_DIR                  everything up to the broker restart
//        node check.js --after-restart BOOTSTRAP WORK_DIR  the group scenario's part after it
//
// kafkajs has no manual partition assignment: its consumer always joins a
// consumer group. Records are therefore read through kafkajs's own cluster
// and broker layer, with the Fetch encoder/decoder and the Batch filtering
// its consumer uses, instead of through the consumer API. The consumer group
// scenarios (groups.js) use its Consumer.
'use strict'

const { Kafka, CompressionTypes, ConfigResourceTypes, Partitioners, logLevel } = require('kafkajs')
const Batch = require('kafkajs/src/consumer/batch')
const ISOLATION_LEVEL = require('kafkajs/src/protocol/isolationLevel')
const TIMESTAMP_TYPES = require('kafkajs/src/protocol/timestampTypes')
const groups = require('./groups')

const CLIENT = 'kafkajs'
const AFTER_RESTART = process.argv[2] === '--after-restart'
const [BOOTSTRAP, WORK_DIR] = process.argv.slice(AFTER_RESTART ? 3 : 2)
const TOPIC = 'kafkajs-3p'
const PARTITIONS = [0, 1, 2]
const PER = 300 // records per partition per round
const BASE_TS = 1700000000000
// kafkajs has gzip built in; snappy, lz4 and zstd need codec plugins.
const ROUNDS = [
  { codec: CompressionTypes.None, name: 'none', acks: -1 },
  { codec: CompressionTypes.GZIP, name: 'gzip', acks: -1 },
  { codec: CompressionTypes.GZIP, name: 'gzip', acks: 1 },
]

const { CheckFailure } = groups

function check(cond, msg) {
  if (!cond) throw new CheckFailure(msg)
}

function makeRecord(rnd, p, i) {
  let key = Buffer.from(`k-${rnd}-${p}-${i}`)
  if (i % 40 === 7) key = null
  let value
  if (i % 40 === 11) value = Buffer.alloc(0)
  else if (i % 40 === 13) value = null // tombstone
  else if (i % 50 === 49) value = Buffer.from(Array.from({ length: 20000 }, (_, j) => (i * 7 + j * 13) % 256))
  else value = Buffer.from(`v-${rnd}-${p}-${i}-` + '0123456789abcdef'.repeat(i % 64))
  const headers =
    i % 10 === 3
      ? {}
      : { h1: Buffer.from('a'), dup: [Buffer.from('x'), Buffer.from('y')], bin: Buffer.from([0, 255, i % 256]) }
  let ts = BASE_TS + rnd * 1000000 + p * 10000 + i
  if (i % 17 === 5) ts -= 5000 // timestamps need not grow with the offset
  return { partition: p, key, value, headers, timestamp: String(ts) }
}

const show = b => (b === null || b === undefined ? 'null' : b.length > 40 ? `${b.subarray(0, 40).toString('hex')}... (${b.length} bytes)` : JSON.stringify(b.toString('latin1')))

// Headers as [[key, hex], ...] in wire order; kafkajs groups repeated keys into arrays.
const flatHeaders = h =>
  Object.entries(h || {}).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map(x => [k, x === null ? null : Buffer.from(x).toString('hex')]))

const sameBytes = (a, b) => (a === null || a === undefined ? b === null || b === undefined : b !== null && b !== undefined && Buffer.compare(a, b) === 0)

function compare(where, offset, want, got) {
  check(sameBytes(want.key, got.key), `${where} offset ${offset}: key ${show(got.key)}, want ${show(want.key)}`)
  check(sameBytes(want.value, got.value), `${where} offset ${offset}: value ${show(got.value)}, want ${show(want.value)}`)
  const wh = JSON.stringify(flatHeaders(want.headers))
  const gh = JSON.stringify(flatHeaders(got.headers))
  check(wh === gh, `${where} offset ${offset}: headers ${gh}, want ${wh}`)
  check(got.timestamp === want.timestamp, `${where} offset ${offset}: timestamp ${got.timestamp}, want ${want.timestamp}`)
  check(
    got.batchContext.timestampType === TIMESTAMP_TYPES.CREATE_TIME,
    `${where} offset ${offset}: timestamp type ${got.batchContext.timestampType}, want CreateTime`
  )
}

// One Fetch per leader for the given {partition: offset}; returns {partition: Batch}.
async function fetchAt(cluster, offsets, maxWaitTime) {
  const partitions = Object.keys(offsets).map(Number)
  const byLeader = cluster.findLeaderForPartitions(TOPIC, partitions)
  const batches = {}
  for (const [nodeId, leaderPartitions] of Object.entries(byLeader)) {
    const broker = await cluster.findBroker({ nodeId })
    const { responses } = await broker.fetch({
      maxWaitTime,
      minBytes: 1,
      maxBytes: 10485760,
      isolationLevel: ISOLATION_LEVEL.READ_COMMITTED,
      topics: [
        {
          topic: TOPIC,
          partitions: leaderPartitions.map(p => ({ partition: p, fetchOffset: String(offsets[p]), maxBytes: 1048576 })),
        },
      ],
    })
    for (const { partitions: parts } of responses) {
      for (const data of parts) batches[data.partition] = new Batch(TOPIC, String(offsets[data.partition]), data)
    }
  }
  return batches
}

async function produceAll(kafka, expected) {
  const producer = kafka.producer({
    allowAutoTopicCreation: false,
    idempotent: false,
    createPartitioner: Partitioners.DefaultPartitioner,
    // No retries: a broker error fails the check instead of being retried.
    retry: { retries: 0 },
  })
  await producer.connect()
  for (const [rnd, { codec, name, acks }] of ROUNDS.entries()) {
    // Several sends per round, each carrying all partitions in one request.
    for (let start = 0; start < PER; start += 100) {
      const messages = []
      for (const p of PARTITIONS) {
        for (let i = start; i < Math.min(start + 100, PER); i++) messages.push(makeRecord(rnd, p, i))
      }
      let meta
      try {
        meta = await producer.send({ topic: TOPIC, acks, compression: codec, messages })
      } catch (e) {
        throw new CheckFailure(`round ${rnd} (${name}, acks=${acks}): Produce failed: ${e.message} (${e.type || e.name})`)
      }
      for (const p of PARTITIONS) {
        const m = meta.find(x => x.partition === p)
        check(m && m.errorCode === 0, `round ${rnd} (${name}, acks=${acks}): no successful Produce result for partition ${p}: ${JSON.stringify(m)}`)
        check(
          m.baseOffset === String(expected[p].length),
          `round ${rnd} (${name}, acks=${acks}): partition ${p} batch acknowledged at base offset ${m.baseOffset}, want ${expected[p].length}`
        )
      }
      for (const m of messages) expected[m.partition].push(m)
    }
  }
  await producer.disconnect()
}

async function consumeAll(cluster, expected) {
  const got = { 0: [], 1: [], 2: [] }
  const deadline = Date.now() + 60000
  for (;;) {
    const pending = {}
    for (const p of PARTITIONS) if (got[p].length < expected[p].length) pending[p] = got[p].length
    if (Object.keys(pending).length === 0) break
    check(Date.now() < deadline, `consume: not at the end after 60s; got ${JSON.stringify(Object.fromEntries(PARTITIONS.map(p => [p, got[p].length])))} records`)
    const batches = await fetchAt(cluster, pending, 500)
    for (const [p, batch] of Object.entries(batches)) {
      check(
        Number(batch.highWatermark) === expected[p].length,
        `Fetch ${TOPIC}/${p} at offset ${pending[p]}: high watermark ${batch.highWatermark}, want ${expected[p].length}`
      )
      got[p].push(...batch.messages)
    }
  }
  let total = 0
  for (const p of PARTITIONS) {
    // Reading past the end must give nothing.
    const after = (await fetchAt(cluster, { [p]: expected[p].length }, 100))[p]
    check(after.isEmpty(), `Fetch ${TOPIC}/${p} at the high watermark returned records at offsets ${after.messages.map(m => m.offset)}`)
    check(got[p].length === expected[p].length, `${TOPIC}/${p}: consumed ${got[p].length} records, want ${expected[p].length}`)
    got[p].forEach((m, offset) => {
      check(m.offset === String(offset), `${TOPIC}/${p}: record #${offset} has offset ${m.offset}`)
      compare(`${TOPIC}/${p}`, offset, expected[p][offset], m)
    })
    total += got[p].length
  }
  return total
}

async function checkListOffsets(admin, expected) {
  const offsets = await admin.fetchTopicOffsets(TOPIC)
  for (const p of PARTITIONS) {
    const o = offsets.find(x => x.partition === p)
    check(o && o.low === '0' && o.high === String(expected[p].length), `ListOffsets ${TOPIC}/${p}: ${JSON.stringify(o)}, want low 0, high ${expected[p].length}`)
  }
  // One timestamp inside each round of each partition (away from batch
  // boundaries, which would hide batch-granular answers), one before every
  // record and one after every record; each looked up in every partition.
  const probes = PARTITIONS.flatMap(p => ROUNDS.map((_, rnd) => Number(expected[p][rnd * PER + (PER >> 1) + 1].timestamp)))
  probes.push(0, Math.max(...PARTITIONS.flatMap(p => expected[p].map(r => Number(r.timestamp)))) + 1)
  const wrong = []
  for (const ts of probes) {
    const byTs = await admin.fetchTopicOffsetsByTimestamp(TOPIC, ts)
    for (const p of PARTITIONS) {
      let want = expected[p].findIndex(r => Number(r.timestamp) >= ts)
      // kafkajs reports "no such record" (-1) as the high watermark.
      if (want < 0) want = expected[p].length
      const o = byTs.find(x => x.partition === p)
      if (!o || o.offset !== String(want)) wrong.push(`${TOPIC}/${p} timestamp ${ts}: offset ${o && o.offset}, want ${want}`)
    }
  }
  const total = probes.length * PARTITIONS.length
  check(wrong.length === 0, `ListOffsets by timestamp: ${wrong.length} of ${total} lookups wrong: ${wrong.slice(0, 6).join('; ')}${wrong.length > 6 ? '; ...' : ''}`)
}

async function checkTail(kafka, cluster, expected) {
  // A fetch at the end with a 500ms max wait must come back empty, promptly.
  const ends = Object.fromEntries(PARTITIONS.map(p => [p, expected[p].length]))
  let start = Date.now()
  const batches = await fetchAt(cluster, ends, 500)
  let elapsed = Date.now() - start
  for (const p of PARTITIONS) check(batches[p] && batches[p].isEmpty(), `Fetch at the end of ${TOPIC}/${p} returned records`)
  check(elapsed < 3000, `Fetch at the end of ${TOPIC} with maxWaitTime 500ms took ${elapsed}ms, want < 3000ms`)

  // A record produced there must show up promptly for a reader polling the end.
  const producer = kafka.producer({ idempotent: false, createPartitioner: Partitioners.DefaultPartitioner })
  await producer.connect()
  await producer.send({ topic: TOPIC, messages: [{ partition: 0, key: 'late', value: 'late' }] })
  await producer.disconnect()
  start = Date.now()
  let late = []
  while (late.length === 0 && Date.now() - start < 10000) late = (await fetchAt(cluster, { 0: ends[0] }, 500))[0].messages
  elapsed = Date.now() - start
  check(late.length === 1 && late[0].offset === String(ends[0]) && late[0].value.toString() === 'late',
    `late record: got ${JSON.stringify(late.map(m => [m.offset, show(m.value)]))}, want [[${ends[0]}, "late"]]`)
  check(elapsed < 5000, `a record produced at the tail took ${elapsed}ms to be fetched, want < 5000ms`)
}

async function checkAdmin(admin) {
  const again = await admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: 3, replicationFactor: 1 }] })
  check(again === false, `CreateTopics ${TOPIC} again: returned ${again}, want false (TOPIC_ALREADY_EXISTS)`)

  const { resources } = await admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: TOPIC }], includeSynonyms: false })
  check(resources.length === 1 && resources[0].errorCode === 0 && resources[0].configEntries.length > 0,
    `DescribeConfigs topic ${TOPIC}: ${JSON.stringify(resources).slice(0, 300)}`)

  const scratch = 'kafkajs-scratch'
  check(await admin.createTopics({ topics: [{ topic: scratch, numPartitions: 1, replicationFactor: 1 }] }), `CreateTopics ${scratch}: returned false`)
  await admin.createPartitions({ topicPartitions: [{ topic: scratch, count: 4 }] })
  let n
  for (let tries = 0; tries < 50; tries++) {
    n = (await admin.fetchTopicMetadata({ topics: [scratch] })).topics[0].partitions.length
    if (n === 4) break
    await new Promise(r => setTimeout(r, 200))
  }
  check(n === 4, `${scratch}: ${n} partitions after CreatePartitions to 4`)
  await admin.deleteTopics({ topics: [scratch] })
  let listed
  for (let tries = 0; tries < 50; tries++) {
    listed = (await admin.listTopics()).includes(scratch)
    if (!listed) break
    await new Promise(r => setTimeout(r, 200))
  }
  check(!listed, `${scratch} still listed in Metadata 10s after DeleteTopics`)
}

function describe(e) {
  return e instanceof CheckFailure ? e.message : `${e.name}: ${e.message}${e.type ? ` (${e.type})` : ''}\n${e.stack}`
}

async function main() {
  const kafka = new Kafka({ clientId: 'quarry-compat', brokers: [BOOTSTRAP], logLevel: logLevel.NOTHING })
  const admin = kafka.admin()
  await admin.connect()
  const client = new groups.GroupClient(kafka, admin, BOOTSTRAP)
  let failures = 0
  const run = async step => {
    try {
      await step()
      return true
    } catch (e) {
      console.error(`${CLIENT}: FAIL: ${describe(e)}`)
      failures++
      return false
    }
  }

  if (AFTER_RESTART) {
    await run(() => groups.checkRestartAfter(client, WORK_DIR))
  } else {
    const expected = { 0: [], 1: [], 2: [] }
    let cluster = null
    let total
    const produceAndConsume = async () => {
      const created = await admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true })
      check(created === true, `CreateTopics ${TOPIC}: returned ${created}`)
      const md = await admin.fetchTopicMetadata({ topics: [TOPIC] })
      check(md.topics[0].partitions.length === 3, `Metadata for ${TOPIC}: ${md.topics[0].partitions.length} partitions, want 3`)
      await produceAll(kafka, expected)
      const createCluster = Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')
      cluster = kafka[createCluster]({ metadataMaxAge: 300000, allowAutoTopicCreation: false })
      await cluster.connect()
      await cluster.addTargetTopic(TOPIC)
      await cluster.refreshMetadata()
      total = await consumeAll(cluster, expected)
    }
    // Producing and reading back first; if they fail, ListOffsets, the tail and the
    // admin calls are skipped. Each of those runs even if an earlier one failed
    // (checkTail appends a record, so it runs after checkListOffsets), and the
    // group scenarios, on topics of their own, run whatever happened before.
    if (await run(produceAndConsume)) {
      for (const step of [() => checkListOffsets(admin, expected), () => checkTail(kafka, cluster, expected), () => checkAdmin(admin)]) {
        await run(step)
      }
    }
    if (cluster) await cluster.disconnect()
    await run(() => groups.checkMembership(client, WORK_DIR))
    console.log(`${CLIENT}: static membership and cooperative rebalancing: not run, kafkajs supports neither`)
    await run(() => groups.checkRestartBefore(client, WORK_DIR))
    if (failures === 0) console.log(`${CLIENT}: ${total} records ok`)
  }
  await client.close()
  await admin.disconnect()
  if (failures > 0) process.exit(1)
}

main().catch(e => {
  console.error(`${CLIENT}: FAIL: ${describe(e)}`)
  process.exit(1)
})
