#!/usr/bin/env python3
"""Benchmarks of the `orc` binary: scheduler overhead, memory, validation and start-up.

Standard library only. Builds the release binary, generates the ensembles into a temporary
directory, runs every case several times and prints median / min wall time and peak RSS of
the child process (from `os.wait4`'s rusage, so no GNU time is needed). The HTTP cases run
against bench/fake_openai.py, a local OpenAI-compatible server started as a subprocess.

    python3 bench/bench.py            # full run
    python3 bench/bench.py --quick    # fewer repetitions
    python3 bench/bench.py --json     # JSON summary on stdout (table goes to stderr)
    python3 bench/bench.py --no-http  # skip the cases against the fake HTTP server
    python3 bench/bench.py --no-generate    # skip the `type: generate` cases
    python3 bench/bench.py --only-generate  # run only the `type: generate` cases
    python3 bench/bench.py --only-durable   # run only the store / 100k / --each-line cases

See bench/README.md for what each case measures.
"""

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024


# --------------------------------------------------------------------------- ensembles


def _header(name, profiles, default, base_url=None):
    """Mock profiles with fixed latencies, or, with `base_url`, OpenAI-compatible profiles on
    the fake server (whose delay is fixed server-side; the latencies only feed the ideal)."""
    lines = [f"name: {name}", "model_profiles:"]
    for pname, latency in profiles.items():
        if base_url:
            lines.append(f"  {pname}: {{ provider: openai-compatible, base_url: \"{base_url}\", "
                         "model: bench }")
        else:
            lines.append(f"  {pname}: {{ provider: mock, latency_ms: {latency}, jitter_ms: 0 }}")
    lines.append(f"defaults: {{ model_profile: {default} }}")
    lines.append("agents:")
    return lines


def _agent(name, deps=(), profile=None):
    out = [f"  - name: {name}"]
    if profile:
        out.append(f"    model_profile: {profile}")
    if deps:
        out.append(f"    depends_on: [{', '.join(deps)}]")
    return out


def gen_fan_in(latency=200, base_url=None):
    """16 roots -> 4 mids (each on 4 roots) -> 1 final. Critical path = 3 * latency."""
    lines = _header("fan_in_16_4_1", {"p": latency}, "p", base_url)
    for i in range(16):
        lines += _agent(f"root{i}")
    for j in range(4):
        lines += _agent(f"mid{j}", [f"root{4 * j + k}" for k in range(4)])
    lines += _agent("final", [f"mid{j}" for j in range(4)])
    agents = {f"root{i}": (latency, []) for i in range(16)}
    agents.update({f"mid{j}": (latency, [f"root{4 * j + k}" for k in range(4)]) for j in range(4)})
    agents["final"] = (latency, [f"mid{j}" for j in range(4)])
    return "\n".join(lines) + "\n", agents


def gen_skewed(slow=1000, fast=150, chain=5, final=200):
    """One slow root beside a chain of `chain` fast agents; `final` depends on both ends."""
    lines = _header("skewed", {"slow": slow, "fast": fast, "fin": final}, "fast")
    agents = {}
    lines += _agent("slow", profile="slow")
    agents["slow"] = (slow, [])
    prev = None
    for i in range(1, chain + 1):
        deps = [prev] if prev else []
        lines += _agent(f"c{i}", deps)
        agents[f"c{i}"] = (fast, deps)
        prev = f"c{i}"
    lines += _agent("final", ["slow", prev], profile="fin")
    agents["final"] = (final, ["slow", prev])
    return "\n".join(lines) + "\n", agents


def gen_flat(n, latency=200, base_url=None):
    lines = _header(f"flat_{n}", {"p": latency}, "p", base_url)
    for i in range(n):
        lines.append(f"  - name: a{i}")
    agents = {f"a{i}": (latency, []) for i in range(n)}
    return "\n".join(lines) + "\n", agents


