// A raw WebSocket / HTTP client for specs, on Node's built-ins only (net,
// crypto), so that the server is tested by a client that is not ours.
//
//   node ws_client.js <port | unix-socket-path> <scenario>
//
// Prints one JSON object on stdout ({ ok: true, ... } or { ok: false, error })
// and exits 0 when the scenario's expectations held, 1 otherwise.
//
// Scenarios:
//   echo       /ws/echo offering "chat, echo": checks 101, Sec-WebSocket-Accept
//              and the "echo" subprotocol; echoes text, binary, a fragmented
//              text with a ping between fragments, a 1 MiB and a 20 MiB
//              binary; ping -> pong; close 1000 -> close 1000, then TCP end
//   noproto    /ws/echo offering nothing: no Sec-WebSocket-Protocol back
//   close      /ws/close?code=4001&reason=bye: the server closes with 4001 "bye"
//   drop       /ws/drop: after one message the connection ends without a close frame
//   unmasked   a client frame without a mask: the server closes with 1002
//   badopcode  a frame with reserved opcode 3: close 1002
//   badutf8    a text message that is not UTF-8: close 1007
//   toobig     a 2 MiB message (run the server with a smaller ws_max_message): 1009
//   garbage    half a handshake then bytes that are not HTTP: a 400 or a close
//   raw        stdin sent as-is over TCP; prints what came back (status line,
//              byte count, whether the server closed): for malformed HTTP
'use strict';
const net = require('net');
const crypto = require('crypto');

const target = process.argv[2];
const port = /^\d+$/.test(target) ? Number(target) : null;
// a TCP port on 127.0.0.1, or a unix-domain socket path
const dial = (cb) => (port !== null ? net.connect(port, '127.0.0.1', cb) : net.connect(target, cb));
const scenario = process.argv[3];
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function done(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}
function fail(msg) { done({ ok: false, error: String(msg) }); }
setTimeout(() => fail('scenario timed out'), 20000).unref();

// A masked client frame.
function frame(opcode, payload, { fin = true, mask = true } = {}) {
  payload = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const len = payload.length;
  let head;
  if (len < 126) { head = Buffer.alloc(2); head[1] = len; }
  else if (len < 65536) { head = Buffer.alloc(4); head[1] = 126; head.writeUInt16BE(len, 2); }
  else { head = Buffer.alloc(10); head[1] = 127; head.writeBigUInt64BE(BigInt(len), 2); }
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (!mask) return Buffer.concat([head, payload]);
  head[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([head, key, body]);
}
function closeFrame(code, reason = '') {
  const p = Buffer.alloc(2 + Buffer.byteLength(reason));
  p.writeUInt16BE(code, 0);
  p.write(reason, 2);
  return frame(8, p);
}

// Connect, handshake, then hand frames (server frames are never masked) to onFrame.
function connect(path, protocols, onOpen, onFrame, onEnd) {
  const key = crypto.randomBytes(16).toString('base64');
  const sock = dial();
  let buf = Buffer.alloc(0);
  let open = false;
  let headers = null;
  sock.on('error', (e) => onEnd({ error: e.code || String(e) }));
  sock.on('close', () => onEnd({ closed: true }));
  sock.on('connect', () => {
    let req = `GET ${path} HTTP/1.1\r\nHost: ${port !== null ? '127.0.0.1:' + port : 'localhost'}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n`;
    if (protocols) req += `Sec-WebSocket-Protocol: ${protocols}\r\n`;
    sock.write(req + '\r\n');
  });
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (!open) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = buf.slice(0, end).toString().split('\r\n');
      buf = buf.slice(end + 4);
      const status = lines[0];
      headers = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      if (!/^HTTP\/1\.1 101/.test(status)) return fail('handshake: ' + status);
      const want = crypto.createHash('sha1').update(key + GUID).digest('base64');
      if (headers['sec-websocket-accept'] !== want) return fail('bad Sec-WebSocket-Accept');
      open = true;
      onOpen(sock, headers);
    }
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0] & 0x80) !== 0, opcode = buf[0] & 0x0f;
      if (buf[1] & 0x80) return fail('server frame is masked');
      let len = buf[1] & 0x7f, off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (buf.length < off + len) return;
      const payload = buf.slice(off, off + len);
      buf = buf.slice(off + len);
      onFrame({ fin, opcode, payload }, sock);
    }
  });
  return sock;
}

// Collect the whole messages of a connection (reassembling fragments).
function messages(onMessage) {
  let parts = [], kind = null;
  return (f, sock) => {
    if (f.opcode === 8) {
      const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
      return onMessage({ close: code, reason: f.payload.slice(2).toString() }, sock);
    }
    if (f.opcode === 9 || f.opcode === 10) return onMessage({ control: f.opcode, data: f.payload }, sock);
    if (f.opcode !== 0) { kind = f.opcode; parts = []; }
    parts.push(f.payload);
    if (f.fin) onMessage({ kind: kind === 1 ? 'text' : 'binary', data: Buffer.concat(parts) }, sock);
  };
}

function expectClose(path, send, wantCode, extra = {}) {
  let got = null;
  connect(path, null, (sock) => send(sock), messages((m, sock) => {
    if (m.close !== undefined && got === null) {
      got = m;
      sock.write(closeFrame(m.close === 1005 ? 1000 : m.close));
    }
  }), (end) => {
    if (!got) return fail('no close frame: ' + JSON.stringify(end));
    if (got.close !== wantCode) return fail(`close code ${got.close}, wanted ${wantCode}`);
    done(Object.assign({ ok: true, code: got.close, reason: got.reason }, extra));
  });
}

