// A WebSocket test server for spec/core/ws_client_spec.lua, on node's
// built-ins only (RFC 6455 framing written out here, no npm packages).
//
//   node ws_server.js [cert.pem key.pem]
//
// Listens on 127.0.0.1, port chosen by the OS; prints the port on stdout
// (with TLS when given a certificate and key) and exits when stdin closes.
//
// Routes (the upgrade request's path):
//   /ws/echo            echoes every message with its kind; selects the
//                       subprotocol "echo" when offered
//   /ws/headers         sends one text message: JSON {headers, protocol,
//                       path}; then echoes
//   /ws/close?code=N&reason=R   closes at once with that code and reason
//   /ws/drop            sends "bye", then destroys the TCP connection
//   /ws/flood?n=N       sends "m1" .. "mN" as fast as the socket takes them
//   /ws/reject?status=N answers the upgrade with HTTP N (default 403)
//   /ws/pings           answers a text message with the count of pings seen
//   /ws/hang            never answers the upgrade request
//   /ws/record?id=X     appends "message <bytes> <kind>" and "close <code>
//                       <reason>" lines to $WS_SPEC_LOG/X as they arrive
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function frame(opcode, payload, fin = true) {
  const n = payload.length;
  let head;
  if (n < 126) { head = Buffer.alloc(2); head[1] = n; }
  else if (n < 65536) { head = Buffer.alloc(4); head[1] = 126; head.writeUInt16BE(n, 2); }
  else { head = Buffer.alloc(10); head[1] = 127; head.writeBigUInt64BE(BigInt(n), 2); }
  head[0] = (fin ? 0x80 : 0) | opcode;
  return Buffer.concat([head, payload]);
}

// One connection: parses client frames, reassembles messages.
function serve(sock, route, onMessage, onClose) {
  let buf = Buffer.alloc(0);
  let parts = [], kind = 0;
  let closed = false;
  const conn = {
    pings: 0,
    send(data, binary) { if (!closed) sock.write(frame(binary ? 2 : 1, Buffer.from(data))); },
    close(code, reason) {
      if (closed) return;
      closed = true;
      const r = Buffer.from(reason || '');
      const p = Buffer.alloc(2 + r.length);
      p.writeUInt16BE(code, 0);
      r.copy(p, 2);
      sock.write(frame(8, p));
      setTimeout(() => sock.end(), 200);   // let the client answer first
    },
  };
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0] & 0x80) !== 0, op = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f, off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (!masked) { sock.destroy(); return; }   // clients must mask
      if (buf.length < off + 4 + len) return;
      const mask = buf.subarray(off, off + 4);
      const data = Buffer.from(buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < len; i++) data[i] ^= mask[i & 3];
      buf = buf.subarray(off + 4 + len);
      if (op === 8) {   // close: answer with the same code and end
        if (onClose) onClose(data.length >= 2 ? data.readUInt16BE(0) : 1005, data.subarray(2).toString());
        if (!closed) { closed = true; sock.write(frame(8, data.subarray(0, 2))); }
        sock.end();
        return;
      }
      if (op === 9) { conn.pings++; sock.write(frame(10, data)); continue; }
      if (op === 10) continue;
      if (op === 1 || op === 2) { kind = op; parts = [data]; }
      else if (op === 0) parts.push(data);
      if (fin) { const msg = Buffer.concat(parts); parts = []; onMessage(conn, msg, kind === 2); }
    }
  });
  sock.on('error', () => {});
  return conn;
}

function onUpgrade(req, sock) {
  const u = new URL(req.url, 'http://localhost');
  const key = req.headers['sec-websocket-key'];
  if (u.pathname === '/ws/hang') return;   // never answers the upgrade
  if (u.pathname === '/ws/reject' || !key) {
    const status = Number(u.searchParams.get('status') || 403);
    sock.end(`HTTP/1.1 ${status} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    return;
  }
  const offered = (req.headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
  const protocol = offered.includes('echo') ? 'echo' : null;
  const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
  sock.setNoDelay(true);
  sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\n` + (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : '') + '\r\n');
  const echo = (c, msg, binary) => c.send(msg, binary);
  switch (u.pathname) {
    case '/ws/echo': serve(sock, u, echo); break;
    case '/ws/headers': {
      const c = serve(sock, u, echo);
      c.send(JSON.stringify({ headers: req.headers, protocol, path: req.url }), false);
      break;
    }
    case '/ws/close': {
      const c = serve(sock, u, () => {});
      c.close(Number(u.searchParams.get('code') || 1000), u.searchParams.get('reason') || '');
      break;
    }
    case '/ws/drop': {
      const c = serve(sock, u, () => {});
      c.send('bye', false);
      setTimeout(() => sock.destroy(), 50);
      break;
    }
    case '/ws/flood': {
      const c = serve(sock, u, () => {});
      const n = Number(u.searchParams.get('n') || 1000);
      let i = 0;
      const pump = () => {
        while (i < n) { i++; if (!sock.write(frame(1, Buffer.from('m' + i)))) { sock.once('drain', pump); return; } }
      };
      pump();
      void c;
      break;
    }
    case '/ws/pings': serve(sock, u, (c) => c.send(String(c.pings), false)); break;
    case '/ws/record': {
      // appends what arrives to $WS_SPEC_LOG/<id>, for the spec to read
      const file = require('path').join(process.env.WS_SPEC_LOG, u.searchParams.get('id').replace(/[^\w-]/g, ''));
      serve(sock, u,
        (c, msg, binary) => fs.appendFileSync(file, `message ${msg.length} ${binary ? 'binary' : 'text'}\n`),
        (code, reason) => fs.appendFileSync(file, `close ${code} ${reason}\n`));
      break;
    }
    default: serve(sock, u, () => {}).close(1008, 'unknown path');
  }
}

const tls = process.argv.length >= 4;
const handler = (req, res) => { res.writeHead(404); res.end(); };
const server = tls
  ? https.createServer({ cert: fs.readFileSync(process.argv[2]), key: fs.readFileSync(process.argv[3]) }, handler)
  : http.createServer(handler);
server.on('upgrade', onUpgrade);
server.listen(0, '127.0.0.1', () => { process.stdout.write(server.address().port + '\n'); });
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