def gen_mixed(n, seed=1, latency=200):
    """n agents: the first 1% are roots, the rest depend on 0-3 of the 500 agents before them."""
    rng = random.Random(seed)
    lines = _header(f"mixed_{n}", {"p": latency, "q": latency // 2}, "p")
    agents = {}
    for i in range(n):
        k = 0 if i < max(1, n // 100) else rng.choice([0, 1, 1, 2, 3])
        deps = sorted({rng.randrange(max(0, i - 500), i) for _ in range(k)})
        names = [f"a{d}" for d in deps]
        lines += _agent(f"a{i}", names, profile="q" if i % 7 == 0 else None)
        if i % 11 == 0:
            lines.append(f"    system_prompt: You are reviewer number {i}. Be brief.")
        agents[f"a{i}"] = (latency // 2 if i % 7 == 0 else latency, names)
    return "\n".join(lines) + "\n", agents


def gen_generate(producers, iterations, batch=10, latency=0, vocabulary=None, zipf=None):
    """One `type: generate` agent on one mock profile with a fixed latency. Stopped by
    `iterations` per producer only, so every run makes producers * iterations calls."""
    opts = ["provider: mock", f"latency_ms: {latency}", "jitter_ms: 0"]
    if vocabulary is not None:
        opts.append(f"vocabulary: {vocabulary}")
    if zipf is not None:
        opts.append(f"zipf: {zipf}")
    lines = [
        f"name: generate_{producers}x{batch}_{latency}ms",
        "model_profiles:",
        f"  m0: {{ {', '.join(opts)} }}",
        "agents:",
        "  - name: gen",
        "    type: generate",
        "    model_profile: m0",
        f"    producers: {producers}",
        f"    batch_size: {batch}",
        f"    stop: {{ iterations: {iterations} }}",
    ]
    return "\n".join(lines) + "\n"


def critical_path_ms(agents):
    """Longest latency-weighted path (agents are listed in a topological order)."""
    finish = {}
    for name, (lat, deps) in agents.items():
        finish[name] = lat + max((finish[d] for d in deps), default=0)
    return max(finish.values())


def barrier_ms(agents):
    """Time of a phase-barrier scheduler: sum over phases of the slowest agent of the phase."""
    depth = {}
    for name, (_, deps) in agents.items():
        depth[name] = 1 + max((depth[d] for d in deps), default=-1)
    phases = {}
    for name, (lat, _) in agents.items():
        phases[depth[name]] = max(phases.get(depth[name], 0), lat)
    return sum(phases.values())


# --------------------------------------------------------------------------- measuring


def maxrss_bytes(value):
    # Linux reports KiB, macOS bytes.
    return value if sys.platform == "darwin" else value * 1024


LAUNCHER = None  # path of the compiled rusage_exec helper, set in main()


def build_launcher():
    """Compiles bench/rusage_exec.rs with plain rustc (no crates) into target/bench/."""
    src = os.path.join(ROOT, "bench", "rusage_exec.rs")
    out_dir = os.path.join(ROOT, "target", "bench")
    exe = os.path.join(out_dir, "rusage_exec")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        os.makedirs(out_dir, exist_ok=True)
        subprocess.run(["rustc", "--edition", "2021", "-O", src, "-o", exe], check=True)
    return exe


def run_once(argv, stdin_data=b"", cwd=None, capture=False):
    """Runs argv to completion; returns (wall seconds, peak RSS bytes, exit code, stderr,
    stdout bytes if `capture` else None).

    Goes through the rusage_exec launcher when available: measured from Python, a child's
    ru_maxrss would include the Python process's own RSS (see bench/rusage_exec.rs)."""
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as ferr, \
            tempfile.TemporaryFile() as fout, tempfile.NamedTemporaryFile(delete=False) as fres:
        fin.write(stdin_data)
        fin.seek(0)
        full = [LAUNCHER, fres.name] + argv if LAUNCHER else argv
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdin=fin, stdout=fout if capture else subprocess.DEVNULL,
                                stderr=ferr, cwd=cwd)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        ferr.seek(0)
        err = ferr.read().decode(errors="replace")
        out = None
        if capture:
            fout.seek(0)
            out = fout.read()
    try:
        if LAUNCHER:
            with open(fres.name) as f:
                fields = f.read().split()
            if len(fields) == 3:
                return int(fields[0]) / 1e9, maxrss_bytes(int(fields[1])), int(fields[2]), err, out
        return wall, maxrss_bytes(ru.ru_maxrss), proc.returncode, err, out
    finally:
        os.unlink(fres.name)


def measure(argv, reps, stdin_data=b"", warmup=1, cwd=None, check=None, server=None):
    """`check(stdout bytes)` returns an error message or None and is applied to every run;
    with a `server` (FakeServer), its counters are reset before and read after every run."""
    walls, rss, stats = [], [], []
    for i in range(warmup + reps):
        if server:
            server.reset()
        wall, peak, rc, err, out = run_once(argv, stdin_data, cwd, capture=check is not None)
        if rc != 0:
            sys.exit(f"error: {' '.join(argv)} exited with {rc}\n{err[-2000:]}")
        problem = check(out) if check else None
        if problem:
            sys.exit(f"error: {' '.join(argv)}: {problem}\n{err[-2000:]}")
        if i >= warmup:
            walls.append(wall * 1000.0)
            rss.append(peak / MIB)
            if server:
                stats.append(server.stats())
    r = {
        "reps": reps,
        "wall_ms_median": round(statistics.median(walls), 1),
        "wall_ms_min": round(min(walls), 1),
        "wall_ms_max": round(max(walls), 1),
        "rss_mib_median": round(statistics.median(rss), 1),
        "rss_mib_max": round(max(rss), 1),
    }
    if server:
        col = lambda k: [s[k] for s in stats if s.get(k) is not None]
        r["server"] = {
            "requests_per_run": sorted(set(col("requests"))),
            "errors": sum(col("errors")),
            "peak_in_flight_median": statistics.median(col("peak_in_flight")),
            "peak_in_flight_max": max(col("peak_in_flight")),
            "connections_per_run_median": statistics.median(col("connections")),
            "arrival_spread_ms_median": round(statistics.median(col("arrival_spread_ms") or [0]), 1),
            "busy_span_ms_median": round(statistics.median(col("busy_span_ms") or [0]), 1),
        }
    return r


def check_totals(expected):
    """A check for `--output json`: every one of the `expected` agents succeeded."""
    def check(out):
        try:
            totals = json.loads(out)["totals"]
        except (ValueError, KeyError, TypeError) as e:
            return f"cannot read the JSON document ({e}): {out[:300]!r}"
        if totals.get("succeeded") != expected or totals.get("agents") != expected:
            return f"expected {expected} agents to succeed, totals: {totals}"
        return None
    return check


def collect_generate(expected_calls, sink):
    """A check for a generate run with `--output json`: the node made `expected_calls` calls
    and stopped on `iterations`; appends the node's metrics to `sink`."""
    def check(out):
        try:
            doc = json.loads(out)
            agent = doc["agents"][0]
            m = agent["metrics"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return f"cannot read the generate metrics ({e}): {out[:300]!r}"
        if agent.get("status") != "succeeded" or m.get("calls") != expected_calls \
                or m.get("stop_reason") != "iterations" or m.get("failed_calls"):
            return (f"expected {expected_calls} successful calls stopped by iterations, got "
                    f"status {agent.get('status')}, calls {m.get('calls')}, failed "
                    f"{m.get('failed_calls')}, stop_reason {m.get('stop_reason')}")
        sink.append({k: m[k] for k in ("uam", "unique", "candidates", "uniqueness_ratio",
                                       "calls", "elapsed_ms")})
        return None
    return check


class FakeServer:
    """bench/fake_openai.py as a subprocess: started on a free port, stopped by stop()."""

    def __init__(self, delay_ms):
        script = os.path.join(ROOT, "bench", "fake_openai.py")
        self.proc = subprocess.Popen(
            [sys.executable, script, "--delay-ms", str(delay_ms), "--quiet"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(10)
        if not line or not line[0].startswith("PORT "):
            self.stop()
            raise RuntimeError(f"fake_openai.py did not report its port (got {line!r})")
        self.port = int(line[0].split()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    # No proxy for 127.0.0.1, whatever the environment says.
    _opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=b"" if method == "POST" else None)
        with self._opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self):
        s = self._call("GET", "/stats")
        s["connections"] -= 1  # this /stats request's own connection
        return s

    def reset(self):
        return self._call("POST", "/reset")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _capture(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def fmt_ms(ms):
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def build():
    t0 = time.perf_counter()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    ap.add_argument("--no-build", action="store_true", help="use the existing target/release/orc")
    ap.add_argument("--orc", default=os.path.join(ROOT, "target", "release", "orc"),
                    help="binary to benchmark (default: target/release/orc)")
    ap.add_argument("--keep", metavar="DIR", help="write the generated ensembles to DIR and keep them")
    ap.add_argument("--no-http", action="store_true",
                    help="skip the cases against the fake OpenAI-compatible server")
    ap.add_argument("--generate", action=argparse.BooleanOptionalAction, default=True,
                    help="run the `type: generate` cases (default; --no-generate skips them)")
    ap.add_argument("--only-durable", action="store_true",
                    help="run only the durable-run cases (store on vs off, 100k agents, "
                         "1,000,000 --each-line inputs)")
    ap.add_argument("--each-line-inputs", type=int, default=1_000_000, metavar="N",
                    help="lines for the --each-line case (default 1,000,000)")
    ap.add_argument("--only-generate", action="store_true",
                    help="run only the `type: generate` cases")
    args = ap.parse_args()
    if args.only_generate and not args.generate:
        ap.error("--only-generate and --no-generate exclude each other")

    log = sys.stderr if args.json else sys.stdout
    reps = 3 if args.quick else 7
    big_reps = 2 if args.quick else 5
    help_reps = 10 if args.quick else 20

    if not args.no_build:
        print("building release binary (cargo build --release --quiet) ...", file=log, flush=True)
        try:
            secs = build()
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"error: the release build failed ({e}); fix it or pass --no-build")
        print(f"  built in {secs:.1f} s", file=log)
    global LAUNCHER
    try:
        LAUNCHER = build_launcher()
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"warning: cannot build bench/rusage_exec.rs ({e}); peak RSS will include "
              "this Python process's own RSS", file=sys.stderr)
    orc = args.orc
    if not os.access(orc, os.X_OK):
        sys.exit(f"error: {orc} is not executable")

    tmp_ctx = None
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        tmp = args.keep
    else:
        tmp_ctx = tempfile.TemporaryDirectory(prefix="orc-bench-")
        tmp = tmp_ctx.name

    def write(name, text):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # Keep orc from picking up a project/user config of the machine running the bench, and
    # give it a run store of its own (on, as by default) instead of the user's.
    env_cwd = tmp
    os.environ["XDG_DATA_HOME"] = os.path.join(tmp, "data")
    os.environ.pop("ORC_STORE", None)
    inp = b"benchmark input\n"
    invoke = lambda path: [orc, "invoke", path, "--quiet", "--color", "never"]
    results = []

    def case(key, title, argv, n_reps, stdin_data=b"", ref=None, agents=None, barrier=None,
             check=None, server=None, target=None):
        print(f"  {title} ...", file=log, flush=True)
        r = measure(argv, n_reps, stdin_data, cwd=env_cwd, check=check, server=server)
        r.update({"case": key, "title": title})
        if agents is not None:
            r["agents"] = agents
        if target is not None:
            r["target_ms"] = target
            r["target_met"] = r["wall_ms_median"] < target
        if ref is not None:
            r["critical_path_ms"] = ref
            r["ratio_median"] = round(r["wall_ms_median"] / ref, 3)
            r["overhead_ms_median"] = round(r["wall_ms_median"] - ref, 1)
            r["overhead_ms_min"] = round(r["wall_ms_min"] - ref, 1)
        if barrier is not None:
            r["barrier_ms"] = barrier
            r["vs_barrier_median"] = round(r["wall_ms_median"] / barrier, 3)
        results.append(r)
        return r

    print(f"running (reps={reps}, big reps={big_reps}, help reps={help_reps}) ...", file=log)

    if args.only_durable:
        run_durable_cases(args, case, write, invoke, inp, big_reps)
    else:
        if not args.only_generate:
            run_invoke_cases(args, log, case, write, invoke, inp, reps, big_reps, help_reps, orc)
            run_durable_cases(args, case, write, invoke, inp, big_reps)

        # 8-9. `type: generate`: orc's own cost a call, and UAM against the physical limit
        if args.generate:
            run_generate_cases(case, write, orc, reps, big_reps)

    if tmp_ctx:
        tmp_ctx.cleanup()

    report(args, results, log, orc)


def run_invoke_cases(args, log, case, write, invoke, inp, reps, big_reps, help_reps, orc):
    """Cases 1-7: the scheduler on mock agents, validation, start-up, and HTTP."""
    # 1. fan-in 16 -> 4 -> 1
    text, ag = gen_fan_in(200)
    p = write("fan_in.yaml", text)
    case("fan_in", "invoke 16->4->1 @200ms", invoke(p), reps, inp,
         ref=critical_path_ms(ag), agents=len(ag), barrier=barrier_ms(ag))

    # 2. skewed DAG
    text, ag = gen_skewed()
    p = write("skewed.yaml", text)
    case("skewed", "invoke skewed (1000 || 5x150, +200)", invoke(p), reps, inp,
         ref=critical_path_ms(ag), agents=len(ag), barrier=barrier_ms(ag))

    # 3. wide single phase
    for n in (1000, 10000):
        text, ag = gen_flat(n, 200)
        p = write(f"flat_{n}.yaml", text)
        case(f"flat_{n}", f"invoke {n} independent @200ms", invoke(p),
             reps if n <= 1000 else big_reps, inp, ref=critical_path_ms(ag), agents=n)

    # 4. validate a 10k-agent file
    text, ag = gen_mixed(10000)
    p = write("mixed_10000.yaml", text)
    case("validate_10000", "validate 10000 agents (mixed deps)", [orc, "validate", p, "--color", "never"],
         big_reps, agents=len(ag))

    # 5. start-up
    case("help", "orc --help (start-up)", [orc, "--help"], help_reps)

    # 6-7. the same shapes over HTTP, against bench/fake_openai.py (200 ms per request)
    if not args.no_http:
        # reqwest honours HTTP(S)_PROXY: keep the loopback server out of any proxy.
        for var in ("NO_PROXY", "no_proxy"):
            os.environ[var] = ",".join(filter(None, [os.environ.get(var), "127.0.0.1", "localhost"]))
        try:
            server = FakeServer(200)
        except (OSError, RuntimeError) as e:
            sys.exit(f"error: cannot start bench/fake_openai.py ({e}); pass --no-http to skip")
        print(f"  (fake OpenAI-compatible server on {server.base_url}, 200 ms per request)",
              file=log, flush=True)
        try:
            invoke_json = lambda path: invoke(path) + ["--output", "json"]
            text, ag = gen_fan_in(200, base_url=server.base_url)
            p = write("http_fan_in.yaml", text)
            case("http_fan_in", "http 16->4->1 @200ms", invoke_json(p), reps, inp,
                 ref=critical_path_ms(ag), agents=len(ag), barrier=barrier_ms(ag),
                 check=check_totals(len(ag)), server=server, target=750)
            text, ag = gen_flat(1000, 200, base_url=server.base_url)
            p = write("http_flat_1000.yaml", text)
            case("http_flat_1000", "http 1000 independent @200ms", invoke_json(p), reps, inp,
                 ref=critical_path_ms(ag), agents=len(ag), check=check_totals(len(ag)),
                 server=server, target=2000)
        finally:
            server.stop()


def run_durable_cases(args, case, write, invoke, inp, big_reps):
    """Cases 10-12: what the run store costs (10,000 agents, store on vs off, both measured in
    this one bench run), 100,000 agents' time and peak RSS with the store on, and the peak
    RSS of 1,000,000 `--each-line` inputs (one stored run each)."""
    text, ag = gen_flat(10000, 200)
    p = write("flat_10000.yaml", text)
    on = case("store_on_10000", "invoke 10000 @200ms, store on", invoke(p), big_reps, inp,
              ref=critical_path_ms(ag), agents=len(ag))
    off = case("store_off_10000", "invoke 10000 @200ms, --no-store", invoke(p) + ["--no-store"],
               big_reps, inp, ref=critical_path_ms(ag), agents=len(ag))
    on["store_overhead_ratio"] = round(on["wall_ms_median"] / off["wall_ms_median"], 3)

    text, ag = gen_flat(100000, 200)
    p = write("flat_100000.yaml", text)
    # The default --max-concurrency (10,000) alone makes 100,000 x 200 ms take 2 s: the
    # second case lifts it to show orc's own cost.
    case("flat_100000", "invoke 100000 @200ms, store on", invoke(p), big_reps, inp,
         ref=critical_path_ms(ag) * 10, agents=len(ag))
    case("flat_100000_default_off", "invoke 100000 @200ms, --no-store",
         invoke(p) + ["--no-store"], big_reps, inp, ref=critical_path_ms(ag) * 10,
         agents=len(ag))
    case("flat_100000_c", "invoke 100000 @200ms, store on, -c 100000",
         invoke(p) + ["--max-concurrency", "100000"], big_reps, inp,
         ref=critical_path_ms(ag), agents=len(ag))
    case("flat_100000_off", "invoke 100000 @200ms, --no-store, -c 100000",
         invoke(p) + ["--no-store", "--max-concurrency", "100000"], big_reps, inp,
         ref=critical_path_ms(ag), agents=len(ag))

    n = args.each_line_inputs
    lines = "".join(f"input line {i}\n" for i in range(n)).encode()
    p = write("one_agent.yaml", "\n".join(_header("one", {"p": 0}, "p") + _agent("a")) + "\n")
    case("each_line", f"invoke --each-line, {n} inputs @0ms, store on", invoke(p) + ["--each-line"],
         1, lines)


# The generate cases. Zero latency: 8 producers x 6,000 iterations = 48,000 calls, about 1 s
# of node time on a 2-CPU machine. 200 ms: 10 iterations a producer, so the ideal is 2,000 ms.
GEN_PRODUCERS = 8
GEN_BATCH = 10
GEN_FAST_ITERATIONS = 6000
GEN_SLOW_LATENCY = 200
GEN_SLOW_ITERATIONS = 10


def run_generate_cases(case, write, orc, reps, big_reps):
    """Case 8: calls a second orc sustains with a zero-latency mock; case 9: UAM at 200 ms
    against producers x batch / latency, for three vocabularies."""
    gen = lambda path: [orc, "invoke", path, "kitchen tools", "--quiet", "--color", "never",
                        "--output", "json"]
    p, it, b = GEN_PRODUCERS, GEN_FAST_ITERATIONS, GEN_BATCH
    calls = p * it
    runs = []
    r = case("gen_overhead", f"generate {p}x{b} @0ms ({calls} calls)",
             gen(write("generate_0ms.yaml", gen_generate(p, it, b, 0, vocabulary=64000))),
             reps, check=collect_generate(calls, runs))
    summarize_generate(r, runs, calls)

    lat, it = GEN_SLOW_LATENCY, GEN_SLOW_ITERATIONS
    calls = p * it
    ideal = it * lat
    limit_per_min = p * b / (lat / 1000.0) * 60.0
    for key, label, vocab, zipf in [
        ("gen_uam_uniform", "vocab 64000, uniform", 64000, 0),
        ("gen_uam_large", "vocab 64000, zipf 1", 64000, None),
        ("gen_uam_default", "vocab 2000 (default), zipf 1", None, None),
    ]:
        runs = []
        r = case(key, f"generate {p}x{b} @{lat}ms, {label}",
                 gen(write(f"{key}.yaml", gen_generate(p, it, b, lat, vocab, zipf))),
                 big_reps, ref=ideal, check=collect_generate(calls, runs))
        summarize_generate(r, runs, calls, limit_per_min)


def summarize_generate(r, runs, calls, limit_per_min=None):
    """Adds the medians of the node's metrics (and rates derived from them) to a result."""
    runs = runs[-r["reps"]:]  # the check also saw the warm-up run, first
    med = lambda k: statistics.median(x[k] for x in runs)
    elapsed = med("elapsed_ms")
    g = {
        "calls": calls,
        "node_elapsed_ms_median": elapsed,
        "calls_per_sec_node": round(statistics.median(
            x["calls"] / max(x["elapsed_ms"], 1) * 1000.0 for x in runs)),
        "calls_per_sec_wall": round(calls / (r["wall_ms_median"] / 1000.0)),
        "unique_median": med("unique"),
        "candidates_median": med("candidates"),
        "uniqueness_ratio_median": med("uniqueness_ratio"),
        "uam_median": round(med("uam"), 1),
    }
    if limit_per_min:
        g["limit_per_min"] = round(limit_per_min)
        g["uam_vs_limit"] = round(g["uam_median"] / limit_per_min, 4)
        g["candidates_per_min_median"] = round(statistics.median(
            x["candidates"] / max(x["elapsed_ms"], 1) * 60000.0 for x in runs), 1)
        g["candidates_vs_limit"] = round(g["candidates_per_min_median"] / limit_per_min, 4)
    r["generate"] = g
    return r


def report(args, results, log, orc):
    # ----------------------------------------------------------------------- report
    cols = ["case", "agents", "wall med", "wall min", "crit path", "ratio", "overhead", "barrier",
            "vs barrier", "RSS med"]
    rows = []
    for r in results:
        rows.append([
            r["title"],
            str(r.get("agents", "")),
            fmt_ms(r["wall_ms_median"]),
            fmt_ms(r["wall_ms_min"]),
            f"{r['critical_path_ms']} ms" if "critical_path_ms" in r else "",
            f"{r['ratio_median']:.2f}x" if "ratio_median" in r else "",
            f"{r['overhead_ms_median']:+.0f} ms" if "overhead_ms_median" in r else "",
            f"{r['barrier_ms']} ms" if "barrier_ms" in r else "",
            f"{r['vs_barrier_median']:.2f}x" if "vs_barrier_median" in r else "",
            f"{r['rss_mib_median']:.1f} MiB",
        ])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(
        cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
    print(file=log)
    print(fmt(cols), file=log)
    print("  ".join("-" * w for w in widths), file=log)
    for row in rows:
        print(fmt(row), file=log)
    print(file=log)
    print("wall = whole process (spawn to exit); RSS = peak resident set of the child; "
          "barrier = time a phase-barrier scheduler would take (sum of each phase's slowest agent).",
          file=log)

    http = [r for r in results if "server" in r]
    if http:
        cols = ["HTTP case", "target", "wall med", "met", "requests/run", "peak in-flight",
                "connections/run", "arrival spread", "server busy"]
        rows = []
        for r in http:
            sv = r["server"]
            rows.append([
                r["title"],
                f"< {r['target_ms']} ms",
                fmt_ms(r["wall_ms_median"]),
                "yes" if r["target_met"] else "NO",
                "/".join(str(n) for n in sv["requests_per_run"]),
                f"{sv['peak_in_flight_median']:g} (max {sv['peak_in_flight_max']})",
                f"{sv['connections_per_run_median']:g}",
                fmt_ms(sv["arrival_spread_ms_median"]),
                fmt_ms(sv["busy_span_ms_median"]),
            ])
        widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
        print(file=log)
        print(fmt(cols), file=log)
        print("  ".join("-" * w for w in widths), file=log)
        for row in rows:
            print(fmt(row), file=log)
        print(file=log)
        print("Server-side medians per run (fake_openai.py counters, reset before each run): "
              "peak in-flight = completion requests being delayed at once; connections = TCP "
              "connections orc opened; arrival spread = first to last request; server busy = "
              "first request to last response. Every run was checked: totals.succeeded == agents.",
              file=log)

    gens = [r for r in results if "generate" in r]
    if gens:
        cols = ["generate case", "calls", "node time", "calls/s node", "calls/s wall", "unique",
                "uniq ratio", "UAM", "limit/min", "UAM/limit", "cands/limit"]
        rows = []
        for r in gens:
            g = r["generate"]
            rows.append([
                r["title"],
                str(g["calls"]),
                fmt_ms(g["node_elapsed_ms_median"]),
                f"{g['calls_per_sec_node']:,}",
                f"{g['calls_per_sec_wall']:,}",
                f"{g['unique_median']:g}",
                f"{g['uniqueness_ratio_median']:.3f}",
                f"{g['uam_median']:,.0f}",
                f"{g['limit_per_min']:,}" if "limit_per_min" in g else "",
                f"{g['uam_vs_limit'] * 100:.1f} %" if "uam_vs_limit" in g else "",
                f"{g['candidates_vs_limit'] * 100:.1f} %" if "candidates_vs_limit" in g else "",
            ])
        widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
        print(file=log)
        print(fmt(cols), file=log)
        print("  ".join("-" * w for w in widths), file=log)
        for row in rows:
            print(fmt(row), file=log)
        print(file=log)
        print("Medians over the runs of the node's own metrics (--output json): node time = "
              "metrics.elapsed_ms; calls/s node = metrics.calls / elapsed; calls/s wall = calls "
              "/ whole-process wall time; limit = producers x batch_size / latency, per minute; "
              "cands/limit = candidates per minute / limit (orc's delivery, whatever the "
              "mock's duplicates).", file=log)

    overhead = [r for r in results if "store_overhead_ratio" in r]
    for r in overhead:
        print(f"store overhead on {r['agents']} agents: {r['store_overhead_ratio']:.2f}x "
              "(median wall, store on / --no-store)", file=log)

    if args.json:
        summary = {
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "orc": orc,
            "orc_version": _capture([orc, "--version"]),
            "git_commit": _capture(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
            "rss_via_launcher": LAUNCHER is not None,
            "quick": args.quick,
            "results": results,
        }
        json.dump(summary, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
