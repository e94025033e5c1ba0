#!/usr/bin/env python3
"""Workers through Redis against in-process runs: jobs per second, and the latency each
agent adds on the critical path.

Standard library only; needs `redis-server` on the PATH. Starts its own redis-server on a
free loopback port (no persistence), `--workers` `orc worker` processes, and runs every case
in-process and through Redis on the offline mock provider with zero latency, so the
figures are orc's own cost (and Redis's), not a model's.

    python3 bench/worker_bench.py               # builds target/release/orc, ~1 minute
    python3 bench/worker_bench.py --quick       # fewer agents and repetitions
    python3 bench/worker_bench.py --json        # JSON summary on stdout
    python3 bench/worker_bench.py --no-build    # the existing release binary (or --orc PATH)

Cases:
  * throughput: N independent agents; jobs per second = N / wall time of `orc invoke`
    (process start to exit), in-process and with --redis.
  * latency: a chain of K agents, each depending on the one before; the time each agent
    adds = (wall with --redis - wall in-process) / K. Every job of the chain waits for the
    one before, so this is the round trip a job takes through Redis and a worker.
See bench/README.md ("Workers").
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = "  fast: {provider: mock, latency_ms: 0, jitter_ms: 0}"


def independent(n):
    lines = ["name: wide", "model_profiles:", PROFILE, "agents:"]
    for i in range(n):
        lines += [f"  - name: a{i}", "    model_profile: fast"]
    return "\n".join(lines) + "\n"


def chain(k):
    lines = ["name: chain", "model_profiles:", PROFILE, "agents:"]
    for i in range(k):
        lines += [f"  - name: a{i}", "    model_profile: fast"]
        if i:
            lines.append(f"    depends_on: [a{i - 1}]")
            # Only the previous answer, not the whole growing transcript.
            lines.append("    prompt: \"{{ deps[0].output | truncate(200) }}\"")
    return "\n".join(lines) + "\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.02)
    sys.exit("redis-server did not start")


def run_invoke(orc, path, env, redis=None):
    args = [orc, "invoke", path, "go", "--output", "json", "--quiet", "--no-store"]
    if redis:
        args += ["--redis", redis]
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, env=env, check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"orc failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
    doc = json.loads(out.stdout)
    expected = doc["totals"]["agents"]
    if doc["totals"]["succeeded"] != expected:
        sys.exit(f"not every agent succeeded: {doc['totals']}")
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orc", default=os.path.join(ROOT, "target", "release", "orc"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=64, help="jobs per worker at once")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    n, k, reps = (500, 50, 3) if args.quick else (2000, 200, 5)

    tmp = tempfile.mkdtemp(prefix="orc-worker-bench-")
    env = dict(os.environ, HOME=tmp, XDG_CONFIG_HOME=os.path.join(tmp, "xdg"), NO_COLOR="1")
    env.pop("ORC_REDIS_URL", None)
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        wait_port(port)
        url = f"redis://127.0.0.1:{port}"
        for i in range(args.workers):
            workers.append(subprocess.Popen(
                [args.orc, "worker", "--redis", url, "--name", f"bench-{i}", "--quiet",
                 "--concurrency", str(args.concurrency)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        files = {}
        for name, text in (("wide", independent(n)), ("chain", chain(k))):
            files[name] = os.path.join(tmp, f"{name}.yaml")
            with open(files[name], "w") as f:
                f.write(text)
        results = {}
        for case in ("wide", "chain"):
            for mode in ("local", "redis"):
                run_invoke(args.orc, files[case], env, url if mode == "redis" else None)  # warm-up
                walls = [run_invoke(args.orc, files[case], env, url if mode == "redis" else None)
                         for _ in range(reps)]
                results[(case, mode)] = statistics.median(walls)
        local_jps = n / results[("wide", "local")]
        redis_jps = n / results[("wide", "redis")]
        added_ms = (results[("chain", "redis")] - results[("chain", "local")]) / k * 1000
        summary = {
            "agents": n,
            "chain": k,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "repetitions": reps,
            "throughput": {
                "in_process_wall_s": round(results[("wide", "local")], 3),
                "redis_wall_s": round(results[("wide", "redis")], 3),
                "in_process_jobs_per_s": round(local_jps),
                "redis_jobs_per_s": round(redis_jps),
            },
            "latency": {
                "in_process_wall_s": round(results[("chain", "local")], 3),
                "redis_wall_s": round(results[("chain", "redis")], 3),
                "added_ms_per_agent": round(added_ms, 2),
            },
        }
        table = [
            f"{'case':<34}{'in-process':>14}{'through Redis':>16}",
            f"{f'{n} independent agents, wall':<34}{results[('wide', 'local')]:>13.3f}s"
            f"{results[('wide', 'redis')]:>15.3f}s",
            f"{'  jobs per second':<34}{local_jps:>14.0f}{redis_jps:>16.0f}",
            f"{f'chain of {k} agents, wall':<34}{results[('chain', 'local')]:>13.3f}s"
            f"{results[('chain', 'redis')]:>15.3f}s",
            f"{'  added per agent (critical path)':<34}{'':>14}{added_ms:>14.2f}ms",
            f"({args.workers} workers x {args.concurrency}, median of {reps}, mock latency 0)",
        ]
        print("\n".join(table), file=sys.stderr if args.json else sys.stdout)
        if args.json:
            print(json.dumps(summary, indent=2))
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.kill()
        redis.terminate()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
