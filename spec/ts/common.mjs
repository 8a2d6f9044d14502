// What the TypeScript SDK scripts of spec/ts share: the SDK's client made
// from DAYTONA_API_URL and DAYTONA_API_KEY as any user script makes it, and
// their steps, each printing "ok <step>" or "FAIL <step>: <stack>" (the
// line the specs in spec/dtlocal read) and rethrowing the failure.
import { Daytona } from '@daytonaio/sdk'

export function client() {
  return new Daytona({
    apiUrl: process.env.DAYTONA_API_URL,
    apiKey: process.env.DAYTONA_API_KEY,
  })
}

export async function step(name, fn) {
  try {
    await fn()
    console.log(`ok ${name}`)
  } catch (err) {
    console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`)
    throw err
  }
}
