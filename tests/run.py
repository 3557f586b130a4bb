#!/usr/bin/env python3
"""Run every walua test suite and print "N passed, N failed" last.

Suites, in order:
  unit         obj/tests/test_* (C, one per module); each prints its own
               "N passed, N failed" line, which is added up here
  lua          tests/lua/test_*.lua inside a real sandbox (obj/tests/lua_runner)
  integration  tests/fakes/test_*.py (the fake provider APIs check
               themselves), then tests/integration/test_*.py: every function
               named test_* in them, each against a real daemon on a free port;
               a module with PG_AGAIN = True runs a second time as
               "name[pg]", each daemon on a database of a throwaway
               PostgreSQL cluster (tests marked @sqlite_only skipped)

Environment: WALUA_BIN (the daemon, default ./walua), WALUA_TESTBIN (the
folder of the C test programs, default obj/tests), WALUA_TESTS (a
substring: run only the tests whose name contains it).
Exit status 1 when anything failed.

The integration tests' temporary folders (tempfile's, and TMPDIR's for
what they start: walua, chromium) go in one folder of the run,
walua-run-*: a test that passes has its folders removed after it; a test
that fails keeps them, and the run names them.  What outlives one test
(the shared PostgreSQL cluster) goes in the usual temporary folder
(WALUA_SHARED_TMP) and removes itself.
"""
import atexit
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
TESTBIN = os.environ.get("WALUA_TESTBIN", "obj/tests")
ONLY = os.environ.get("WALUA_TESTS", "")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed")

passed = failed = 0
failures = []


