#!/usr/bin/env python3
"""Benchmark of `orc serve` (issue 9): many event-stream clients on one big run, and a
steady stream of runs started over the API.

Standard library only. Builds the release binary, starts `orc serve --bind 127.0.0.1:0` in a
temporary directory (its own HOME, so its own run store) and measures:

1. **fan-out**: one run of 1,000 independent agents (mock, 1 s +- 0.5 s each) watched by
   200 SSE clients that connect as it starts. Every client must receive every event, in
   order, ending with `run_finished`. Reports the events each client got, the total
   delivered, events delivered per second (all clients, from the run's start until the last
   client has everything), and how long after the run's end the last client was done.
2. **start rate**: `POST /api/runs` 50 times a second for 20 s (1,000 runs of a two-agent
   ensemble at 50 ms a call), while a dashboard-like poller lists runs
   (`GET /api/runs?limit=50`) ten times a second. Reports p50/p99/max latency of both, the
   achieved start rate, and that every run succeeded.

The server's resident memory (`VmRSS` from /proc) is sampled every 50 ms throughout; the
table shows it before, at the peak of each scenario and after, and `VmHWM` at the end.

    python3 bench/serve_bench.py              # build, then about 40 s of measuring
    python3 bench/serve_bench.py --no-build   # use target/release/orc as it is
    python3 bench/serve_bench.py --json       # JSON on stdout, the table on stderr
"""

import argparse
import http.client
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024

WIDE = ["name: wide", "model_profiles:",
        "  slowish: { provider: mock, model: mock-1, latency_ms: 1000, jitter_ms: 500 }",
        "defaults: { model_profile: slowish }", "agents:"]
WIDE += [f"  - name: a{i:04d}" for i in range(1000)]

PAIR = """name: pair
model_profiles:
  quick: { provider: mock, model: mock-1, latency_ms: 50, jitter_ms: 0 }
defaults: { model_profile: quick }
agents:
  - name: writer
  - name: editor
    depends_on: [writer]
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Rss:
    """Samples a process's VmRSS every 50 ms; `mark` starts a named window."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []  # (time, bytes)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def read(self, key="VmRSS"):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self):
        while not self.stop:
            try:
                self.samples.append((time.monotonic(), self.read()))
            except OSError:
                return
            time.sleep(0.05)

    def peak(self, since, until):
        vals = [b for t, b in self.samples if since <= t <= until]
        return max(vals) if vals else 0


class Api:
    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        t = time.perf_counter()
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        payload = r.read()
        elapsed = time.perf_counter() - t
        return r.status, json.loads(payload) if payload else None, elapsed


