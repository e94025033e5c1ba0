#!/usr/bin/env python3
"""Benchmarks of the `orc` binary: scheduler overhead, memory, validation and start-up.

Standard library only. Builds the release binary, generates the ensembles into a temporary
directory, runs every case several times and prints median / min wall time and peak RSS of
the child process (from `os.wait4`'s rusage, so no GNU time is needed).

    python3 bench/bench.py            # full run
    python3 bench/bench.py --quick    # fewer repetitions
    python3 bench/bench.py --json     # JSON summary on stdout (table goes to stderr)

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
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024


# --------------------------------------------------------------------------- ensembles


def _header(name, profiles, default):
    lines = [f"name: {name}", "model_profiles:"]
    for pname, latency in profiles.items():
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


def gen_fan_in(latency=200):
    """16 roots -> 4 mids (each on 4 roots) -> 1 final. Critical path = 3 * latency."""
    lines = _header("fan_in_16_4_1", {"p": latency}, "p")
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


def gen_flat(n, latency=200):
    lines = _header(f"flat_{n}", {"p": latency}, "p")
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


def run_once(argv, stdin_data=b"", cwd=None):
    """Runs argv to completion; returns (wall seconds, peak RSS bytes, exit code, stderr).

    Goes through the rusage_exec launcher when available: measured from Python, a child's
    ru_maxrss would include the Python process's own RSS (see bench/rusage_exec.rs)."""
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as ferr, \
            tempfile.NamedTemporaryFile(delete=False) as fres:
        fin.write(stdin_data)
        fin.seek(0)
        full = [LAUNCHER, fres.name] + argv if LAUNCHER else argv
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdin=fin, stdout=subprocess.DEVNULL, stderr=ferr, cwd=cwd)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        ferr.seek(0)
        err = ferr.read().decode(errors="replace")
    try:
        if LAUNCHER:
            with open(fres.name) as f:
                fields = f.read().split()
            if len(fields) == 3:
                return int(fields[0]) / 1e9, maxrss_bytes(int(fields[1])), int(fields[2]), err
        return wall, maxrss_bytes(ru.ru_maxrss), proc.returncode, err
    finally:
        os.unlink(fres.name)


def measure(argv, reps, stdin_data=b"", warmup=1, cwd=None):
    walls, rss = [], []
    for i in range(warmup + reps):
        wall, peak, rc, err = run_once(argv, stdin_data, cwd)
        if rc != 0:
            sys.exit(f"error: {' '.join(argv)} exited with {rc}\n{err[-2000:]}")
        if i >= warmup:
            walls.append(wall * 1000.0)
            rss.append(peak / MIB)
    return {
        "reps": reps,
        "wall_ms_median": round(statistics.median(walls), 1),
        "wall_ms_min": round(min(walls), 1),
        "wall_ms_max": round(max(walls), 1),
        "rss_mib_median": round(statistics.median(rss), 1),
        "rss_mib_max": round(max(rss), 1),
    }


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
    args = ap.parse_args()

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

    # Keep orc from picking up a project/user config of the machine running the bench.
    env_cwd = tmp
    inp = b"benchmark input\n"
    invoke = lambda path: [orc, "invoke", path, "--quiet", "--color", "never"]
    results = []

    def case(key, title, argv, n_reps, stdin_data=b"", ref=None, agents=None, barrier=None):
        print(f"  {title} ...", file=log, flush=True)
        r = measure(argv, n_reps, stdin_data, cwd=env_cwd)
        r.update({"case": key, "title": title})
        if agents is not None:
            r["agents"] = agents
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

    if tmp_ctx:
        tmp_ctx.cleanup()

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