def count_program(name, argv, timeout):
    """Run a test program that prints its own summary line; add it up."""
    global passed, failed
    try:
        p = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        failed += 1
        failures.append(name + ": timed out")
        print("FAIL %s: timed out after %ds" % (name, timeout))
        return
    out = p.stdout.splitlines()
    for line in out:
        if line.startswith("FAIL"):
            print(name + ": " + line)
            failures.append(name + ": " + line)
    m = None
    for line in reversed(out):
        m = SUMMARY.match(line)
        if m:
            break
    if m is None or p.returncode not in (0, 1):
        failed += 1
        failures.append(name + ": no summary (exit %d)" % p.returncode)
        print("FAIL %s: no summary line (exit %d)\n%s\n%s" % (
            name, p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
        return
    passed += int(m.group(1))
    failed += int(m.group(2))
    if int(m.group(2)) and p.stderr:
        print(p.stderr[-2000:])
    print("%-40s %s" % (name, m.group(0)))


def unit_suite():
    if not os.path.isdir(TESTBIN):
        return
    for f in sorted(os.listdir(TESTBIN)):
        if f.startswith("test_") and ONLY in f:
            count_program("unit/" + f, [os.path.join(TESTBIN, f)], 120)


def lua_suite():
    runner = os.path.join(TESTBIN, "lua_runner")
    for f in sorted(os.listdir("tests/lua")):
        if f.startswith("test_") and f.endswith(".lua") and ONLY in f:
            count_program("lua/" + f, [runner, "tests/lua/testlib.lua",
                                       "tests/lua/" + f], 120)


SCRATCH = None


def scratch_start():
    global SCRATCH
    os.environ["WALUA_SHARED_TMP"] = tempfile.gettempdir()
    SCRATCH = tempfile.mkdtemp(prefix="walua-run-")
    os.chmod(SCRATCH, 0o1777)   # as /tmp: the tests run programs as others
    tempfile.tempdir = SCRATCH
    os.environ["TMPDIR"] = SCRATCH
    atexit.register(scratch_end)


def scratch_end():
    try:
        os.rmdir(SCRATCH)
    except OSError:
        print("kept (failed tests' folders): %s" % SCRATCH)


def tidy(before, ok, name):
    """Remove the folders a passing test made; name a failing test's."""
    for n in sorted(set(os.listdir(SCRATCH)) - before):
        path = os.path.join(SCRATCH, n)
        if ok:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        else:
            print("     %s kept %s" % (name, path))


def integration_suite():
    global passed, failed
    scratch_start()
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    sys.path.insert(0, os.path.join(ROOT, "tests", "fakes"))
    files = [("tests/fakes", f) for f in sorted(os.listdir("tests/fakes"))]
    files += [("tests/integration", f)
              for f in sorted(os.listdir("tests/integration"))]
    for folder, f in files:
        if not (f.startswith("test_") and f.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(f[:-3],
                                                      folder + "/" + f)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except Exception:
            failed += 1
            failures.append(f + ": import failed")
            print("FAIL %s: import failed\n%s" % (f, traceback.format_exc()))
            continue
        run_module(f[:-3], mod)
        if getattr(mod, "PG_AGAIN", False):
            # the same tests on PostgreSQL (harness.PG): see harness.py
            import harness
            harness.PG = True
            try:
                run_module(f[:-3] + "[pg]", mod, pg=True)
            finally:
                harness.PG = False
    tempfile.tempdir = None
    os.environ["TMPDIR"] = os.environ["WALUA_SHARED_TMP"]


def run_module(label, mod, pg=False):
    global passed, failed
    for name in [n for n in dir(mod) if n.startswith("test_")]:
        full = "%s::%s" % (label, name)
        if ONLY and ONLY not in full:
            continue
        fn = getattr(mod, name)
        if pg and getattr(fn, "sqlite_only", False):
            print("skip %s (reads or breaks the SQLite file)" % full)
            continue
        t0 = time.time()
        before = set(os.listdir(SCRATCH))
        try:
            fn()
        except Exception:
            failed += 1
            failures.append(full)
            print("FAIL %s (%.1fs)\n%s" % (full, time.time() - t0,
                                           traceback.format_exc()))
            tidy(before, False, full)
            continue
        passed += 1
        print("ok   %s (%.1fs)" % (full, time.time() - t0))
        tidy(before, True, full)


def fuzz_suite():
    """Each fuzz target: its regressions replayed, then ~5 s of fuzzing
    (tests/fuzz/fuzz.mk); one test per target."""
    global passed, failed
    if os.environ.get("WALUA_NO_FUZZ") == "1":
        return
    odir = os.environ.get("WALUA_ODIR", "obj")
    for t in ("normalize", "auth", "token", "config"):
        name = "fuzz/" + t
        if ONLY and ONLY not in name:
            continue
        t0 = time.time()
        try:
            p = subprocess.run(["make", "--no-print-directory", "-s",
                                "ODIR=" + odir, "fuzz-smoke-" + t],
                               capture_output=True, text=True, timeout=300)
            ok = p.returncode == 0
            out = p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            ok, out = False, "timed out"
        if ok:
            passed += 1
            print("ok   %s (%.1fs)" % (name, time.time() - t0))
        else:
            failed += 1
            failures.append(name)
            print("FAIL %s (%.1fs)\n%s" % (name, time.time() - t0,
                                           out[-3000:]))


def bench_suite():
    """make bench-smoke: the benchmark harness still runs (a few seconds,
    one round, no targets asserted)."""
    global passed, failed
    if os.environ.get("WALUA_NO_BENCH") == "1" or (ONLY and
                                                   ONLY not in "bench"):
        return
    t0 = time.time()
    env = dict(os.environ)
    if "WALUA_BIN" in env:
        env["BIN"] = env["WALUA_BIN"]
    try:
        p = subprocess.run(["make", "--no-print-directory", "-s",
                            "bench-smoke"] + (["BIN=" + env["WALUA_BIN"],
                                               "ODIR=" + env.get(
                                                   "WALUA_ODIR", "obj")]
                                              if "WALUA_BIN" in env else []),
                           capture_output=True, text=True, timeout=300,
                           env=env)
        ok, out = p.returncode == 0, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        ok, out = False, "timed out"
    if ok:
        passed += 1
        print("ok   bench/smoke (%.1fs)" % (time.time() - t0))
        print("\n".join("     " + l for l in out.splitlines()
                        if l.startswith("|"))[:3000])
    else:
        failed += 1
        failures.append("bench/smoke")
        print("FAIL bench/smoke (%.1fs)\n%s" % (time.time() - t0,
                                                out[-3000:]))


def main():
    t0 = time.time()
    unit_suite()
    lua_suite()
    fuzz_suite()
    integration_suite()
    bench_suite()
    if failures:
        print("\nfailed:\n  " + "\n  ".join(failures))
    print("time: %.0fs" % (time.time() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
