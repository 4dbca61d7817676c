#!/usr/bin/env python3
"""Floods from issue 17, against two `tandem` binaries side by side.

    python3 bench/abuse/compare.py BASE_BIN NEW_BIN > bench/results/abuse/compare.json

Each binary is started fresh (embedded, accounts mode) for each flood:
- `register`: 96 concurrent registrations, each from its own address; the
  server's peak RSS while they run, and after.
- `login_names`: 40 logins with 4 MiB usernames, one after another; RSS
  before and after.
- `silent`: a TCP connection that sends nothing: seconds until the server
  closes it (capped at 30 s), with HEADER_READ_TIMEOUT_MS=10000 (default).
Only the standard library is used.
"""
import json, socket, sys, threading, time, urllib.request

from procs import start, rss_kb

def post(addr, path, body, ip):
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", "x-real-ip": ip})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code

def register_flood(binary):
    p, addr = start(binary, {})
    time.sleep(0.3)
    before = rss_kb(p.pid)
    statuses = []
    def one(i):
        statuses.append(post(addr, "/api/auth/register",
                             {"username": f"flood{i}", "password": "correct horse battery"}, f"10.1.0.{i}"))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(96)]
    t0 = time.time()
    for t in ts: t.start()
    peak = before
    while any(t.is_alive() for t in ts):
        peak = max(peak, rss_kb(p.pid)); time.sleep(0.01)
    took = time.time() - t0
    time.sleep(0.5)
    after = rss_kb(p.pid)
    p.kill()
    return {"before_kib": before, "peak_kib": peak, "after_kib": after, "seconds": round(took, 2),
            "created": statuses.count(201), "refused_503": statuses.count(503)}

def login_names(binary):
    p, addr = start(binary, {"LOGIN_ATTEMPTS_PER_MIN": "1000"})
    time.sleep(0.3)
    before = rss_kb(p.pid)
    codes = [post(addr, "/api/auth/login", {"username": chr(97 + i % 26) * (4 << 20), "password": "whatever pw"},
                  "127.0.0.1") for i in range(40)]
    time.sleep(0.5)
    after = rss_kb(p.pid)
    p.kill()
    return {"before_kib": before, "after_kib": after, "statuses": sorted(set(codes))}

def silent(binary):
    p, addr = start(binary, {})
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.settimeout(30)
    t0 = time.time()
    try:
        s.recv(100)
        closed = round(time.time() - t0, 2)
    except socket.timeout:
        closed = None
    p.kill()
    return {"closed_after_s": closed, "cap_s": 30}

out = {}
for name, binary in (("base", sys.argv[1]), ("new", sys.argv[2])):
    out[name] = {"binary": binary, "register": register_flood(binary),
                 "login_names": login_names(binary), "silent": silent(binary)}
    print(name, json.dumps(out[name]), file=sys.stderr)
print(json.dumps(out, indent=2))
