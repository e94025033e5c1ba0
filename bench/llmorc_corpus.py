#!/usr/bin/env python3
"""llm-orc compatibility report: every ensemble shipped inside llm-orchestra, run by `orc`.

Standard library only. Downloads the llm-orchestra wheel with pip into a temporary
directory (its files are AGPL and are never copied into this repository), lays out its two
projects as llm-orc itself uses them, maps every model profile to orc's offline mock, runs
every ensemble through the real `orc` binary and prints, per ensemble, whether it ran clean,
ran with failed agents, or was refused at load, with the reason, then the totals.

How llm-orc uses what the wheel ships, and so how the projects are laid out here:

* `llm_orc/serving_project/` is the packaged project tier (`core/config/packaged.py`): a
  complete `.llm-orc/` directory (config.yaml, ensembles/ with subfolders, profiles/,
  scripts/). It becomes `serving/.llm-orc/`.
* `llm_orc/templates/` is what llm-orc copies into the global configuration on first use
  (`ConfigurationManager.provision`): `global-config.yaml` becomes `config.yaml` and
  `ensembles/*.yaml` the ensembles. It becomes `templates/.llm-orc/`.
* `primitives/...` scripts resolve, in llm-orc, against the installed package
  (`ScriptResolver`, "installed package primitives"), so `ORC_SCRIPT_PATH` points at the
  unpacked `llm_orc/` directory, the parent of `primitives/`.

Profiles are mapped by a generated `.orc/profiles/llm-orc-mock.yaml` in each project that
redefines every profile name of the llm-orc configuration as an instant mock profile; orc's
own `.orc/` profiles take precedence over `.llm-orc/` ones, so nothing else changes.

    python3 bench/llmorc_corpus.py                 # builds target/release/orc, then ~30 s of runs
    python3 bench/llmorc_corpus.py --no-build      # use the existing release binary
    python3 bench/llmorc_corpus.py --orc PATH      # or this binary
    python3 bench/llmorc_corpus.py --pythonpath    # scripts may `import llm_orc` (as installed)
    python3 bench/llmorc_corpus.py --keep DIR      # keep the laid-out projects in DIR
    python3 bench/llmorc_corpus.py --json          # JSON summary on stdout
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = "0.25.2"
# Input for ensembles without a `default_task`.
GENERIC_INPUT = "Review this function: def add(a, b): return a - b"


def download(version, into):
    """The unpacked wheel's root directory (holding `llm_orc/`)."""
    wheels = os.path.join(into, "wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         f"llm-orchestra=={version}", "-d", wheels],
        check=True,
    )
    [wheel] = [f for f in os.listdir(wheels) if f.endswith(".whl")]
    root = os.path.join(into, "unpacked")
    with zipfile.ZipFile(os.path.join(wheels, wheel)) as z:
        z.extractall(root)
    return root


def layout(package, into):
    """Lays out the two projects; returns [(project name, project root)]."""
    serving = os.path.join(into, "serving")
    shutil.copytree(os.path.join(package, "serving_project"), os.path.join(serving, ".llm-orc"))
    templates = os.path.join(into, "templates")
    dot = os.path.join(templates, ".llm-orc")
    shutil.copytree(os.path.join(package, "templates", "ensembles"), os.path.join(dot, "ensembles"))
    shutil.copy(os.path.join(package, "templates", "global-config.yaml"),
                os.path.join(dot, "config.yaml"))
    return [("serving", serving), ("templates", templates)]


def profile_names(dot):
    """Every profile name the llm-orc configuration in `dot` defines (a light scan of the
    two file shapes llm-orc reads: `model_profiles:` in config.yaml, and one profile per
    file with a top-level `name:` in profiles/*.yaml)."""
    names = set()
    files = [os.path.join(dot, "config.yaml")]
    pdir = os.path.join(dot, "profiles")
    if os.path.isdir(pdir):
        files += [os.path.join(pdir, f) for f in sorted(os.listdir(pdir)) if f.endswith(".yaml")]
    for path in files:
        if not os.path.isfile(path):
            continue
        in_profiles = False
        with open(path, encoding="utf-8") as f:
            for line in f:
                if re.match(r"^\S", line):
                    in_profiles = line.startswith("model_profiles:")
                    m = re.match(r"^name:\s*[\"']?([^\"'\s#]+)", line)
                    if m:
                        names.add(m.group(1))
                elif in_profiles:
                    m = re.match(r"^  ([A-Za-z0-9_.-]+):\s*(#.*)?$", line)
                    if m:
                        names.add(m.group(1))
    return sorted(names)


