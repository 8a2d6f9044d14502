// The official TypeScript SDK's computerUse against dtlocal's desktop (run
// by spec/dtlocal/ts_sdk_spec.lua): start, status, mouse move and position,
// keyboard typing, a screenshot of the display's size, display info, stop.
// Prints "ok <step>" per step and exits non-zero on the first failure.
import assert from 'node:assert/strict'
import { client, step } from './common.mjs'

const daytona = client()

// Poll fn until it returns a truthy value (the desktop's processes take a
// moment to come up; a fixed sleep would be a guess).
async function until(what, fn, seconds = 120) {
  const deadline = Date.now() + seconds * 1000
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`${what}: not within ${seconds} s`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

let sb
try {
  await step('create a sandbox', async () => {
    sb = await daytona.create({ labels: { suite: 'ts-computer-use' } })
    assert.equal(sb.state, 'started')
  })

  const cu = () => sb.computerUse
  let display

  await step('start the desktop', async () => {
    const r = await cu().start()
    assert.equal(typeof r.message, 'string')
    for (const name of ['xvfb', 'xfce4', 'x11vnc', 'novnc']) assert.ok(r.status[name], `status of ${name}`)
  })

  await step('every process runs (getProcessStatus) and getStatus says so', async () => {
    for (const name of ['xvfb', 'xfce4', 'x11vnc', 'novnc']) {
      await until(name, async () => (await cu().getProcessStatus(name)).running === true)
    }
    const st = await cu().getStatus()
    assert.equal(st.status, 'active')
  })

  await step('display info', async () => {
    const info = await cu().display.getInfo()
    display = info.displays[0]
    assert.ok(display.width > 0 && display.height > 0, JSON.stringify(info))
  })

  await step('mouse move and position', async () => {
    const moved = await cu().mouse.move(123, 234)
    assert.deepEqual([moved.x, moved.y], [123, 234])
    const pos = await cu().mouse.getPosition()
    assert.deepEqual([pos.x, pos.y], [123, 234])
  })

  await step('keyboard type into a terminal: its window takes the typed title', async () => {
    await sb.process.createSession('desktop')
    await sb.process.executeSessionCommand('desktop', {
      command: "DISPLAY=:0 xterm -geometry 60x10+40+40 -title 'ts terminal' -e sh", runAsync: true,
    })
    const win = await until('the terminal window', async () =>
      (await cu().display.getWindows()).windows.find((w) => w.title === 'ts terminal'), 30)
    await cu().mouse.click(win.x + Math.floor(win.width / 2), win.y + Math.floor(win.height / 2))
    await cu().keyboard.type("printf '\\033]0;typed by ts\\007'")
    await cu().keyboard.press('enter')
    await until('the renamed window', async () =>
      (await cu().display.getWindows()).windows.find((w) => w.title === 'typed by ts'), 30)
  })

  await step('screenshot: a PNG of the display size', async () => {
    const shot = await cu().screenshot.takeFullScreen()
    const png = Buffer.from(shot.screenshot, 'base64')
    assert.equal(png.subarray(1, 4).toString(), 'PNG')
    assert.equal(png.readUInt32BE(16), display.width)
    assert.equal(png.readUInt32BE(20), display.height)
    const small = await cu().screenshot.takeCompressed({ format: 'jpeg', quality: 60, scale: 0.5 })
    const jpg = Buffer.from(small.screenshot, 'base64')
    assert.deepEqual([jpg[0], jpg[1]], [0xff, 0xd8])
  })

  await step('stop the desktop', async () => {
    const r = await cu().stop()
    assert.equal(typeof r.message, 'string')
    await until('inactive', async () => (await cu().getStatus()).status === 'inactive', 30)
  })
} catch (err) {
  process.exitCode = 1
} finally {
  if (sb) { try { await sb.delete() } catch { /* cleaned up by the spec */ } }
}
if (process.exitCode) process.exit(process.exitCode)
console.log('computer_use: all steps passed')
