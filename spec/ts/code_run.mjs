// The official TypeScript SDK's codeRun in a TypeScript sandbox, and its
// code interpreter's callbacks, against dtlocal (run by
// spec/dtlocal/ts_sdk_spec.lua). TypeScript is the language many TS SDK
// users never change, so codeRun must run it as upstream does: the code
// transpiled without type checking, argv and env as JavaScript gets them.
// Prints "ok <step>" per step and exits non-zero on the first failure.
import assert from 'node:assert/strict'
import { client, step } from './common.mjs'

const daytona = client()

let sb
try {
  await step('create a TypeScript sandbox', async () => {
    sb = await daytona.create({ language: 'typescript', labels: { suite: 'ts-code-run' } })
    assert.equal(sb.state, 'started')
  })

  await step('codeRun: a typed program with argv and env', async () => {
    const code = [
      'interface Run { args: string[]; who?: string }',
      'const run: Run = { args: process.argv.slice(1), who: process.env.WHO };',
      'const twice = <T,>(x: T): [T, T] => [x, x];',
      'console.log(JSON.stringify(run.args), twice(run.who ?? "nobody").join("+"));',
    ].join('\n')
    const r = await sb.process.codeRun(code, { argv: ['a', 'b'], env: { WHO: 'ts' } })
    assert.equal(r.exitCode, 0, r.result)
    assert.equal(r.result, '["a","b"] ts+ts\n')
    assert.equal(r.artifacts.stdout, r.result)
  })

  await step('codeRun: type-only syntax runs unchecked', async () => {
    const r = await sb.process.codeRun('enum E { A = 2 }\nconst s: string = 1 as any;\nconsole.log(E.A, typeof s)')
    assert.equal(r.exitCode, 0, r.result)
    assert.equal(r.result, '2 number\n')
  })

  await step('codeRun: a throw is exit code 1 with the error', async () => {
    const r = await sb.process.codeRun('const n: number = 5;\nthrow new RangeError(`too big: ${n}`)')
    assert.equal(r.exitCode, 1)
    assert.match(r.result, /RangeError: too big: 5/)
  })

  await step('code interpreter: callbacks get { output } and the error its fields', async () => {
    const outs = []
    let seen
    const r = await sb.codeInterpreter.runCode("print('hi', flush=True)\n{}['k']", {
      onStdout: (m) => { outs.push(m) },
      onError: (e) => { seen = e },
    })
    assert.equal(outs.map((m) => m.output).join(''), 'hi\n')
    assert.equal(r.stdout, 'hi\n')
    assert.equal(seen.name, 'KeyError')
    assert.equal(seen.value, "'k'")
    assert.equal(typeof seen.traceback, 'string')
  })
} catch (err) {
  process.exitCode = 1
} finally {
  if (sb) { try { await sb.delete() } catch { /* cleaned up by the spec */ } }
}
if (process.exitCode) process.exit(process.exitCode)
console.log('code_run: all steps passed')
