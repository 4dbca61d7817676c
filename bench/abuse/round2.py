#!/usr/bin/env python3
"""Floods from issue 31, against two `tandem` binaries side by side.

    python3 bench/abuse/round2.py BASE_BIN NEW_BIN > bench/results/abuse/round2.json

Each binary is started fresh (embedded, accounts mode) for each flood:
- `slow_bodies`: 256 connections from one address, each sending an 8 MB
  login body less its last byte: the server's RSS and open descriptors
  before, at the peak, and 15 s later, and how many of the connections the
  server still holds then.
- `ipv6_block`: 20 connections from 20 addresses of one IPv6 /64 with
  MAX_CONNS_PER_IP=4: how many are let in (needs root: the addresses are
  added to `lo` and removed after).
- `member_oracle`: 400 `DELETE /api/documents/{own}/members/{name}` probes
  for names half of which exist: probes per second, and how many answers
  told an existing name from a missing one.
- `title_flood`: title changes as fast as one client can send them for
  3 s: accepted per second.
- `distributed_guesser`: 100 wrong passwords for one account, each from its
  own address: how many reached the password check (401), and how many were
  refused (429).
- `bidi_name`: a registration whose display name holds U+202E.
Only the standard library is used.
"""
import json, os, socket, subprocess, sys, threading, time, urllib.request

import procs

def start(binary, env):
    return procs.start(binary, {"REGISTRATIONS_PER_HOUR": "100000", **env})

rss_kib = procs.rss_kb

def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))

def call(addr, method, path, body=None, token=None, ip=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    if ip:
        req.add_header("x-real-ip", ip)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, None

def user(addr, name):
    st, v = call(addr, "POST", "/api/auth/register", {"username": name, "password": "correct horse battery"})
    assert st == 201, (name, st)
    return v["token"]

def slow_bodies(binary):
    p, addr = start(binary, {"MAX_CONNS_PER_IP": "1000"})
    host, port = addr.rsplit(":", 1)
    time.sleep(0.3)
    before = (rss_kib(p.pid), fds(p.pid))
    n, size = 256, 8 * 1000 * 1000
    head = (f"POST /api/auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {size}\r\n\r\n").encode()
    chunk = b" " * (size - 1)
    socks = []
    def one():
        s = socket.create_connection((host, int(port)))
        socks.append(s)
        try:
            s.sendall(head)
            s.sendall(chunk)
        except OSError:
            pass
    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts: t.start()
    peak = before
    t0 = time.time()
    samples = {}
    for at in (15, 30):
        while time.time() - t0 < at:
            peak = (max(peak[0], rss_kib(p.pid)), max(peak[1], fds(p.pid)))
            time.sleep(0.1)
        held = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK) == b"":
                    continue  # closed
            except BlockingIOError:
                held += 1  # nothing said, still open
            except OSError:
                pass  # reset
        samples[f"at_{at}s"] = {"rss_kib": rss_kib(p.pid), "fds": fds(p.pid), "held": held,
                                "body_bytes_gauge": gauge(addr, "tandem_request_body_bytes")}
    for s in socks: s.close()
    p.kill()
    return {"connections": n, "body_bytes": size, "before": {"rss_kib": before[0], "fds": before[1]},
            "peak": {"rss_kib": peak[0], "fds": peak[1]}, **samples}

def gauge(addr, name):
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None

def ipv6_block(binary):
    addrs = [f"2001:db8:3131:1::{0x100 + i:x}" for i in range(20)]
    for a in addrs:
        if subprocess.call(["ip", "-6", "addr", "add", f"{a}/128", "dev", "lo", "nodad"]) != 0:
            return {"skipped": "cannot add IPv6 addresses (root and ip needed)"}
    try:
        p, addr = start(binary, {"HOST": "::", "MAX_CONNS_PER_IP": "4"})
        port = int(addr.rsplit(":", 1)[1])
        admitted, socks = 0, []
        for a in addrs:
            s = socket.socket(socket.AF_INET6)
            s.bind((a, 0))
            s.connect(("::1", port))
            s.settimeout(0.3)
            try:
                got = s.recv(64)
                admitted += 0 if got.startswith(b"HTTP/1.1 429") else 1
            except socket.timeout:
                admitted += 1
            socks.append(s)
        p.kill()
        return {"addresses_of_one_slash_64": len(addrs), "cap": 4, "admitted": admitted}
    finally:
        for a in addrs:
            subprocess.call(["ip", "-6", "addr", "del", f"{a}/128", "dev", "lo"])

def member_oracle(binary):
    p, addr = start(binary, {})
    owner = user(addr, "owner")
    for i in range(10):
        user(addr, f"real{i}")
    st, doc = call(addr, "POST", "/api/documents", {"title": "mine", "content": ""}, owner)
    names = [f"real{i % 10}" if i % 2 == 0 else f"ghost{i}" for i in range(400)]
    answers, t0 = {}, time.time()
    for name in names:
        st, _ = call(addr, "DELETE", f"/api/documents/{doc['id']}/members/{name}", token=owner)
        answers.setdefault(name.startswith("real"), set()).add(st)
    took = time.time() - t0
    p.kill()
    told = answers.get(True, set()).isdisjoint(answers.get(False, set()))
    return {"probes": len(names), "probes_per_s": round(len(names) / took), "answers_existing": sorted(answers.get(True, [])),
            "answers_missing": sorted(answers.get(False, [])), "existence_told": told}

def title_flood(binary):
    p, addr = start(binary, {})
    owner = user(addr, "owner")
    st, doc = call(addr, "POST", "/api/documents", {"title": "t", "content": ""}, owner)
    ok = limited = 0
    t0 = time.time()
    i = 0
    while time.time() - t0 < 3:
        st, _ = call(addr, "PUT", f"/api/documents/{doc['id']}", {"title": f"title {i}"}, owner)
        i += 1
        ok += st == 200
        limited += st == 429
    took = time.time() - t0
    p.kill()
    return {"seconds": round(took, 2), "accepted": ok, "accepted_per_s": round(ok / took), "refused_429": limited}

def distributed_guesser(binary):
    p, addr = start(binary, {})
    user(addr, "victim")
    statuses = []
    for i in range(100):
        st, _ = call(addr, "POST", "/api/auth/login", {"username": "victim", "password": "a wrong guess"},
                     ip=f"10.{i // 250}.{i % 250}.7")
        statuses.append(st)
    p.kill()
    return {"guesses": 100, "checked_401": statuses.count(401), "refused_429": statuses.count(429)}

def bidi_name(binary):
    p, addr = start(binary, {})
    st, _ = call(addr, "POST", "/api/auth/register",
                 {"username": "spoof", "password": "correct horse battery", "name": "admin\u202enimda"})
    p.kill()
    return {"status": st}

out = {}
for name, binary in (("base", sys.argv[1]), ("new", sys.argv[2])):
    out[name] = {"binary": binary}
    for f in (slow_bodies, ipv6_block, member_oracle, title_flood, distributed_guesser, bidi_name):
        out[name][f.__name__] = f(binary)
        print(name, f.__name__, json.dumps(out[name][f.__name__]), file=sys.stderr)
print(json.dumps(out, indent=2))