PROFILE_REF = re.compile(r"^\s*(?:-\s+)?(?:fallback_)?model_profile:\s*[\"']?([^\"'\s#]+)")


def referenced_profiles(root):
    """Profile names the ensembles of a project use (`model_profile`,
    `fallback_model_profile`)."""
    names = set()
    for _, path in ensembles(root):
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = PROFILE_REF.match(line)
                if m:
                    names.add(m.group(1))
    return names


def map_profiles_to_mock(root):
    """Maps every profile the project defines or its ensembles use to the mock; returns
    (defined, used but defined nowhere in the project)."""
    defined = profile_names(os.path.join(root, ".llm-orc"))
    undefined = sorted(referenced_profiles(root) - set(defined))
    names = sorted(set(defined) | set(undefined))
    os.makedirs(os.path.join(root, ".orc", "profiles"), exist_ok=True)
    with open(os.path.join(root, ".orc", "profiles", "llm-orc-mock.yaml"), "w") as f:
        f.write("# generated by bench/llmorc_corpus.py: every llm-orc profile on the mock\n")
        f.write("model_profiles:\n")
        for name in names:
            f.write(f"  {json.dumps(name)}: {{ provider: mock, latency_ms: 0 }}\n")
    return defined, undefined


def ensembles(root):
    """(name as `orc invoke` takes it, path) of every ensemble file, sorted."""
    base = os.path.join(root, ".llm-orc", "ensembles")
    found = []
    for dirpath, _, files in os.walk(base):
        for f in files:
            if f.endswith((".yaml", ".yml")):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, base)
                found.append((os.path.splitext(rel)[0], path))
    return sorted(found)


# llm-orc's agent keys that run ensembles or scope inputs, reported apart.
CONTROL_KEYS = ("loop", "dispatch", "input_scope")


def uses(path, key):
    """Whether an agent of the file sets `key`."""
    with open(path, encoding="utf-8") as f:
        return any(re.match(rf"^\s+(?:-\s+)?{key}:", line) for line in f)


def has_default_task(path):
    with open(path, encoding="utf-8") as f:
        return any(re.match(r"^(default_task|task):", line) for line in f)


ERROR_LINE = re.compile(r"^\s*(?:×|error:)\s*(.+?)\s*$")
# A long diagnostic message wraps onto lines like "  │ rest of the message".
CONTINUATION = re.compile(r"^\s*│ (.+?)\s*$")


def refusal_reasons(stderr):
    """The error messages of a refused run, in order, without repeats."""
    out = []
    current = None
    for line in stderr.splitlines():
        m = ERROR_LINE.match(line)
        if m:
            current = m.group(1)
            out.append(current)
            continue
        c = CONTINUATION.match(line) if current is not None else None
        if c:
            current = f"{current} {c.group(1)}"
            out[-1] = current
        else:
            current = None
    seen = []
    for reason in out:
        if reason not in seen:
            seen.append(reason)
    return seen


def category(reason):
    """A refusal reason with the specifics (names, paths) taken out, for counting."""
    m = re.match(r"ensemble `[^`]+` uses (.+) that this version of orc", reason)
    if m:
        keys = sorted(set(re.findall(r"`([^`]+)`", m.group(1))))
        return "not run yet: " + ", ".join(f"`{k}`" for k in keys)
    return re.sub(r"`[^`]*`", "`…`", reason)