def start_server(orc, tmp):
    home = os.path.join(tmp, "home")
    os.makedirs(os.path.join(tmp, ".orc", "ensembles"))
    with open(os.path.join(tmp, ".orc", "ensembles", "wide.yaml"), "w") as f:
        f.write("\n".join(WIDE) + "\n")
    with open(os.path.join(tmp, ".orc", "ensembles", "pair.yaml"), "w") as f:
        f.write(PAIR)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "XDG_CONFIG_HOME": os.path.join(tmp, "xdg"),
           "NO_COLOR": "1"}
    proc = subprocess.Popen([orc, "serve", "--bind", "127.0.0.1:0"], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline().strip()
    if not first.startswith("listening on http://"):
        proc.kill()
        raise SystemExit(f"orc serve did not start: {first!r}")
    threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
    port = int(first.rsplit(":", 1)[1])
    return proc, port


def sse_clients(port, run_id, n):
    """n SSE clients on one run, read with one selector; returns per-client results."""
    sel = selectors.DefaultSelector()
    clients = []
    request = (f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Accept: text/event-stream\r\nConnection: close\r\n\r\n").encode()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        c = {"sock": s, "events": 0, "tail": b"", "head": True, "done": None, "bytes": 0}
        clients.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    open_ = n
    while open_:
        for key, _ in sel.select(timeout=60):
            c = key.data
            try:
                data = c["sock"].recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(c["sock"])
                c["sock"].close()
                c["done"] = time.monotonic()
                open_ -= 1
                continue
            c["bytes"] += len(data)
            if c["head"]:
                # Skip the response head; the body is chunked.
                cut = (c["tail"] + data).find(b"\r\n\r\n")
                if cut < 0:
                    c["tail"] = c["tail"] + data
                    continue
                data = (c["tail"] + data)[cut + 4:]
                c["tail"] = b""
                c["head"] = False
            # Count event ids (an `id:` at the start of a line), across chunk boundaries.
            buf = c["tail"] + data
            # Every event follows a line break (the previous event's, or a chunk header's).
            c["events"] += buf.count(b"\nid: ")
            c["tail"] = buf[-4:]
    return clients


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--orc", default=os.path.join(ROOT, "target", "release", "orc"))
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        log("building the release binary ...")
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="orc-serve-bench-") as tmp:
        proc, port = start_server(args.orc, tmp)
        rss = Rss(proc.pid)
        try:
            time.sleep(0.3)
            results["rss_idle"] = rss.read()
            api = Api(port)

            # 1. fan-out
            log(f"fan-out: one 1,000-agent run, {args.clients} SSE clients ...")
            t0 = time.monotonic()
            status, body, _ = api.call("POST", "/api/runs", {"ensemble": "wide", "input": "go"})
            assert status == 202, body
            run_id = body["id"]
            clients = sse_clients(port, run_id, args.clients)
            t_done = max(c["done"] for c in clients)
            status, doc, _ = api.call("GET", f"/api/runs/{run_id}")
            total_events = doc["last_seq"]
            got = [c["events"] for c in clients]
            complete = sum(1 for g in got if g == total_events)
            delivered = sum(got)
            wall = doc["totals"]["wall_ms"] / 1000
            results["fanout"] = {
                "agents": 1000, "clients": args.clients, "run_status": doc["status"],
                "events_per_run": total_events, "clients_complete": complete,
                "events_delivered": delivered,
                "run_wall_s": wall,
                "seconds_until_all_clients_done": t_done - t0,
                "events_per_second": delivered / (t_done - t0),
                "mib_delivered": sum(c["bytes"] for c in clients) / MIB,
                "rss_peak": rss.peak(t0, time.monotonic()),
            }
            log(json.dumps(results["fanout"]))

            # 2. start rate
            n = args.rate * args.seconds
            log(f"start rate: {args.rate} runs/s for {args.seconds} s ({n} runs) ...")
            t1 = time.monotonic()
            post_lat, list_lat, ids, errors = [], [], [], []
            lock = threading.Lock()
            done = threading.Event()

            def poller():
                a = Api(port)
                while not done.is_set():
                    s, _, e = a.call("GET", "/api/runs?limit=50")
                    with lock:
                        list_lat.append(e)
                        if s != 200:
                            errors.append(s)
                    time.sleep(0.1)

            def starter(k, workers):
                # Worker k starts runs k, k+workers, ... each at its slot in the schedule.
                a = Api(port)
                for i in range(k, n, workers):
                    due = t1 + i / args.rate
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    s, b, e = a.call("POST", "/api/runs", {"ensemble": "pair", "input": f"run {i}"})
                    with lock:
                        post_lat.append(e)
                        if s == 202:
                            ids.append(b["id"])
                        else:
                            errors.append(s)

            poll = threading.Thread(target=poller, daemon=True)
            poll.start()
            workers = 8
            threads = [threading.Thread(target=starter, args=(k, workers)) for k in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            t_posted = time.monotonic()
            # Wait for every run to finish.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                s, page, _ = api.call("GET", "/api/runs?status=running&limit=1")
                if not page["runs"]:
                    break
                time.sleep(0.2)
            done.set()
            poll.join()
            t2 = time.monotonic()
            succeeded = 0
            offset = 0
            while True:
                s, page, _ = api.call("GET", f"/api/runs?ensemble=pair&status=succeeded&limit=1000&offset={offset}")
                succeeded += len(page["runs"])
                if page["next_offset"] is None:
                    break
                offset = page["next_offset"]
            results["start_rate"] = {
                "runs": n, "accepted": len(ids), "succeeded": succeeded, "errors": len(errors),
                "achieved_per_second": len(ids) / (t_posted - t1),
                "post_p50_ms": percentile(post_lat, 50) * 1000,
                "post_p99_ms": percentile(post_lat, 99) * 1000,
                "post_max_ms": max(post_lat) * 1000,
                "list_p50_ms": percentile(list_lat, 50) * 1000,
                "list_p99_ms": percentile(list_lat, 99) * 1000,
                "list_requests": len(list_lat),
                "rss_peak": rss.peak(t1, t2),
            }
            log(json.dumps(results["start_rate"]))
            results["rss_after"] = rss.read()
            results["rss_hwm"] = rss.read("VmHWM")
        finally:
            rss.stop = True
            proc.terminate()
            proc.wait(timeout=30)

    f, s = results["fanout"], results["start_rate"]
    table = [
        "| measure | value |",
        "|---|---:|",
        f"| fan-out: events per run (1,000 agents) | {f['events_per_run']:,} |",
        f"| fan-out: clients that got every event, in order | {f['clients_complete']} of {f['clients']} |",
        f"| fan-out: events delivered | {f['events_delivered']:,} ({f['mib_delivered']:.0f} MiB) |",
        f"| fan-out: run wall time | {f['run_wall_s']:.2f} s |",
        f"| fan-out: last client done after | {f['seconds_until_all_clients_done']:.2f} s |",
        f"| fan-out: events delivered per second | {f['events_per_second']:,.0f} |",
        f"| start rate: runs started (asked {args.rate}/s) | {s['accepted']} at {s['achieved_per_second']:.1f}/s, {s['succeeded']} succeeded, {s['errors']} errors |",
        f"| start rate: `POST /api/runs` p50 / p99 / max | {s['post_p50_ms']:.1f} / {s['post_p99_ms']:.1f} / {s['post_max_ms']:.1f} ms |",
        f"| start rate: `GET /api/runs?limit=50` p50 / p99 | {s['list_p50_ms']:.1f} / {s['list_p99_ms']:.1f} ms |",
        f"| RSS idle / fan-out peak / start-rate peak / after | {results['rss_idle'] / MIB:.1f} / {f['rss_peak'] / MIB:.1f} / {s['rss_peak'] / MIB:.1f} / {results['rss_after'] / MIB:.1f} MiB |",
        f"| RSS high-water mark (VmHWM) | {results['rss_hwm'] / MIB:.1f} MiB |",
    ]
    log("\n".join(table))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
