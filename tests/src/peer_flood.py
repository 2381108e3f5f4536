"""A hostile local peer for qam's attack tests, run under setpriv as its own uid.

usage: peer_flood.py hold|verify|silent|exists SOCKET COUNT

  hold    COUNT connections to qamd, each sending `hello` every 3 s (never idle)
  verify  COUNT connections each verifying random unknown names, one after another
  silent  COUNT connections that never send a byte, reopened as soon as they are closed
  exists  COUNT connections pipelining `exists` as fast as qamd answers

Prints `ready N` once N connections are open (N < COUNT when qamd refused some), then one
`answered CODE N` line per answer code seen on stdin EOF, and exits.
"""
import os
import random
import selectors
import socket
import string
import sys
import threading


def connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s


def random_name():
    return "".join(random.choice(string.ascii_lowercase) for _ in range(12))


def main():
    mode, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    codes = {}
    lock = threading.Lock()

    def seen(line):
        code = "ok" if b'"ok":true' in line else line.split(b'"code":"')[-1].split(b'"')[0].decode()
        with lock:
            codes[code] = codes.get(code, 0) + 1

    conns = []
    for _ in range(count):
        try:
            conns.append(connect(path))
        except OSError:
            break
    if mode == "hold":
        # Each connection answers one `hello`: `ok` holds a seat; a connection qamd had no
        # seat for was answered `busy` at accept and closed.
        alive = []
        for s in conns:
            s.settimeout(30)
            try:
                s.sendall(b'{"op":"hello"}\n')
            except OSError:
                pass  # already closed by qamd: its `busy` is still there to read
            answer = bytearray()
            try:
                while b"\n" not in answer:
                    data = s.recv(4096)
                    if not data:
                        break
                    answer.extend(data)
            except OSError:
                pass
            line = bytes(answer).partition(b"\n")[0]
            if b'"ok":true' in line:
                alive.append(s)
            else:
                if line:
                    seen(line)
                s.close()
        conns = alive
    print("ready", len(conns), flush=True)
    sel = selectors.DefaultSelector()
    if mode == "hold":
        while not stop.wait(3):
            for s in list(conns):
                try:
                    s.sendall(b'{"op":"hello"}\n')
                    s.recv(4096)
                except OSError:
                    conns.remove(s)
    elif mode in ("verify", "exists"):
        def request():
            if mode == "verify":
                return ('{"op":"verify","user":"%s","password":"guess-guess"}\n' % random_name()).encode()
            return b'{"op":"exists","user":"nobody-here"}\n' * 16
        for s in conns:
            try:
                s.sendall(request())
                sel.register(s, selectors.EVENT_READ, bytearray())
            except OSError:
                s.close()
        while not stop.is_set() and sel.get_map():
            for key, _ in sel.select(0.2):
                s, buf = key.fileobj, key.data
                try:
                    data = s.recv(65536)
                    if not data:
                        raise ConnectionResetError()
                    buf.extend(data)
                    while b"\n" in buf:
                        line, _, rest = bytes(buf).partition(b"\n")
                        buf[:] = rest
                        seen(line)
                        if mode == "verify":
                            s.sendall(request())
                    if mode == "exists" and not buf:
                        s.sendall(request())
                except OSError:
                    sel.unregister(s)
                    s.close()
        stop.wait()
    elif mode == "silent":
        for s in conns:
            sel.register(s, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select(0.2):
                s = key.fileobj
                if not s.recv(4096):
                    sel.unregister(s)
                    s.close()
                    try:
                        again = connect(path)
                        sel.register(again, selectors.EVENT_READ)
                    except OSError:
                        pass
    for code, n in sorted(codes.items()):
        print("answered", code, n, flush=True)


main()
