#!/usr/bin/env python3
"""How long `bext-lock run sqlite -- true` takes against `flock(1) FILE true`.

Rerun it any time (after `make release`, or `make bench-build`):

    python3 bench/startup.py [--build target/release] [--runs 20] [--dir /dev/shm]
                             [--baseline OLD]

It installs the release build into a scratch prefix with `make install`
(plugins and CLI stripped, debug info in .debug/), puts the SQLite file and
the flock file in --dir (tmpfs by default, so neither side waits for a
disk), then runs the two commands alternately, --runs times each, and
prints the median wall time and CPU time (user + system of the process and
all its descendants, the watchdog included) of each, and their ratio. It also times the
pieces of a run:

* process start: `true`, and `bext-lock --version` (the CLI's own start:
  the dynamic linker, argument parsing);
* plugin search and dlopen: `bext-lock describe sqlite` by name and by
  path, against `--version`;
* create + acquire, then command + release, then exit: the moments
  `bext-lock run -v` prints "plugin ...", "acquired ..." and "released ...";
* the same run with the plugin as built (not stripped);

and prints the file sizes as built and as installed. With --baseline OLD
(another build folder, or a `make install` prefix holding bin/bext-lock),
that older bext-lock runs in the same alternation, so a change is measured
against its baseline in one run (the machine's load shifts between runs).
When hyperfine is
installed its own (not alternating) figures are printed too, as a
cross-check. The output is plain text; `make bench` embeds it in
docs/BENCHMARKS.md.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PLUGIN = "libbext_locking_sqlite.so"


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def become_subreaper():
    """Makes the processes a command leaves behind (bext-lock's watchdog
    exits on its own after bext-lock, which does not wait for it) children
    of this script, so their CPU time is counted too. Linux only."""
    try:
        import ctypes

        PR_SET_CHILD_SUBREAPER = 36
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(limit=5.0):
    """Waits for every process left behind by the last command, for at
    most `limit` seconds (one that stays is reported, not waited for)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                sys.exit("a process left behind by the command is still running after "
                         f"{limit:.0f} s (bext-lock's watchdog exits at once when told)")
            time.sleep(0.0002)


def timed(argv, env=None):
    """Wall and CPU seconds of one run; fails loudly on a non-zero exit.
    The wall time ends when the command has exited and every process
    holding its stderr has closed it (as a shell pipe or cron would wait);
    the CPU time includes processes it left behind."""
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t0
    reap_orphans()
    cpu = children_cpu() - cpu0
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return wall, cpu


