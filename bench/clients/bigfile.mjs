// Big file: upload a local file to the sandbox, then download it back to
// another local file; prints the seconds of each call.
//   node bigfile.mjs SANDBOX_ID LOCAL_SRC REMOTE_PATH LOCAL_DST
import { connect, now, out, strArg, done } from './common.mjs'
const [id, src, remote, dst] = [strArg(1, 'sandbox id'), strArg(2, 'local source'), strArg(3, 'remote path'), strArg(4, 'local destination')]

const sb = await connect().get(id)
const t0 = now()
await sb.fs.uploadFile(src, remote)
const t1 = now()
await sb.fs.downloadFile(remote, dst)
const t2 = now()
out('up_s', t1 - t0)
out('down_s', t2 - t1)
done()
