// Cold script: create a sandbox, run one command, delete it (waiting until
// it is gone, as dtlua's delete does), exit. Timed as a whole process.
//   node hello.mjs
import { Daytona } from '../../spec/ts/node_modules/@daytonaio/sdk/esm/index.js'

const daytona = new Daytona({ apiUrl: process.env.DAYTONA_API_URL, apiKey: process.env.DAYTONA_API_KEY })
const sb = await daytona.create()
try {
  const r = await sb.process.executeCommand('echo hello')
  if (r.exitCode !== 0 || r.result !== 'hello\n') throw new Error(`unexpected output: ${r.result}`)
} finally {
  await sb.delete(60, true)
}