def phases(argv, env=None):
    """Moments (seconds from the spawn) at which `run -v` prints its lines."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    marks = {}
    for line in p.stderr:
        now = time.perf_counter() - t0
        text = line.decode(errors="replace")
        for key, word in (("loaded", "bext-lock: plugin "), ("acquired", "bext-lock: acquired "),
                          ("released", "bext-lock: released ")):
            if text.startswith(word) and key not in marks:
                marks[key] = now
    p.wait()
    marks["exit"] = time.perf_counter() - t0
    reap_orphans()
    if p.returncode != 0 or len(marks) != 4:
        sys.exit(f"{' '.join(argv)}: exit {p.returncode}, saw {sorted(marks)}")
    return marks


def ms(s):
    return f"{s * 1000:.2f} ms"


def mib(n):
    return f"{n / (1024 * 1024):.1f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.environ.get("BENCH_BUILD", "target/release"))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_STARTUP_RUNS", "20")))
    ap.add_argument("--dir", default=os.environ.get("BENCH_STARTUP_DIR", "/dev/shm"))
    ap.add_argument("--baseline", help="an older build folder or install prefix to alternate with")
    args = ap.parse_args()

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = os.path.abspath(os.path.join(repo, args.build) if not os.path.isabs(args.build) else args.build)
    built_cli, built_plugin = os.path.join(build, "bext-lock"), os.path.join(build, PLUGIN)
    for f in (built_cli, built_plugin):
        if not os.path.isfile(f):
            sys.exit(f"{f} is missing: build first (make release, or make bench-build)")
    subreaper = become_subreaper()
    flock = shutil.which("flock")
    if not flock:
        sys.exit("flock(1) is not installed (util-linux)")

    scratch = tempfile.mkdtemp(prefix="bext-startup-", dir=args.dir)
    try:
        prefix = os.path.join(scratch, "prefix")
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        subprocess.run(["make", "-s", "-C", repo, "install", f"PREFIX={prefix}",
                        f"INSTALL_FROM={build}", "INSTALL_NO_BUILD=1"],
                       check=True, stdout=subprocess.DEVNULL, env=env)
        cli = os.path.join(prefix, "bin", "bext-lock")
        base_cli = None
        if args.baseline:
            base = os.path.abspath(args.baseline)
            if os.path.isfile(os.path.join(base, "bin", "bext-lock")):
                base_cli = os.path.join(base, "bin", "bext-lock")
            else:
                base_prefix = os.path.join(scratch, "baseline")
                subprocess.run(["make", "-s", "-C", repo, "install", f"PREFIX={base_prefix}",
                                f"INSTALL_FROM={base}", "INSTALL_NO_BUILD=1"],
                               check=True, stdout=subprocess.DEVNULL, env=env)
                base_cli = os.path.join(base_prefix, "bin", "bext-lock")
        plugin = os.path.join(prefix, "lib", "bext-locking", PLUGIN)
        # Only the installed folders: no BEXT_PLUGIN_DIR from the caller.
        run_env = {k: v for k, v in os.environ.items() if k != "BEXT_PLUGIN_DIR"}
        db = os.path.join(scratch, "locks.db")
        lockfile = os.path.join(scratch, "flock.lock")
        config = '{"path":"%s"}' % db

        def run_cmd(exe, verbose=False):
            return [exe, "run"] + (["-v"] if verbose else []) + \
                ["sqlite", "--config", config, "--key", "startup", "--", "true"]

        ours, theirs = run_cmd(cli), [flock, lockfile, "true"]
        contenders = [("ours", ours), ("flock", theirs)]
        if base_cli:
            contenders.append(("baseline", run_cmd(base_cli)))
        # Warm-up: creates the database and its schema, fills the page cache.
        for _ in range(3):
            for _, argv in contenders:
                timed(argv, run_env)
        walls = {name: [] for name, _ in contenders}
        cpus = {name: [] for name, _ in contenders}
        for i in range(args.runs):
            order = list(contenders)
            if i % 2:
                order.reverse()
            for name, argv in order:
                w, c = timed(argv, run_env)
                walls[name].append(w)
                cpus[name].append(c)
        med = {k: statistics.median(v) for k, v in walls.items()}
        medc = {k: statistics.median(v) for k, v in cpus.items()}
        ratio = med["ours"] / med["flock"]
        cpu_ratio = medc["ours"] / medc["flock"] if medc["flock"] > 0 else float("nan")

        # The pieces, each the median of --runs fresh processes.
        def median_of(argv, e=run_env):
            return statistics.median(timed(argv, e)[0] for _ in range(args.runs))

        t_true = median_of(["true"])
        t_version = median_of([cli, "--version"])
        t_describe_path = median_of([cli, "describe", plugin])
        t_describe_name = median_of([cli, "describe", "sqlite"])
        marks = [phases(run_cmd(cli, verbose=True), run_env) for _ in range(args.runs)]
        m = {k: statistics.median(x[k] for x in marks) for k in marks[0]}
        built_env = dict(run_env, BEXT_PLUGIN_DIR=build)
        t_built = median_of(run_cmd(built_cli), built_env)

        out = []
        out.append(f"bext-lock run sqlite -- true vs flock FILE true: median of {args.runs} alternating runs each, "
                   f"files in {args.dir}, plugin and CLI installed stripped")
        out.append(f"  wall: bext-lock {ms(med['ours'])}, flock {ms(med['flock'])}: {ratio:.2f}x")
        out.append(f"  cpu:  bext-lock {ms(medc['ours'])}, flock {ms(medc['flock'])}: {cpu_ratio:.2f}x"
                   + ("" if subreaper else " (without processes left behind: no subreaper here)"))
        if base_cli:
            out.append(f"  baseline (--baseline), in the same alternation: wall {ms(med['baseline'])} "
                       f"({med['baseline'] / med['flock']:.2f}x flock), cpu {ms(medc['baseline'])}")
        out.append(f"  same run, plugin and CLI as built (not stripped): {ms(t_built)}")
        out.append(f"where the time goes (medians of {args.runs} fresh processes):")
        out.append(f"  process start, `true`:                         {ms(t_true)}")
        out.append(f"  process start, `bext-lock --version`:          {ms(t_version)}")
        out.append(f"  + dlopen and describe (`describe PATH`):       {ms(t_describe_path - t_version)}")
        out.append(f"  + plugin search (`describe sqlite` - by path): {ms(t_describe_name - t_describe_path)}")
        out.append(f"  run -v: start to \"plugin\" line (start, config, search, dlopen, describe): {ms(m['loaded'])}")
        out.append(f"  run -v: to \"acquired\" (create, signal thread, watchdog process, acquire): {ms(m['acquired'] - m['loaded'])}")
        out.append(f"  run -v: to \"released\" (start `true`, wait for it, release):   {ms(m['released'] - m['acquired'])}")
        out.append(f"  run -v: to exit (teardown):                                     {ms(m['exit'] - m['released'])}")
        out.append("file sizes (as built -> installed stripped, + debug info in .debug/):")
        for name, built, inst in (
            (PLUGIN, built_plugin, plugin),
            ("bext-lock", built_cli, cli),
        ):
            dbg = os.path.join(os.path.dirname(inst), ".debug", os.path.basename(inst) + ".debug")
            out.append(f"  {name}: {mib(os.path.getsize(built))} -> {mib(os.path.getsize(inst))}"
                       f" (+ {mib(os.path.getsize(dbg))} in .debug/)")
        if shutil.which("hyperfine"):
            hf = subprocess.run(
                ["hyperfine", "-N", "--style", "basic", "--warmup", "3", "--runs", str(args.runs),
                 " ".join(ours).replace(config, "'" + config + "'"), " ".join(theirs)],
                capture_output=True, text=True, env=run_env)
            lines = [l for l in hf.stdout.splitlines() if l.strip().startswith(("Time", "Benchmark", "User"))]
            out.append("hyperfine -N (each command's runs back to back, mean ± σ):")
            out.extend("  " + l.strip() for l in lines)
        print("\n".join(out))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
