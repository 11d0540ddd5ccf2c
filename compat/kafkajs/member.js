// One consumer group member on kafkajs's Consumer, run as its own process by the
// group scenarios (groups.js describes the JSON lines it prints and the "close"
// it reads).
//
// Usage: node member.js '{"bootstrap": ..., "topic": ..., "group": ..., "name": ...,
//                         "session_timeout_ms": ...}'
'use strict'

const readline = require('readline')
const { Kafka, logLevel } = require('kafkajs')

const conf = JSON.parse(process.argv[2])
const emit = event => process.stdout.write(JSON.stringify(event) + '\n')

// kafkajs logs to stdout by default; its log goes to stderr here (kept in a file per member).
const logCreator = () => ({ namespace, level, log }) => {
  const { message, ...extra } = log
  process.stderr.write(`${new Date().toISOString()} ${logLevel[level] || level} ${namespace}: ${message} ${JSON.stringify(extra)}\n`)
}
const kafka = new Kafka({ clientId: conf.name, brokers: [conf.bootstrap], logLevel: logLevel.INFO, logCreator })
const consumer = kafka.consumer({
  groupId: conf.group,
  sessionTimeout: conf.session_timeout_ms,
  rebalanceTimeout: 20000,
  heartbeatInterval: 500,
  // Heartbeats go out from the fetch loop: a short fetch wait keeps them on time.
  maxWaitTimeInMs: 100,
})

let owned = []
const { GROUP_JOIN, REBALANCING, COMMIT_OFFSETS, CRASH } = consumer.events
// kafkajs rebalances eagerly: a rebalance takes away everything, the join that
// follows hands out the new assignment.
consumer.on(REBALANCING, () => {
  const parts = owned
  owned = []
  emit({ ev: 'revoke', parts, owned })
})
consumer.on(GROUP_JOIN, ({ payload }) => {
  owned = (payload.memberAssignment[conf.topic] || []).slice().sort((a, b) => a - b)
  emit({ ev: 'assign', parts: owned, owned })
})
consumer.on(COMMIT_OFFSETS, ({ payload }) => {
  const offsets = {}
  for (const t of payload.topics) for (const p of t.partitions) offsets[p.partition] = Number(p.offset)
  emit({ ev: 'commit', offsets })
})
consumer.on(CRASH, ({ payload }) => emit({ ev: 'error', msg: `consumer crashed: ${payload.error && payload.error.message}` }))

let closing = false
async function close() {
  if (closing) return
  closing = true
  try {
    await consumer.disconnect() // stops fetching, then LeaveGroup
    emit({ ev: 'closed' })
    process.exit(0)
  } catch (e) {
    emit({ ev: 'error', msg: `close: ${e.message}` })
    process.exit(1)
  }
}
const commands = readline.createInterface({ input: process.stdin })
commands.on('line', line => line.trim() === 'close' && close())
commands.on('close', close)

async function main() {
  await consumer.connect()
  await consumer.subscribe({ topics: [conf.topic], fromBeginning: true })
  // autoCommit: the offsets of each batch are committed once eachBatch returns,
  // before the next fetch; and before rejoining when a rebalance starts.
  await consumer.run({
    autoCommit: true,
    eachBatch: async ({ batch }) => {
      emit({ ev: 'records', recs: batch.messages.map(m => [batch.partition, Number(m.offset), m.key.toString()]) })
    },
  })
}

main().catch(e => {
  emit({ ev: 'error', msg: `${e.name}: ${e.message}` })
  process.exit(1)
})
