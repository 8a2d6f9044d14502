// Fan-out: N sandboxes created, one command run in each, deleted (waiting
// until each is gone), all concurrently; prints the wall time.
//   node fanout.mjs N
import { connect, now, out, intArg, execOk, done } from './common.mjs'
const n = intArg(1, 'n')

const daytona = connect()
const t0 = now()
await Promise.all(Array.from({ length: n }, async (_, k) => {
  const i = k + 1
  const sb = await daytona.create()
  try {
    const r = await execOk(sb, `echo ${i}`)
    if (r.result !== `${i}\n`) throw new Error(`sandbox ${i}: unexpected output ${r.result}`)
  } finally {
    await sb.delete(60, true)     // wait until it is gone, as dtlua's delete does
  }
}))
out('wall_s', now() - t0)
done()
