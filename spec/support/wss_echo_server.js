// A TLS WebSocket echo server for spec/core/ws_client_spec.lua, on node's
// built-ins only (RFC 6455 framing written out here, no npm packages): the
// spec's in-process test server (support/test_server.lua) has no TLS.
//
//   node wss_echo_server.js cert.pem key.pem
//
// Listens on 127.0.0.1, port chosen by the OS; prints the port on stdout and
// exits when stdin closes. Any path: echoes text and binary messages,
// answers pings and the close frame; selects the subprotocol "echo" when
// offered.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const https = require('https');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function frame(opcode, payload) {
  const n = payload.length;
  let head;
  if (n < 126) { head = Buffer.alloc(2); head[1] = n; }
  else if (n < 65536) { head = Buffer.alloc(4); head[1] = 126; head.writeUInt16BE(n, 2); }
  else { head = Buffer.alloc(10); head[1] = 127; head.writeBigUInt64BE(BigInt(n), 2); }
  head[0] = 0x80 | opcode;
  return Buffer.concat([head, payload]);
}

function echo(sock) {
  let buf = Buffer.alloc(0);
  let parts = [], kind = 1;
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0] & 0x80) !== 0, op = buf[0] & 0x0f;
      let len = buf[1] & 0x7f, off = 2;
      if (!(buf[1] & 0x80)) { sock.destroy(); return; }   // clients must mask
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (buf.length < off + 4 + len) return;
      const mask = buf.subarray(off, off + 4);
      const data = Buffer.from(buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < len; i++) data[i] ^= mask[i & 3];
      buf = buf.subarray(off + 4 + len);
      if (op === 8) { sock.end(frame(8, data.subarray(0, 2))); return; }
      if (op === 9) { sock.write(frame(10, data)); continue; }
      if (op === 10) continue;
      if (op === 1 || op === 2) { kind = op; parts = [data]; } else parts.push(data);
      if (fin) { sock.write(frame(kind, Buffer.concat(parts))); parts = []; }
    }
  });
  sock.on('error', () => {});
}

const server = https.createServer({ cert: fs.readFileSync(process.argv[2]), key: fs.readFileSync(process.argv[3]) },
  (req, res) => { res.writeHead(426); res.end(); });
server.on('upgrade', (req, sock) => {
  const key = req.headers['sec-websocket-key'];
  if (!key) { sock.destroy(); return; }
  const offered = (req.headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
  const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
  sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\n` +
    (offered.includes('echo') ? 'Sec-WebSocket-Protocol: echo\r\n' : '') + '\r\n');
  echo(sock);
});
server.listen(0, '127.0.0.1', () => { process.stdout.write(server.address().port + '\n'); });
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
