// Computer Use: WARMUP then N of each, one after the other, on a desktop
// already running in the sandbox: full-screen PNG screenshots, compressed
// JPEG screenshots at scale 0.5, mouse moves. Prints the latencies in
// milliseconds under `png`, `jpeg`, `move`, and the bytes of the last
// images under `png_bytes`, `jpeg_bytes`.
//   node computeruse.mjs SANDBOX_ID N WARMUP
import { connect, now, out, strArg, intArg, done } from './common.mjs'
const [id, n, warmup] = [strArg(1, 'sandbox id'), intArg(2, 'n'), intArg(3, 'warmup')]

const cu = (await connect().get(id)).computerUse

async function series(key, fn) {
  for (let i = 0; i < warmup; i++) await fn(0)
  const ms = []
  for (let i = 1; i <= n; i++) {
    const t = now()
    await fn(i)
    ms.push((now() - t) * 1000)
  }
  out(key, ...ms)
}

let png, jpeg
await series('png', async () => { png = await cu.screenshot.takeFullScreen() })
await series('jpeg', async () => { jpeg = await cu.screenshot.takeCompressed({ format: 'jpeg', scale: 0.5 }) })
await series('move', async (i) => { await cu.mouse.move(100 + (i % 500), 100 + (i % 300)) })
out('png_bytes', Buffer.from(png.screenshot, 'base64').length)
out('jpeg_bytes', Buffer.from(jpeg.screenshot, 'base64').length)
done()
