// An idempotent kafkajs producer: sends COUNT records (values "<prefix>-<i>", record i to
// partition i % PARTITIONS) in order, 20 per request, and prints each acknowledged
// record as a JSON line {"value", "partition", "offset"}. Progress goes to stderr as
// "acked N" lines, so the caller can restart the broker in the middle.
'use strict'

const path = require('path')
const { Kafka, logLevel } = require(path.join(__dirname, '..', 'kafkajs', 'node_modules', 'kafkajs'))

const [BOOTSTRAP, TOPIC, COUNT, PREFIX, PARTITIONS] = process.argv.slice(2)

async function main() {
  const kafka = new Kafka({
    clientId: 'compat-idempotence',
    brokers: [BOOTSTRAP],
    logLevel: logLevel.NOTHING,
    retry: { retries: 100, initialRetryTime: 100, maxRetryTime: 1000 },
  })
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const total = Number(COUNT)
  for (let i = 0; i < total; i += 20) {
    const messages = []
    for (let j = i; j < Math.min(i + 20, total); j++) {
      messages.push({ partition: j % Number(PARTITIONS), key: `k${j}`, value: `${PREFIX}-${j}` })
    }
    const acks = await producer.send({ topic: TOPIC, acks: -1, messages })
    // Each partition's records of one request are one batch: consecutive offsets from
    // the base offset kafkajs reports, in send order.
    const next = new Map(acks.map(a => [a.partition, Number(a.baseOffset)]))
    for (const m of messages) {
      const offset = next.get(m.partition)
      next.set(m.partition, offset + 1)
      process.stdout.write(JSON.stringify({ value: m.value, partition: m.partition, offset }) + '\n')
    }
    process.stderr.write(`acked ${Math.min(i + 20, total)}\n`)
    await new Promise(resolve => setTimeout(resolve, 20)) // paced: in flight when the node dies
  }
  await producer.disconnect()
}

main().catch(e => {
  process.stderr.write(`kafkajs producer failed: ${e.stack || e}\n`)
  process.exit(1)
})