const scenarios = {
  echo() {
    const big1 = crypto.randomBytes(1 << 20), big20 = crypto.randomBytes(20 << 20);
    const bin = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const text = Buffer.from('fragmented ünïcode message');
    const expect = [
      { kind: 'text', data: Buffer.from('hello') },
      { kind: 'binary', data: bin },
      { kind: 'text', data: text },
      { kind: 'binary', data: big1 },
      { kind: 'binary', data: big20 },
      { kind: 'text', data: Buffer.from('') },
    ];
    // wslay answers pings itself, so pongs may overtake echoes: kept apart
    const pongs = [];
    let i = 0, protocol = null;
    connect('/ws/echo', 'chat, echo', (sock, h) => {
      protocol = h['sec-websocket-protocol'] || null;
      sock.write(frame(1, 'hello'));
      sock.write(frame(2, bin));
      sock.write(frame(9, 'ping-1'));
      // split inside a multi-byte character, with a ping between fragments
      sock.write(frame(1, text.slice(0, 12), { fin: false }));
      sock.write(frame(9, 'inner'));
      sock.write(frame(0, text.slice(12, 20), { fin: false }));
      sock.write(frame(0, text.slice(20)));
      sock.write(frame(2, big1));
      sock.write(frame(2, big20));
      sock.write(frame(1, ''));
    }, messages((m, sock) => {
      if (m.control === 10) { pongs.push(m.data.toString()); return; }
      if (m.close !== undefined) {
        if (i !== expect.length) return fail('early close ' + m.close);
        if (m.close !== 1000) return fail('close code ' + m.close);
        return;   // wait for the server to end TCP
      }
      const e = expect[i++];
      if (!e) return fail('unexpected message');
      if (m.kind !== e.kind) return fail(`message ${i}: kind ${m.kind || m.control}, wanted ${e.kind}`);
      if (!m.data.equals(e.data)) return fail(`message ${i}: data differs (${m.data.length} bytes)`);
      if (i === expect.length) sock.write(closeFrame(1000, 'done'));
    }), (end) => {
      if (i !== expect.length) return fail('ended early: ' + JSON.stringify(end) + ' after ' + i);
      if (pongs.join() !== 'ping-1,inner') return fail('pongs: ' + pongs.join());
      done({ ok: true, protocol, messages: i, pongs: pongs.length });
    });
  },
  noproto() {
    connect('/ws/echo', null, (sock, h) => {
      const p = h['sec-websocket-protocol'];
      sock.write(closeFrame(1000));
      sock.on('close', () => done({ ok: p === undefined, protocol: p || null }));
    }, () => {}, () => {});
  },
  close() { expectClose('/ws/close?code=4001&reason=bye', () => {}, 4001); },
  drop() {
    let closeFrameSeen = false;
    connect('/ws/drop', null, (sock) => sock.write(frame(1, 'x')),
      (f) => { if (f.opcode === 8) closeFrameSeen = true; },
      (end) => done({ ok: !closeFrameSeen, end, close_frame: closeFrameSeen }));
  },
  unmasked() { expectClose('/ws/echo', (s) => s.write(frame(1, 'no mask', { mask: false })), 1002); },
  badopcode() { expectClose('/ws/echo', (s) => s.write(frame(3, 'reserved')), 1002); },
  badutf8() { expectClose('/ws/echo', (s) => s.write(frame(1, Buffer.from([0x68, 0xc3, 0x28]))), 1007); },
  toobig() { expectClose('/ws/echo', (s) => s.write(frame(2, Buffer.alloc(2 << 20))), 1009); },
  garbage() {
    const sock = dial(() => {
      sock.write('GET /ws/echo HTTP/1.1\r\nUpgrade: websocket\r\n\x00\x01\x02 not http\r\n\r\n');
    });
    let data = '';
    const finish = () => done({ ok: !/^HTTP\/1\.1 101/.test(data), status: data.split('\r\n')[0] });
    sock.on('data', (d) => {
      data += d.toString('latin1');
      if (data.includes('\r\n\r\n')) finish();   // a whole response head: enough
    });
    sock.on('error', () => {});
    sock.on('close', finish);
  },
  raw() {
    const chunks = [];
    process.stdin.on('data', (d) => chunks.push(d));
    process.stdin.on('end', () => {
      const input = Buffer.concat(chunks);
      const wait = Number(process.env.RAW_WAIT_MS || 3000);
      const sock = dial(() => {
        sock.write(input);
        if (process.env.RAW_DESTROY) sock.destroy();   // abrupt disconnect after sending
      });
      let data = Buffer.alloc(0), closed = false;
      sock.on('data', (d) => { data = Buffer.concat([data, d]); });
      sock.on('error', (e) => { closed = e.code || 'error'; });
      const finish = () => done({
        ok: true, status: data.toString('latin1').split('\r\n')[0], bytes: data.length,
        closed: closed || false,
      });
      sock.on('close', () => { closed = closed || true; finish(); });
      if (process.env.RAW_DESTROY) return;
      setTimeout(() => { sock.destroy(); finish(); }, wait);
    });
  },
};

if (!scenarios[scenario]) fail('unknown scenario ' + scenario);
scenarios[scenario]();
