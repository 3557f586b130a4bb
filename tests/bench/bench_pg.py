#!/usr/bin/env python3
"""bench_pg.py - walua on PostgreSQL beside SQLite (make bench, after
bench.py; make bench-smoke with --smoke).

Three runs of BENCH_SECONDS each, keep-alive Insider text deliveries with
unique message ids (wrk and post.lua, as bench.py), durability normal,
the benchmark's walua config and handler:

  sqlite   one walua on its SQLite file (the baseline, same load)
  pg-1     one walua on a PostgreSQL database
  pg-2     two walua instances on one PostgreSQL database, each driven by
           its own wrk with half the connections

PostgreSQL is a throwaway cluster (tests/integration/pgcluster.py) with
fsync on and its defaults otherwise; a fresh database per run.  Nothing is
pinned: with two cores, walua, PostgreSQL and wrk share both, and the
table says how many cores each used.  For each run: acknowledged events/s
(walua_events_acked_total over the run, all instances), handled/acked once
the backlog drained, CPU per acknowledged event of walua's processes and of
PostgreSQL's (the postmaster's tree), wrk's p99, errors.  The section
"## PostgreSQL: one and two instances" of RESULTS.md is replaced.
"""
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import bench                                    # noqa: E402
import pgcluster                                # noqa: E402

SMOKE = bench.SMOKE
HEAD = bench.PG_HEAD
TARGET = 3000           # events/s acknowledged with two instances


class Walua(bench.Server):
    """bench.py's walua (normal, default workers) on database url."""

    def __init__(self, name, url):
        super().__init__("walua-normal-w2")
        self.label = name
        self.url = url
        self.cpu = ""           # not pinned: see the module's comment

    def command(self):
        argv = super().command()
        if self.url:
            path = argv[-1]
            with open(path) as f:
                conf = f.read()
            conf = conf.replace('database = "bench.db"',
                                'database = "%s"' % self.url)
            with open(path, "w") as f:
                f.write(conf)
        return argv


def wrk(srv, conns, seconds):
    name, _ = bench.SCENARIOS["text-ka"]
    argv = [bench.shutil.which("wrk") or "wrk", "-t1", "-c%d" % conns,
            "-d%gs" % seconds, "--latency", "-s",
            os.path.join(HERE, "post.lua"),
            "http://127.0.0.1:%d/webhooks/insider" % srv.port, "--",
            os.path.join(HERE, name), bench.TOKEN,
            bench.uuid.uuid4().hex[:8], "keep"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wrk_result(p, seconds):
    out, err = p.communicate(timeout=seconds + 60)
    m = re.search(r"^BENCHJSON (\{.*\})$", out, re.M)
    if p.returncode != 0 or not m:
        raise bench.BenchError("wrk failed (%d):\n%s\n%s" % (
            p.returncode, out[-2000:], err[-2000:]))
    return json.loads(m.group(1))


def counters(servers):
    acked = handled = 0
    for s in servers:
        m = bench.metrics(s.admin_port)
        acked += m.get("walua_events_acked_total", 0)
        handled += m.get("walua_events_handled_total", 0)
    return acked, handled


def run(label, urls, pg):
    servers = [Walua(label, u) for u in urls]
    try:
        for s in servers:
            s.start()
        # warm-up: a second of load, not measured
        for p in [wrk(s, 8, 1) for s in servers]:
            wrk_result(p, 1)
        a0, h0 = counters(servers)
        table0 = bench.scan()
        w0 = [s.tree(table0) for s in servers]
        p0 = bench.process_tree(pg.pid(), table0) if pg else {}
        t0 = time.time()
        conns = max(1, bench.CONNECTIONS // len(servers))
        ps = [wrk(s, conns, bench.SECONDS) for s in servers]
        ws = [wrk_result(p, bench.SECONDS) for p in ps]
        t1 = time.time()
        a1, h1 = counters(servers)
        table1 = bench.scan()
        w1 = [s.tree(table1) for s in servers]
        p1 = bench.process_tree(pg.pid(), table1) if pg else {}
        end = time.time() + 60
        while True:
            a2, h2 = counters(servers)
            if h2 - h0 >= a2 - a0 or time.time() > end:
                break
            time.sleep(0.1)
        acked = a1 - a0
        walua_ticks = sum(bench.cpu_delta(b, a) for b, a in zip(w0, w1))
        pg_ticks = bench.cpu_delta(p0, p1) if pg else 0
        window = t1 - t0
        per = lambda ticks: (ticks / bench.CLK * 1e6 / acked) if acked else 0
        r = {
            "run": label, "instances": len(servers),
            "acked_per_s": acked / window, "acked": acked,
            "handled_ratio": (h2 - h0) / (a2 - a0) if a2 > a0 else 0.0,
            "walua_us": per(walua_ticks), "pg_us": per(pg_ticks),
            "walua_cores": walua_ticks / bench.CLK / window,
            "pg_cores": pg_ticks / bench.CLK / window,
            "p99_ms": max(w["p99_us"] for w in ws) / 1000.0,
            "non2xx": sum(w["status"] for w in ws),
            "socket_errors": sum(w["connect"] + w["read"] + w["write"] +
                                 w["timeout"] for w in ws),
        }
        if r["non2xx"] or r["socket_errors"]:
            raise bench.BenchError("%s: %d non-2xx, %d socket errors:\n%s" % (
                label, r["non2xx"], r["socket_errors"],
                servers[0].log_tail()))
        return r
    finally:
        for s in servers:
            s.stop()
            s.cleanup()


def table(rows):
    out = ["| run | instances | acked/s | handled/acked | walua µs/event"
           " | PostgreSQL µs/event | walua cores | PostgreSQL cores"
           " | p99 ms |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| %s | %d | %.0f | %.2f | %.1f | %.1f | %.2f | %.2f |"
                   " %.2f |" % (r["run"], r["instances"], r["acked_per_s"],
                                r["handled_ratio"], r["walua_us"],
                                r["pg_us"], r["walua_cores"], r["pg_cores"],
                                r["p99_ms"]))
    return "\n".join(out)


def main():
    rows = []
    with pgcluster.Cluster(fsync=True) as pg:
        rows.append(run("sqlite", [None], None))
        url = pg.new_database()
        rows.append(run("pg-1", [url], pg))
        url = pg.new_database()
        rows.append(run("pg-2", [url, url], pg))
    two = rows[-1]["acked_per_s"]
    text = "\n".join([
        HEAD, "",
        "%d s per run, %d connections in all, keep-alive Insider texts, "
        "durability normal, 2 workers per instance; PostgreSQL 15 with "
        "fsync on (synchronous_commit on: each group commit waits for "
        "PostgreSQL's WAL flush). Nothing pinned: walua, PostgreSQL and "
        "wrk share the machine's cores." % (bench.SECONDS,
                                           bench.CONNECTIONS), "",
        table(rows), "",
        "Two instances on PostgreSQL: %.0f events/s acknowledged; target "
        "≥ %d: %s." % (two, TARGET, "met" if two >= TARGET else "NOT met"),
        ""])
    print(text)
    if not SMOKE:
        bench.write_results(pg=text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as e:
        print("bench_pg: %s" % e, file=sys.stderr)
        sys.exit(1)
