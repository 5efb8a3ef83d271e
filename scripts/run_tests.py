#!/usr/bin/env python3
"""Run Berth's test binaries, several at once, over every backend pass.

`scripts/test` prepares the machine and then runs this. It builds every test binary
once (`cargo test --no-run`), then runs the passes below as one pool of jobs, a job
being one test binary in one pass. Jobs run a few at a time, the longest first: most
end-to-end tests wait (for servers, garbage-collection delays, token expiry, clients),
so on two cores a binary whose last test sleeps leaves the machine idle when the
binaries run one after another, as `cargo test` runs them. Each job's output is
printed whole when it ends; a summary of every job's time and result closes the run.

    scripts/run_tests.py [--pass NAME]... [--skip-pass NAME]... [--test NAME]... [-j N]
                         [-- TEST-ARGS...]

--pass and --test keep only those passes and test binaries (`unittests` names the
crates' own unit-test binaries), --skip-pass leaves a pass out; TEST-ARGS go to every
test binary (a name filter, --nocapture, ...). BERTH_TEST_JOBS sets the jobs at once (default 3),
RUST_TEST_THREADS the tests at once in each job (default 2), BERTH_TEST_JOB_TIMEOUT
the seconds after which a job is stopped as failed (default 1200).
Standard library only.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

# Tests the later passes leave out, since the backend changes nothing they check and
# they are among the longest: waiting out a token's 60 s leeway, and (three nodes)
# the browser tests of single pages and the schema fuzzing, which the PostgreSQL pass
# runs. The browser tests of signing in and of forms stay on three nodes: sessions
# and form tokens must hold across nodes.
PG_SKIPS = ["an_upload_outlives_the_token_that_started_it"]
NODES_SKIPS = PG_SKIPS + [
    "tag_page_of_a_many_layer_manifest_is_paged",
    "protection_rules_in_a_real_browser",
    "recently_deleted_history_and_restore_run_in_a_browser",
    "schemathesis_finds_no_server_errors_or_schema_violations",
]

# The passes: a name, the environment it adds, the end-to-end binaries it runs (None:
# every test binary of the workspace, unit tests included), and the tests it skips.
# - first: SQLite metadata, blobs in local files. Includes tests/migrate.rs (its
#   source is SQLite with files; it creates PostgreSQL databases and moto buckets as
#   targets) and tests/faults.rs (a full-disk test on a tmpfs it mounts, as root).
# - s3: the end-to-end tests that exercise blob storage, with blobs on S3 (a moto
#   server from the venv, started by the tests; a fresh bucket per instance).
# - postgres: PostgreSQL metadata, a fresh database per server, dropped when it stops.
# - nodes: three nodes sharing one PostgreSQL and one moto bucket behind a
#   round-robin proxy (tests/support/proxy.rs) that sends each request of a client to
#   the next node. (tests/multinode.rs, in the first pass, starts its own nodes.)
PASSES = [
    ("first", {}, None, []),
    ("s3", {"BERTH_TEST_STORAGE": "s3"},
     ["oci_http", "clients", "gc", "dependency_proxy", "faults"], []),
    ("postgres", {"BERTH_TEST_DATABASE": "postgres"},
     ["oci_http", "clients", "api", "auth", "registry_api", "ui", "cleanup", "gc",
      "openapi", "faults", "protection", "dependency_proxy"], PG_SKIPS),
    ("nodes", {"BERTH_TEST_NODES": "3", "BERTH_TEST_DATABASE": "postgres",
               "BERTH_TEST_STORAGE": "s3"},
     ["oci_http", "clients", "api", "auth", "registry_api", "ui", "cleanup", "gc",
      "openapi", "protection"], NODES_SKIPS),
]

# Seconds a job took with three at once on two cores, for starting the longest first
# (jobs not named here count as short). Only the order depends on them.
EXPECTED = {
    "first/ui": 175, "postgres/ui": 180, "nodes/ui": 140, "first/cleanup": 105,
    "nodes/cleanup": 105, "postgres/openapi": 85, "first/openapi": 80, "s3/gc": 70,
    "nodes/gc": 70, "first/auth": 65, "postgres/cleanup": 60, "first/history": 55,
    "first/gc": 50, "postgres/auth": 45, "first/docker": 45, "s3/dependency_proxy": 40,
    "postgres/dependency_proxy": 40, "nodes/clients": 35, "nodes/oci_http": 35,
    "nodes/registry_api": 35, "first/berth_meta": 35, "postgres/oci_http": 35,
    "first/multinode": 30, "postgres/registry_api": 30, "s3/oci_http": 30,
    "first/faults": 30, "first/oci_http": 30, "first/dependency_proxy": 30,
    "postgres/gc": 25, "first/clients": 25, "postgres/protection": 25, "s3/faults": 25,
    "nodes/auth": 25, "nodes/protection": 20, "postgres/faults": 20,
    "first/registry_api": 20, "s3/clients": 20, "postgres/clients": 20,
}


# PostgreSQL servers a job runs at once, for jobs that use PostgreSQL: a test server
# on it holds up to a pool of connections, and the server takes 100 clients by
# default. Jobs start only while the servers of the running ones stay within
# PG_SERVERS (the sequential passes ran up to 12: three nodes, four tests at once).
PG_SERVERS = 12


# A job still running after this long is stopped and counts as failed (its output so
# far is printed). The longest took about 250 s with the machine fully busy.
JOB_TIMEOUT = int(os.environ.get("BERTH_TEST_JOB_TIMEOUT", "1200"))


def pg_servers(pass_name, name, threads):
    nodes = {"postgres": 1, "nodes": 3}.get(pass_name)
    if nodes is None:  # the first pass: the tests that create PostgreSQL databases
        nodes = {"multinode": 3, "berth_meta": 1, "migrate": 1, "faults": 1}.get(name, 0)
    return nodes * threads


def build(root):
    """Build every test binary; returns [(name, executable, package dir, is e2e)]."""
    cmd = ["cargo", "test", "--workspace", "--locked", "--no-run",
           "--message-format=json-render-diagnostics"]
    out = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"building the tests failed ({' '.join(cmd)})")
    binaries = []
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue
        target = msg["target"]
        e2e = "test" in target["kind"]
        name = target["name"] if e2e else target["name"].replace("-", "_")
        pkg = os.path.dirname(msg["manifest_path"])
        binaries.append((name, msg["executable"], pkg, e2e))
    return binaries


class Job:
    def __init__(self, pass_name, env, name, exe, cwd, args, pg):
        self.id = f"{pass_name}/{name}"
        self.pg = pg
        self.env, self.exe, self.cwd, self.args = env, exe, cwd, args
        self.proc = self.log = self.started = self.seconds = None

    def start(self):
        self.log = tempfile.TemporaryFile(mode="w+b")
        self.started = time.monotonic()
        # A session of its own, so that stopping it stops what its tests started.
        self.proc = subprocess.Popen([self.exe, *self.args], cwd=self.cwd,
                                     env={**os.environ, **self.env}, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def output(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pass", dest="passes", action="append", default=[],
                    choices=[p[0] for p in PASSES])
    ap.add_argument("--test", dest="tests", action="append", default=[])
    ap.add_argument("-j", "--jobs", type=int,
                    default=int(os.environ.get("BERTH_TEST_JOBS", "3")))
    ap.add_argument("--skip-pass", dest="skip_passes", action="append", default=[],
                    choices=[p[0] for p in PASSES],
                    help="leave this pass out (scripts/test does when its service is missing)")
    argv = sys.argv[1:]
    test_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, test_args = argv[:i], argv[i + 1:]
    a = ap.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    threads = os.environ.get("RUST_TEST_THREADS", "2")

    binaries = build(root)
    known = {b[0] for b in binaries} | {"unittests"}
    for t in a.tests:
        if t not in known:
            sys.exit(f"no test binary {t!r}; there are: {', '.join(sorted(known))}")

    jobs = []
    for pass_name, env, names, skips in PASSES:
        if (a.passes and pass_name not in a.passes) or pass_name in a.skip_passes:
            continue
        skip_args = [x for s in skips for x in ("--skip", s)]
        for name, exe, cwd, e2e in binaries:
            if names is not None and name not in names:
                continue
            chosen = name in a.tests or (not e2e and "unittests" in a.tests)
            if a.tests and not chosen:
                continue
            args = [*skip_args, f"--test-threads={threads}", *test_args]
            pg = min(pg_servers(pass_name, name, int(threads)), PG_SERVERS)
            jobs.append(Job(pass_name, env, name, exe, cwd, args, pg))
    jobs.sort(key=lambda j: -EXPECTED.get(j.id, 10))

    print(f"==> {len(jobs)} test binaries over {len({j.id.split('/')[0] for j in jobs})} "
          f"passes, {a.jobs} at once, {threads} tests at once in each", flush=True)
    started = time.monotonic()
    waiting, running, done = list(jobs), [], []
    try:
        while waiting or running:
            pg_free = PG_SERVERS - sum(j.pg for j in running)
            for job in list(waiting):
                if len(running) == a.jobs:
                    break
                if job.pg <= pg_free:
                    waiting.remove(job)
                    job.start()
                    running.append(job)
                    pg_free -= job.pg
            time.sleep(0.2)
            for job in running:
                if job.proc.poll() is None and time.monotonic() - job.started > JOB_TIMEOUT:
                    # A hung job would hold CI until its own limit, saying nothing.
                    print(f"\n==> {job.id}: still running after {JOB_TIMEOUT} s; killing it",
                          flush=True)
                    job.kill()
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                job.seconds = time.monotonic() - job.started
                done.append(job)
                verdict = "ok" if job.proc.returncode == 0 else \
                    f"FAILED (exit {job.proc.returncode})"
                print(f"\n==> {job.id}: {verdict} in {job.seconds:.0f} s "
                      f"({len(running)} running, {len(waiting)} waiting)\n{job.output()}",
                      flush=True)
    except KeyboardInterrupt:
        for job in running:
            job.kill()
        raise

    failed = [j for j in done if j.proc.returncode != 0]
    print(f"\n==> test binaries by time (wall {time.monotonic() - started:.0f} s):")
    for job in sorted(done, key=lambda j: -j.seconds):
        mark = "ok" if job.proc.returncode == 0 else "FAILED"
        print(f"    {job.seconds:6.0f} s  {mark:6}  {job.id}")
    if failed:
        print(f"\n==> {len(failed)} failed: {', '.join(j.id for j in failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
