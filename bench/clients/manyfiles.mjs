// Many files: upload a tree of small files with one uploadFiles call, then
// download it with one downloadFiles call; prints the seconds of each.
//   node manyfiles.mjs SANDBOX_ID MANIFEST LOCAL_SRC_DIR REMOTE_DIR LOCAL_DST_DIR
import { connect, now, out, strArg, lines, done } from './common.mjs'
const [id, manifest, src, remote, dst] = [strArg(1, 'sandbox id'), strArg(2, 'manifest'),
  strArg(3, 'local source dir'), strArg(4, 'remote dir'), strArg(5, 'local destination dir')]

const rel = lines(manifest)
const sb = await connect().get(id)
const t0 = now()
await sb.fs.uploadFiles(rel.map((p) => ({ source: `${src}/${p}`, destination: `${remote}/${p}` })))
const t1 = now()
const res = await sb.fs.downloadFiles(rel.map((p) => ({ source: `${remote}/${p}`, destination: `${dst}/${p}` })))
const t2 = now()
for (const r of res) if (r.error) throw new Error(`download ${r.source}: ${r.error}`)
out('up_s', t1 - t0)
out('down_s', t2 - t1)
done()
