// Daytona's `declarative-image` example flow with the official TypeScript
// SDK, unchanged, against dtlocal: Image.debianSlim() cannot be pulled
// offline, so the image is Image.base(<the specs' registry image>)
// (DTLUA_TEST_IMAGE) with runCommands, env, workdir and addLocalFile /
// addLocalDir. The SDK uploads the context itself (push-access, then the
// AWS SDK's ListObjectsV2 and PutObject/multipart against dtlocal's S3
// endpoint), streams the build log, and a second create of the same
// definition is a cache hit. Prints one line per step ("ok <step>") and
// exits non-zero on the first failure, naming the step.
import { Image } from '@daytonaio/sdk'
import assert from 'node:assert/strict'
import { client, step } from './common.mjs'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const daytona = client()
const base = process.env.DTLUA_TEST_IMAGE
const created = []

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dtlua-ts-decl-'))
try {
  assert.ok(base, 'DTLUA_TEST_IMAGE is not set')
  fs.writeFileSync(path.join(dir, 'settings.json'), '{"mode": "local"}\n')
  fs.mkdirSync(path.join(dir, 'src', 'pkg'), { recursive: true })
  fs.writeFileSync(path.join(dir, 'src', 'main.txt'), 'main\n')
  fs.writeFileSync(path.join(dir, 'src', 'pkg', 'data.txt'), 'data\n')
  // over the SDK's 5 MiB part size: a multipart upload
  fs.writeFileSync(path.join(dir, 'src', 'big.bin'), Buffer.alloc(6 * 1024 * 1024, 7))
  const image = () => Image.base(base)
    .runCommands('mkdir -p /home/daytona/app', 'echo declarative-run-output')
    .env({ APP_ENV: 'declarative' })
    .workdir('/home/daytona/app')
    .addLocalFile(path.join(dir, 'settings.json'), '/home/daytona/app/settings.json')
    .addLocalDir(path.join(dir, 'src'), '/home/daytona/app/src')
  let first
  await step('create from a declarative image: context uploaded, built, build log streamed', async () => {
    const lines = []
    const sb = await daytona.create({ image: image() }, { onSnapshotCreateLogs: (l) => lines.push(l), timeout: 300 })
    created.push(sb)
    first = sb
    assert.equal(sb.state, 'started')
    const log = lines.join('\n')
    assert.ok(log.includes('declarative-run-output'), log)
    const r = await sb.process.executeCommand(
      'cat settings.json src/main.txt src/pkg/data.txt; echo $APP_ENV; pwd; wc -c < src/big.bin; grep ^ID= /etc/os-release')
    assert.equal(r.exitCode, 0, r.result)
    assert.equal(r.result.trim(), ['{"mode": "local"}', 'main', 'data', 'declarative', '/home/daytona/app',
      String(6 * 1024 * 1024), 'ID=dtlua-test'].join('\n'))
  })
  await step('the same definition again: no step runs', async () => {
    const lines = []
    const sb = await daytona.create({ image: image() }, { onSnapshotCreateLogs: (l) => lines.push(l), timeout: 300 })
    created.push(sb)
    assert.equal(sb.state, 'started')
    assert.ok(!lines.some((l) => l.trim() === 'declarative-run-output'), lines.join('\n'))
    const r = await sb.process.executeCommand('cat /home/daytona/app/src/main.txt')
    assert.equal(r.result.trim(), 'main')
  })
  await step('a failing step fails the create; the sandbox is build_failed with the step\'s output', async () => {
    let id
    await assert.rejects(daytona.create({ image: Image.base(base).runCommands('echo ts-failing-step; exit 5') },
      { timeout: 300 }), (err) => {
      // the SDK words it from the state event (which carries no reason)
      id = (err.message.match(/Sandbox (\S+) failed/) || [])[1]
      return /build_failed/.test(err.message)
    })
    const sb = await daytona.get(id)
    created.push(sb)
    assert.equal(sb.state, 'build_failed')
    assert.match(sb.errorReason, /exit code 5/)
    assert.match(sb.errorReason, /ts-failing-step/)
  })
  console.log('declarative_image: all steps passed')
} finally {
  for (const sb of created) await sb.delete().catch(() => {})
  fs.rmSync(dir, { recursive: true, force: true })
}
