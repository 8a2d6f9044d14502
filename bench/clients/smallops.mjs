// Small-op throughput: N executeCommand('true') with CONC in flight (CONC
// async workers taking the next operation from a shared counter); prints
// the wall time.
//   node smallops.mjs SANDBOX_ID N CONC
import { connect, now, out, strArg, intArg, execOk, done } from './common.mjs'
const [id, n, conc] = [strArg(1, 'sandbox id'), intArg(2, 'n'), intArg(3, 'conc')]

const sb = await connect().get(id)
let next = 0
const t0 = now()
await Promise.all(Array.from({ length: conc }, async () => {
  while (next < n) {
    next++
    await execOk(sb, 'true')
  }
}))
out('wall_s', now() - t0)
done()
