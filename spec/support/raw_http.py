#!/usr/bin/env python3
"""Raw TCP clients for the server's limit specs (spec/core/server_limits_spec.lua,
spec/dtlocal/connection_limits_spec.lua): what an attacker, or a client that
is not ours, puts on the wire, byte for byte.  Python's standard library only.

    raw_http.py PORT flood N [PATH [TOKEN]]
        Opens N TCP connections and sends nothing; prints "open N" once every
        connect() has completed, then waits for a line on stdin.  On it, one
        real request (GET PATH, default /hello, with "Authorization: Bearer
        TOKEN" when given) on a fresh connection; prints one JSON line
        {"status", "elapsed"} (status null when nothing came back in 10 s),
        then holds the N connections until stdin closes.
    raw_http.py PORT slowloris INTERVAL LIMIT
        Sends a request's headers one byte every INTERVAL seconds, for at
        most LIMIT seconds; prints {"closed", "elapsed", "sent"}.
    raw_http.py PORT raw [WAIT]
        Sends stdin as-is, half-closes nothing, reads until the server
        closes (or WAIT seconds, default 5); prints {"data" (latin-1),
        "closed", "elapsed"}.
    raw_http.py PORT endless LIMIT
        Sends a request line and then header lines without end (as fast as
        the server takes them), reading what comes back, for at most LIMIT
        seconds; prints {"status" (of the first answer, or null), "closed",
        "elapsed", "sent"}.
    raw_http.py PORT slowupload TOTAL CHUNK INTERVAL
        POST /upload with Content-Length TOTAL, CHUNK bytes every INTERVAL
        seconds; prints {"status", "body", "elapsed", "cut"}.
    raw_http.py PORT slowdownload PATH
        GET PATH reading the (slowly streamed) body to its end; prints
        {"status", "bytes", "elapsed", "complete"}.
    raw_http.py PORT wsidle IDLE
        A WebSocket to /ws, silent for IDLE seconds, then one text message;
        prints {"echo", "elapsed"} (echo null when the connection was gone).
"""
import json
import os
import resource
import select
import socket
import sys
import time


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def readable(s, timeout):
    """poll(), not select(): the flood's descriptors go past FD_SETSIZE."""
    p = select.poll()
    p.register(s, select.POLLIN)
    return bool(p.poll(max(0, timeout) * 1000))


def read_all(s, limit):
    """Read until EOF or `limit` seconds; returns (bytes, closed)."""
    data = b""
    end = time.monotonic() + limit
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return data, False
        if not readable(s, left):
            return data, False
        try:
            d = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not d:
            return data, True
        data += d


def read_response(s, limit):
    """One response with a Content-Length body: (status, body) or (None, b"")."""
    data = b""
    end = time.monotonic() + limit
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
            if len(rest) >= length:
                return int(head.split(b" ")[1]), rest[:length]
        left = end - time.monotonic()
        if left <= 0:
            return None, b""
        if not readable(s, left):
            return None, b""
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return None, b""
        if not d:
            return None, b""
        data += d


def flood(port, n, path="/hello", token=None):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
    # every connect() completes (into the server's listen backlog at worst)
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLOUT)
    pending = len(socks)
    while pending:
        events = poller.poll(10000)
        if not events:
            break
        for fd, _ in events:
            poller.unregister(fd)
            pending -= 1
    print("open %d" % (n - pending), flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    status = None
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        auth = ("Authorization: Bearer %s\r\n" % token) if token else ""
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
                   % (path, auth)).encode())
        status, _ = read_response(s, 10)
        s.close()
    except OSError:
        pass
    out({"status": status, "elapsed": time.monotonic() - t0})
    sys.stdin.read()
    for s in socks:
        s.close()


def slowloris(port, interval, limit):
    req = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 4096 + b"\r\n\r\n"
    s = connect(port)
    t0 = time.monotonic()
    sent = 0
    closed = False
    while time.monotonic() - t0 < limit and sent < len(req):
        try:
            s.send(req[sent:sent + 1])
            sent += 1
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if readable(s, interval):
            try:
                d = s.recv(4096)
            except ConnectionResetError:
                d = b""
            if not d:
                closed = True
                break
    out({"closed": closed, "elapsed": time.monotonic() - t0, "sent": sent})


def raw(port, wait=5.0):
    data = sys.stdin.buffer.read()
    s = connect(port)
    t0 = time.monotonic()
    s.sendall(data)
    got, closed = read_all(s, wait)
    out({"data": got.decode("latin-1"), "closed": closed, "elapsed": time.monotonic() - t0})


def slowupload(port, total, chunk, interval):
    s = connect(port)
    t0 = time.monotonic()
    s.sendall(("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total).encode())
    left = total
    cut = False
    while left > 0:
        k = min(chunk, left)
        try:
            s.sendall(b"x" * k)
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        left -= k
        if left > 0:
            time.sleep(interval)
    status, body = (None, b"") if cut else read_response(s, 10)
    out({"status": status, "body": body.decode("latin-1"), "elapsed": time.monotonic() - t0,
         "cut": cut or status is None})


def slowdownload(port, path):
    s = connect(port)
    t0 = time.monotonic()
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
    data, closed = read_all(s, 30)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else None
    length = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    out({"status": status, "bytes": len(body), "elapsed": time.monotonic() - t0,
         "complete": closed and length is not None and len(body) == length})


def wsidle(port, idle):
    s = connect(port)
    t0 = time.monotonic()
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(4096)
        if not d:
            out({"echo": None, "elapsed": time.monotonic() - t0})
            return
        head += d
    time.sleep(idle)
    payload = b"still here"
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i & 3] for i, b in enumerate(payload))
    echo = None
    try:
        s.sendall(frame)
        data, _ = b"", None
        end = time.monotonic() + 5
        while len(data) < 2 + len(payload) and time.monotonic() < end:
            if not readable(s, end - time.monotonic()):
                break
            d = s.recv(4096)
            if not d:
                break
            data += d
        if len(data) >= 2 and data[0] == 0x81:
            echo = data[2:2 + data[1]].decode()
    except (BrokenPipeError, ConnectionResetError):
        pass
    out({"echo": echo, "elapsed": time.monotonic() - t0})


def endless(port, limit):
    s = connect(port)
    t0 = time.monotonic()
    s.setblocking(False)
    line = b"X-Endless: " + b"e" * 1000 + b"\r\n"
    pending = b"GET /hello HTTP/1.1\r\nHost: x\r\n"
    sent, data, closed = 0, b"", False
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLOUT)
    while time.monotonic() - t0 < limit and not closed:
        for _, ev in p.poll(100):
            if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                try:
                    d = s.recv(65536)
                    if not d:
                        closed = True
                    data += d
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    closed = True
            if ev & select.POLLOUT and not closed:
                try:
                    n = s.send(pending or line)
                    sent += n
                    pending = (pending or line)[n:]
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    closed = True
    status = int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1 ") else None
    out({"status": status, "closed": closed, "elapsed": time.monotonic() - t0, "sent": sent})


def main():
    port, what, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if what == "flood":
        flood(port, int(args[0]), *args[1:])
    elif what == "slowloris":
        slowloris(port, float(args[0]), float(args[1]))
    elif what == "raw":
        raw(port, *(float(a) for a in args))
    elif what == "endless":
        endless(port, float(args[0]))
    elif what == "slowupload":
        slowupload(port, int(args[0]), int(args[1]), float(args[2]))
    elif what == "slowdownload":
        slowdownload(port, args[0])
    elif what == "wsidle":
        wsidle(port, float(args[0]))
    else:
        sys.exit("unknown scenario " + what)


if __name__ == "__main__":
    main()
