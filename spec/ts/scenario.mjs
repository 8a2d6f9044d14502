// The official TypeScript SDK (@daytonaio/sdk, pinned in package.json) run
// unchanged against dtlocal: the proof that dtlocal speaks Daytona's wire
// protocol. Reads DAYTONA_API_URL and DAYTONA_API_KEY like any user script.
// Prints one line per step ("ok <step>") and exits non-zero on the first
// failure, naming the step.
import { ChartType } from '@daytonaio/sdk'
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import assert from 'node:assert/strict'
import { client, step } from './common.mjs'

const daytona = client()
const local = mkdtempSync(join(tmpdir(), 'dtlua-ts-'))
const created = []

let sb
try {
  await step('create', async () => {
    sb = await daytona.create({ language: 'python', labels: { suite: 'ts-sdk' }, envVars: { GREETING: 'hi' } })
    created.push(sb)
    assert.equal(sb.state, 'started')
    assert.ok(sb.id)
  })

  await step('get and list', async () => {
    const again = await daytona.get(sb.id)
    assert.equal(again.id, sb.id)
    let found = false
    for await (const s of daytona.list({ labels: { suite: 'ts-sdk' } })) if (s.id === sb.id) found = true
    assert.ok(found, 'list with label filter finds the sandbox')
  })

  await step('labels', async () => {
    const labels = await sb.setLabels({ suite: 'ts-sdk', extra: 'yes' })
    assert.equal(labels.extra, 'yes')
  })

  await step('executeCommand', async () => {
    const r = await sb.process.executeCommand('echo $GREETING from $(whoami)')
    assert.equal(r.exitCode, 0)
    assert.equal(r.result.trim(), 'hi from daytona')
    const fail = await sb.process.executeCommand('exit 7')
    assert.equal(fail.exitCode, 7)
    const cwd = await sb.process.executeCommand('pwd', '/tmp')
    assert.equal(cwd.result.trim(), '/tmp')
  })

  await step('work dir and home', async () => {
    assert.equal(await sb.getUserHomeDir(), '/home/daytona')
    assert.ok(await sb.getWorkDir())
  })

  await step('codeRun', async () => {
    const r = await sb.process.codeRun('print(6 * 7)')
    assert.equal(r.exitCode, 0)
    assert.equal(r.result.trim(), '42')
  })

  // matplotlib figures shown by the code come back typed, as the SDK reads
  // them (ChartType, snake_case fields), with the PNG as base64
  await step('codeRun charts', async () => {
    const code = [
      'import matplotlib.pyplot as plt',
      'plt.plot([0, 1, 2], [0, 1, 4], label="squares"); plt.title("Line"); plt.xlabel("x"); plt.show()',
      'plt.bar(["a", "b", "c"], [3, 1.5, 2]); plt.title("Bar"); plt.show()',
      'plt.pie([1, 1, 2], labels=["x", "y", "z"]); plt.title("Pie"); plt.show()',
      'plt.boxplot([[1, 2, 3, 4, 5, 40]], labels=["A"]); plt.title("Box"); plt.show()',
      'print("done")',
    ].join('\n')
    const r = await sb.process.codeRun(code)
    assert.equal(r.exitCode, 0, r.result)
    assert.equal(r.result, 'done\n')
    const charts = r.artifacts.charts
    assert.deepEqual(charts.map((c) => [c.type, c.title, c.elements.length]),
      [[ChartType.LINE, 'Line', 1], [ChartType.BAR, 'Bar', 3], [ChartType.PIE, 'Pie', 3],
        [ChartType.BOX_AND_WHISKER, 'Box', 1]])
    assert.equal(charts[0].x_label, 'x')
    assert.deepEqual(charts[0].elements[0].points, [[0, 0], [1, 1], [2, 4]])
    assert.deepEqual(charts[1].elements.map((e) => [e.label, e.value]), [['a', '3'], ['b', '1.5'], ['c', '2']])
    assert.equal(Math.round(charts[2].elements[2].angle), 180)
    assert.deepEqual(charts[3].elements[0].outliers, [40])
    for (const c of charts) {
      const png = Buffer.from(c.png, 'base64')
      assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
    }
  })

  await step('files', async () => {
    await sb.fs.createFolder('/home/daytona/dir', '755')
    await sb.fs.uploadFile(Buffer.from('hello world\n'), '/home/daytona/dir/a.txt')
    const src = join(local, 'b.bin')
    writeFileSync(src, Buffer.alloc(3 * 1024 * 1024, 7))
    await sb.fs.uploadFile(src, '/home/daytona/dir/b.bin')
    const a = await sb.fs.downloadFile('/home/daytona/dir/a.txt')
    assert.equal(a.toString(), 'hello world\n')
    const dst = join(local, 'b.out')
    await sb.fs.downloadFile('/home/daytona/dir/b.bin', dst)
    assert.ok(readFileSync(dst).equals(readFileSync(src)))
    const list = await sb.fs.listFiles('/home/daytona/dir')
    assert.deepEqual(list.map((f) => f.name).sort(), ['a.txt', 'b.bin'])
    const info = await sb.fs.getFileDetails('/home/daytona/dir/a.txt')
    assert.equal(info.size, 12)
    const found = await sb.fs.findFiles('/home/daytona/dir', 'world')
    assert.equal(found.length, 1)
    await sb.fs.moveFiles('/home/daytona/dir/a.txt', '/home/daytona/dir/c.txt')
    const search = await sb.fs.searchFiles('/home/daytona/dir', '*.txt')
    assert.deepEqual(search.files.map((f) => f.split('/').pop()), ['c.txt'])
    await sb.fs.deleteFile('/home/daytona/dir', true)
    await assert.rejects(sb.fs.downloadFile('/home/daytona/dir/c.txt'))
  })

  await step('sessions', async () => {
    await sb.process.createSession('s1')
    await sb.process.executeSessionCommand('s1', { command: 'cd /tmp && export X=42' })
    const r = await sb.process.executeSessionCommand('s1', { command: 'echo $X $(pwd)' })
    assert.equal(r.exitCode, 0)
    assert.equal((r.stdout ?? r.output).trim(), '42 /tmp')
    const a = await sb.process.executeSessionCommand('s1', { command: 'echo out; echo err >&2; sleep 0.2', runAsync: true })
    let out = '', err = ''
    await sb.process.getSessionCommandLogs('s1', a.cmdId, (c) => { out += c }, (c) => { err += c })
    assert.equal(out.trim(), 'out')
    assert.equal(err.trim(), 'err')
    const logs = await sb.process.getSessionCommandLogs('s1', a.cmdId)
    assert.equal(logs.stdout.trim(), 'out')
    const cmd = await sb.process.getSessionCommand('s1', a.cmdId)
    assert.equal(cmd.exitCode, 0)
    const sessions = await sb.process.listSessions()
    assert.ok(sessions.some((s) => s.sessionId === 's1'))
    await sb.process.deleteSession('s1')
  })

  await step('pty', async () => {
    let seen = ''
    const pty = await sb.process.createPty({ id: 'p1', cols: 80, rows: 24, onData: (d) => { seen += Buffer.from(d).toString() } })
    await pty.waitForConnection()
    await pty.sendInput('echo pty-$((40+2))\n')
    for (let i = 0; i < 200 && !seen.includes('pty-42'); i++) await new Promise((r) => setTimeout(r, 20))
    assert.ok(seen.includes('pty-42'), 'pty echoed the command output')
    await pty.resize(100, 30)
    const sessions = await sb.process.listPtySessions()
    assert.ok(sessions.some((s) => s.id === 'p1'))
    await pty.sendInput('exit 3\n')
    const res = await pty.wait()
    assert.equal(res.exitCode, 3)
  })

  await step('git', async () => {
    await sb.process.executeCommand('git init -q --bare /home/daytona/remote.git')
    await sb.git.clone('/home/daytona/remote.git', '/home/daytona/repo')
    await sb.fs.uploadFile(Buffer.from('x\n'), '/home/daytona/repo/x.txt')
    await sb.git.add('/home/daytona/repo', ['x.txt'])
    const c = await sb.git.commit('/home/daytona/repo', 'first', 'Dev', 'dev@example.com')
    assert.ok(c.sha)
    const st = await sb.git.status('/home/daytona/repo')
    assert.ok(st.currentBranch)
  })

  await step('lsp', async () => {
    const ts = 'export class Circle {\n  radiusValue = 1\n}\nconst c = new Circle()\nc.\n'
    await sb.fs.uploadFile(Buffer.from(ts), '/home/daytona/web/shapes.ts')
    const lsp = await sb.createLspServer('typescript', '/home/daytona/web')
    await lsp.start()
    await lsp.didOpen('/home/daytona/web/shapes.ts')
    const syms = await lsp.documentSymbols('/home/daytona/web/shapes.ts')
    assert.ok(syms.some((s) => s.name === 'Circle' && s.kind === 5), JSON.stringify(syms))
    const list = await lsp.completions('/home/daytona/web/shapes.ts', { line: 4, character: 2 })
    assert.ok(list.items.some((i) => i.label === 'radiusValue'), JSON.stringify(list))
    const found = await lsp.sandboxSymbols('Circ')
    assert.ok(found.some((s) => s.name === 'Circle'), JSON.stringify(found))
    await assert.rejects(lsp.completions('/home/daytona/web/shapes.ts', { line: 40, character: 0 }),
      (e) => /past the end/.test(String(e.message)))
    await lsp.didClose('/home/daytona/web/shapes.ts')
    await lsp.stop()
    await assert.rejects(lsp.documentSymbols('/home/daytona/web/shapes.ts'),
      (e) => /start it first/.test(String(e.message)))
  })

  await step('network settings and a linked sandbox', async () => {
    // dtlocal as root: each sandbox its own network, limits enforced outside
    // it (what gets through is spec/dtlocal/network_spec.lua's business)
    const net = await daytona.create({ networkAllowList: '10.0.0.0/8', labels: { suite: 'ts-sdk' } })
    created.push(net)
    assert.equal(net.networkAllowList, '10.0.0.0/8')
    await net.updateNetworkSettings({ networkBlockAll: true })
    await net.refreshData()
    assert.equal(net.networkBlockAll, true)
    await net.updateNetworkSettings({ networkAllowList: '192.168.0.0/16' })
    await net.refreshData()
    assert.equal(net.networkAllowList, '192.168.0.0/16')
    assert.equal(net.networkBlockAll, false)
    await assert.rejects(net.updateNetworkSettings({ networkAllowList: '10.0.0.0/33' }), /networkAllowList/)
    // a domain allow list (enforced by dtlocal's DNS filter as root)
    const dom = await daytona.create({ domainAllowList: 'example.com,*.daytona.io', ephemeral: true, labels: { suite: 'ts-sdk' } })
    created.push(dom)
    assert.equal(dom.domainAllowList, 'example.com,*.daytona.io')
    await dom.updateNetworkSettings({ domainAllowList: 'daytona.io' })
    await dom.refreshData()
    assert.equal(dom.domainAllowList, 'daytona.io')
    await assert.rejects(dom.updateNetworkSettings({ domainAllowList: 'not a domain' }), /domainAllowList/)
    await assert.rejects(daytona.create({ domainAllowList: '*example.com' }), /domainAllowList/)
    await dom.delete()
    // a child linked to it finds it by id over their link
    const child = await daytona.create({ linkedSandbox: net.id, ephemeral: true, labels: { suite: 'ts-sdk' } })
    created.push(child)
    assert.equal(child.linkedSandboxId, net.id)
    const r = await child.process.executeCommand(`getent hosts ${net.id}`)
    assert.equal(r.exitCode, 0, r.result)
    assert.match(r.result, /^10\.200\./)
    await assert.rejects(daytona.create({ linkedSandbox: child.id, ephemeral: true }), /chained links are not allowed/)
    await net.delete()
    let gone = false
    for (let i = 0; i < 200 && !gone; i++) {
      try { await daytona.get(child.id); await new Promise((res) => setTimeout(res, 50)) } catch { gone = true }
    }
    assert.ok(gone, 'the linked child went with its parent')
  })

  await step('stop and start keep files', async () => {
    await sb.process.executeCommand('echo kept > /home/daytona/keep.txt')
    await sb.stop()
    await sb.refreshData()
    assert.equal(sb.state, 'stopped')
    await sb.start()
    const r = await sb.process.executeCommand('cat /home/daytona/keep.txt')
    assert.equal(r.result.trim(), 'kept')
  })

  await step('errors', async () => {
    await assert.rejects(daytona.get('no-such-sandbox'), (e) => /not found/i.test(String(e.message)))
  })

  await step('delete', async () => {
    await sb.delete()
    created.pop()
    // deleting is asynchronous: the sandbox reads as destroying, then is gone
    let gone = false
    for (let i = 0; i < 100 && !gone; i++) {
      try {
        const s = await daytona.get(sb.id)
        assert.ok(['destroying', 'destroyed'].includes(s.state), `state after delete: ${s.state}`)
        await new Promise((r) => setTimeout(r, 50))
      } catch (e) {
        assert.match(String(e.message), /not found/i)
        gone = true
      }
    }
    assert.ok(gone, 'the deleted sandbox is gone')
  })
} catch (err) {
  process.exitCode = 1
} finally {
  for (const s of created) { try { await s.delete() } catch { /* cleaned up by the spec */ } }
  rmSync(local, { recursive: true, force: true })
}
if (process.exitCode) {
  // after a failure, do not wait for whatever the SDK may still hold open
  process.exit(process.exitCode)
}
// No process.exit on success: node ends on its own once nothing is left to
// do. The SDK's Socket.IO event channel (dtlocal's /api/socket.io/) stays
// connected for the Sandbox objects still subscribed (daytona.get above),
// unref'd, so it must not keep node alive; ts_sdk_spec.lua times the exit
// after this line. (Against a server without events the SDK retries the
// channel for minutes, and node with it.)
console.log('scenario: all steps passed')
