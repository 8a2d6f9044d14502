// The official TypeScript SDK's event channel (Socket.IO at {api}/socket.io/)
// against dtlocal, run by spec/dtlocal/ts_sdk_spec.lua. Reads DAYTONA_API_URL
// and DAYTONA_API_KEY like scenario.mjs.
//
//   node spec/ts/events.mjs [rounds]         (default 3)
//   EVENTS_CHECK=0 node spec/ts/events.mjs   only measure (a server without events)
//
// Each round creates a sandbox, stops it, starts it and deletes it waiting
// until it is gone (delete(60, true)), timing each call. With events the
// SDK's waits end on `sandbox.state.updated`; without them they end at its
// 1 s safety poll. It also listens through the SDK's own dispatcher (the
// Socket.IO client the waits use) and checks the states it was told about.
// Prints `ok <step>`, `timing <what> <seconds>` lines, `medians ...`, and as
// its last line `events: all steps passed <Date.now()>`; it then ends
// without process.exit, so the caller can time how long node takes to exit
// on its own (no reconnect loop may keep it alive).
import assert from 'node:assert/strict'
import { client } from './common.mjs'

const rounds = Number(process.argv[2] ?? 3)
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds: a positive integer expected, got ${process.argv[2]}`)
const check = process.env.EVENTS_CHECK !== '0'

const daytona = client()
const now = () => performance.now() / 1000
const timings = { create: [], stop: [], start: [], 'delete-wait': [] }
const created = []

async function timed(what, fn) {
  const t0 = now()
  const r = await fn()
  const dt = now() - t0
  timings[what].push(dt)
  console.log(`timing ${what} ${dt.toFixed(4)}`)
  return r
}

// The states the SDK's Socket.IO client delivered for one sandbox, through
// the same dispatcher Sandbox.waitForState relies on.
function listen(id) {
  const seen = []
  const dispatcher = daytona.eventDispatcher
  assert.ok(dispatcher, 'the SDK made no event dispatcher (DAYTONA_USE_DEPRECATED_POLLING set?)')
  const off = dispatcher.subscribe(id, (name, data) => {
    if (name === 'sandbox.state.updated') {
      assert.equal(data.sandbox.id, id)
      assert.equal(data.sandbox.state, data.newState)
      seen.push(`${data.oldState}>${data.newState}`)
    }
  }, ['sandbox.state.updated'])
  return { seen, off }
}

async function eventually(pred, what) {
  for (let i = 0; i < 200; i++) {
    if (pred()) return
    await new Promise((r) => setTimeout(r, 10))
  }
  assert.fail(`not seen within 2 s: ${what}`)
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

try {
  if (check) {
    await eventually(() => daytona.eventDispatcher?.isConnected, 'the SDK connected its Socket.IO channel')
    console.log('ok connected')
  }
  for (let i = 0; i < rounds; i++) {
    const sb = await timed('create', () => daytona.create())
    created.push(sb)
    assert.equal(sb.state, 'started')
    const ev = listen(sb.id)
    await timed('stop', () => sb.stop())
    assert.equal(sb.state, 'stopped')
    await timed('start', () => sb.start())
    assert.equal(sb.state, 'started')
    await timed('delete-wait', () => sb.delete(60, true))
    assert.equal(sb.state, 'destroyed')
    created.pop()
    if (check) {
      await eventually(() => ev.seen.includes('destroying>destroyed'), 'destroying>destroyed')
      assert.deepEqual(ev.seen, ['started>stopping', 'stopping>stopped', 'stopped>starting',
        'starting>started', 'started>destroying', 'destroying>destroyed'])
      console.log(`ok round ${i + 1}: events ${ev.seen.join(' ')}`)
    }
    ev.off()
  }
  const m = Object.entries(timings).map(([k, v]) => `${k}=${median(v).toFixed(4)}`)
  console.log(`medians ${m.join(' ')}`)
  if (check) {
    // without events the delete wait ends at the SDK's 1 s safety poll
    assert.ok(median(timings['delete-wait']) < 0.9,
      `delete(60, true) took ${median(timings['delete-wait'])} s (median): the wait did not end on an event`)
    console.log('ok waits end on events')
  }
  console.log(`events: all steps passed ${Date.now()}`)
} catch (err) {
  console.log(`FAIL: ${err && err.stack ? err.stack : err}`)
  for (const s of created) { try { await s.delete() } catch { /* the spec's server cleans up */ } }
  process.exit(1)
}
