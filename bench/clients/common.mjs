// Shared by the TypeScript-SDK bench clients. The official SDK is the one
// pinned in spec/ts/package.json (installed by `make deps`), imported by
// path so that no global install is needed.
import { Daytona } from '../../spec/ts/node_modules/@daytonaio/sdk/esm/index.js'
import { readFileSync } from 'node:fs'

export function connect() {
  return new Daytona({ apiUrl: process.env.DAYTONA_API_URL, apiKey: process.env.DAYTONA_API_KEY })
}

export const now = () => performance.now() / 1000

// One result line: `bench key v1 v2 ...`.
export function out(key, ...values) {
  console.log(['bench', key, ...values.map((v) => (typeof v === 'number' ? v.toFixed(6) : String(v)))].join(' '))
}

export function intArg(i, name) {
  const v = Number(process.argv[2 + i - 1])
  if (!Number.isInteger(v) || v < 0) throw new Error(`argument #${i} (${name}): integer expected`)
  return v
}

export function strArg(i, name) {
  const v = process.argv[2 + i - 1]
  if (!v) throw new Error(`argument #${i} (${name}) missing`)
  return v
}

export async function execOk(sb, cmd) {
  const r = await sb.process.executeCommand(cmd)
  if (r.exitCode !== 0) throw new Error(`exec ${cmd}: exit code ${r.exitCode}: ${r.result}`)
  return r
}

export function lines(path) {
  return readFileSync(path, 'utf8').split('\n').filter((l) => l !== '')
}

// Clients that measure a part of a script exit as soon as their figures are
// out, so nothing after the work (the SDK's Socket.IO event connection
// closing, pending timers) is in the process's time or memory.
export function done() {
  process.exit(0)
}
