// Round trip: WARMUP then N sequential executeCommand('true') in one
// sandbox; prints the N latencies in milliseconds.
//   node roundtrip.mjs SANDBOX_ID N WARMUP
import { connect, now, out, strArg, intArg, execOk, done } from './common.mjs'
const [id, n, warmup] = [strArg(1, 'sandbox id'), intArg(2, 'n'), intArg(3, 'warmup')]

const sb = await connect().get(id)
for (let i = 0; i < warmup; i++) await execOk(sb, 'true')
const ms = []
for (let i = 0; i < n; i++) {
  const t = now()
  await execOk(sb, 'true')
  ms.push((now() - t) * 1000)
}
out('ms', ...ms)
done()
