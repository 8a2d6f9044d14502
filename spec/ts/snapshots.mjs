// Snapshots and sandboxes from images with the official TypeScript SDK,
// unchanged, against dtlocal and the specs' registry on loopback
// (spec/support/registry.lua): DTLUA_TEST_IMAGE names its test image.
// Prints one line per step ("ok <step>") and exits non-zero on the first
// failure, naming the step.
import assert from 'node:assert/strict'
import { client, step } from './common.mjs'

const daytona = client()
const image = process.env.DTLUA_TEST_IMAGE
const suffix = Math.random().toString(16).slice(2, 10)
const created = []

const osId = async (sb) => (await sb.process.executeCommand('grep ^ID= /etc/os-release')).result.trim()

try {
  assert.ok(image, 'DTLUA_TEST_IMAGE is not set')
  const name = `ts-snap-${suffix}`
  let snap
  await step('snapshot create from an image', async () => {
    const lines = []
    snap = await daytona.snapshot.create({ name, image, resources: { cpu: 2, memory: 2 } },
      { onLogs: (l) => lines.push(l), timeout: 120 })
    assert.equal(snap.state, 'active')
    assert.equal(snap.name, name)
    assert.equal(snap.imageName, image)
    assert.equal(snap.cpu, 2)
    assert.ok(lines.some((l) => l.includes(`Creating snapshot ${name}`)), lines.join('\n'))
  })
  await step('snapshot get and list', async () => {
    assert.equal((await daytona.snapshot.get(name)).id, snap.id)
    const page = await daytona.snapshot.list()
    assert.ok(page.items.some((s) => s.id === snap.id))
    assert.ok(page.items.some((s) => s.name === 'daytona-medium'))
    assert.equal(page.total, page.items.length)
    const one = await daytona.snapshot.list(1, 1)
    assert.equal(one.items.length, 1)
    assert.equal(one.total, page.total)
    assert.equal(one.totalPages, page.total)
  })
  await step('sandbox from the snapshot', async () => {
    const sb = await daytona.create({ snapshot: name })
    created.push(sb)
    assert.equal(sb.state, 'started')
    assert.equal(sb.snapshot, name)
    assert.equal(await osId(sb), 'ID=dtlua-test')
  })
  await step('an unknown snapshot is an error, not the host system', async () => {
    await assert.rejects(daytona.create({ snapshot: `no-such-${suffix}` }),
      (err) => /not found/.test(err.message))
  })
  await step('a snapshot in use is not deleted', async () => {
    await assert.rejects(daytona.snapshot.delete(snap), (err) => /in use/.test(err.message))
  })
  await step('sandbox from an image with its build log and resources', async () => {
    const lines = []
    const sb = await daytona.create({ image, resources: { cpu: 2, memory: 2, disk: 4 } },
      { onSnapshotCreateLogs: (l) => lines.push(l), timeout: 120 })
    created.push(sb)
    assert.equal(sb.state, 'started')
    assert.equal(sb.cpu, 2)
    assert.equal(sb.disk, 4)
    assert.equal(await osId(sb), 'ID=dtlua-test')
    assert.ok(lines.join('\n').includes(`Pulling ${image}`), lines.join('\n'))
  })
  await step('a sandbox snapshot (experimental) gives new sandboxes its files', async () => {
    const a = await daytona.create({})
    created.push(a)
    await a.process.executeCommand('echo prepared > /home/daytona/prepared.txt')
    await a._experimental_createSnapshot(`ts-prep-${suffix}`, 120)
    const b = await daytona.create({ snapshot: `ts-prep-${suffix}` })
    created.push(b)
    assert.equal((await b.process.executeCommand('cat /home/daytona/prepared.txt')).result.trim(), 'prepared')
    const f = await a._experimental_fork({ name: `ts-fork-${suffix}` })
    created.push(f)
    assert.equal((await f.process.executeCommand('cat /home/daytona/prepared.txt')).result.trim(), 'prepared')
  })
  await step('cleanup: sandboxes, then the snapshots', async () => {
    while (created.length) {
      const sb = created.pop()
      await sb.delete(60)
      // gone (404) before its snapshot can be deleted
      for (let i = 0; i < 300; i++) {
        try { await daytona.get(sb.id) } catch { break }
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    await daytona.snapshot.delete(snap)
    await daytona.snapshot.delete(await daytona.snapshot.get(`ts-prep-${suffix}`))
    await assert.rejects(daytona.snapshot.get(name))
  })
  console.log('snapshots: all steps passed')
} finally {
  for (const sb of created) await sb.delete().catch(() => {})
}