def run_one(orc, root, name, path, env, timeout, by_path):
    target = os.path.relpath(path, root) if by_path else name
    args = [orc, "--color", "never", "invoke", target, "--output", "json",
            "--timeout", str(timeout)]
    if not has_default_task(path):
        args.append(GENERIC_INPUT)
    try:
        p = subprocess.run(args, cwd=root, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        return {"outcome": "crashed", "reasons": ["no exit within the time limit"]}
    if p.returncode in (0, 1):
        try:
            doc = json.loads(p.stdout)
        except json.JSONDecodeError:
            return {"outcome": "crashed", "reasons": [f"exit {p.returncode} without a JSON result"]}
        failed = [
            {"agent": a["name"], "status": a["status"], "error": (a.get("error") or "")[:300]}
            for a in doc.get("agents", [])
            if a["status"] != "succeeded"
        ]
        outcome = "clean" if p.returncode == 0 else "failed_agents"
        return {"outcome": outcome, "failed": failed, "status": doc.get("status")}
    if p.returncode == 2:
        return {"outcome": "refused", "reasons": refusal_reasons(p.stderr) or [p.stderr.strip()[-300:]]}
    return {"outcome": "crashed", "reasons": [f"exit {p.returncode}: {p.stderr.strip()[-300:]}"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orc", help="orc binary (default: target/release/orc, built first)")
    ap.add_argument("--no-build", action="store_true", help="do not build the release binary")
    ap.add_argument("--version", default=VERSION, help=f"llm-orchestra version ({VERSION})")
    ap.add_argument("--keep", metavar="DIR", help="lay the projects out in DIR and keep them")
    ap.add_argument("--pythonpath", action="store_true",
                    help="put the unpacked wheel on PYTHONPATH, as an installed llm-orc would be")
    ap.add_argument("--by-path", action="store_true",
                    help="invoke each ensemble by its path instead of its name")
    ap.add_argument("--timeout", type=int, default=60, help="seconds per run (60)")
    ap.add_argument("--json", action="store_true", help="JSON summary on stdout")
    args = ap.parse_args()

    orc = args.orc or os.path.join(ROOT, "target", "release", "orc")
    if not args.orc and not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    orc = os.path.abspath(orc)

    work = args.keep or tempfile.mkdtemp(prefix="orc-llmorc-")
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
    log = sys.stderr if args.json else sys.stdout
    try:
        package = os.path.join(download(args.version, work), "llm_orc")
        projects = layout(package, work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORC_")}
        env["ORC_SCRIPT_PATH"] = package
        env["NO_COLOR"] = "1"
        # orc's user configuration must not leak in.
        env["XDG_CONFIG_HOME"] = os.path.join(work, "xdg")
        if args.pythonpath:
            env["PYTHONPATH"] = os.path.dirname(package)
        results = []
        undefined_profiles = {}
        for project, root in projects:
            defined, undefined = map_profiles_to_mock(root)
            undefined_profiles[project] = undefined
            print(f"{project}: {len(defined)} profiles mapped to the mock"
                  + (f", and {len(undefined)} its ensembles use but it does not define: "
                     + ", ".join(undefined) if undefined else ""), file=log)
            for name, path in ensembles(root):
                r = run_one(orc, root, name, path, env, args.timeout, args.by_path)
                r.update(project=project, ensemble=name,
                         keys=[k for k in CONTROL_KEYS if uses(path, k)])
                results.append(r)
                print(f"  {r['outcome']:<13} {project}/{name}", file=log)
                for reason in r.get("reasons", []):
                    print(f"      {reason}", file=log)
                for f in r.get("failed", []):
                    print(f"      {f['agent']}: {f['status']} {f['error'][:160]}", file=log)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    totals = collections.Counter(r["outcome"] for r in results)
    refusals = collections.Counter(
        category(r["reasons"][0]) for r in results if r["outcome"] == "refused"
    )
    # Refused only for keys this version validates but does not run yet, by key.
    blocked = collections.Counter()
    for r in results:
        if r["outcome"] == "refused" and len(r["reasons"]) == 1:
            m = re.match(r"ensemble `[^`]+` uses (.+) that this version", r["reasons"][0])
            if m:
                for key in sorted(set(re.findall(r"`([^`]+)`", m.group(1)))):
                    blocked[key] += 1
    # How the ensembles with llm-orc's control keys ran, by key.
    by_key = {
        key: collections.Counter(r["outcome"] for r in results if key in r["keys"])
        for key in CONTROL_KEYS
    }
    print(file=log)
    print(f"{len(results)} ensembles: {totals['clean']} ran clean, "
          f"{totals['failed_agents']} ran with failed agents, {totals['refused']} refused"
          + (f", {totals['crashed']} crashed" if totals["crashed"] else ""), file=log)
    if refusals:
        print("refused, by first reason:", file=log)
        for reason, n in refusals.most_common():
            print(f"  {n:>3}  {reason}", file=log)
    if blocked:
        print("refused only for keys not run yet, by key (an ensemble may count twice): "
              + ", ".join(f"`{k}` {n}" for k, n in sorted(blocked.items())), file=log)
    for key, outcomes in by_key.items():
        n = sum(outcomes.values())
        print(f"`{key}`: {n} ensemble{'' if n == 1 else 's'}"
              + (": " + ", ".join(f"{c} {o}" for o, c in sorted(outcomes.items())) if n else ""),
              file=log)
    if args.json:
        json.dump({"totals": dict(totals), "refusals": dict(refusals),
                   "blocked_by_key": dict(blocked), "undefined_profiles": undefined_profiles,
                   "control_keys": {k: dict(v) for k, v in by_key.items()},
                   "results": results},
                  sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
