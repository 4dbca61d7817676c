"""Start a `tandem` binary for the abuse comparisons (embedded, accounts
mode, loopback a trusted proxy) and read its memory."""
import os, subprocess, tempfile, threading

def start(binary, env):
    """The process, and the address it listens on."""
    d = tempfile.mkdtemp()
    e = {"PATH": os.environ.get("PATH", ""), "HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": d,
         "RUST_LOG": "error", "JWT_SECRET": "x" * 40, "ALLOW_ANONYMOUS": "false",
         "TRUSTED_PROXIES": "127.0.0.1/32", **env}
    p = subprocess.Popen([binary], env=e, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if line.startswith("listening on http://"):
            addr = line.strip().split("http://")[1]
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, addr
    raise SystemExit(f"{binary} did not start")

def rss_kb(pid):
    """Resident memory, KiB."""
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
