#!/usr/bin/env python3
"""Manifest GETs while pushes go on: what the manifest cache keeps.

Two `berth serve` nodes share one PostgreSQL database (made here with `psql` on
--pg-url's server; each node has its own data dir, which is enough because only
manifests are read), or, with `--backend sqlite`, one node on its own SQLite
database. Node B (node A on SQLite) gets --repos repositories with one small image
each, tagged `t`. Then, for each Berth binary given (`--bin label=PATH`, interleaved
round by round):

- quiet: wrk on node A, --wrk-seconds, cycling through the --repos manifests by tag
  (a Lua script; a root token for all of them; `Accept` of the OCI manifest);
- busy: the same while --pushers threads push into one other repository as fast as
  they can, through node B or (`--push-through a`, and always on SQLite) through
  node A itself. Each push is one manifest PUT under a new tag, so every push
  changes `tags`; with `--push-blobs` it first uploads a fresh small blob in an
  upload session (POST, then PUT with the body), as a client pushes a layer, and
  the manifest refers to it. The push rate is reported too.

With every change emptying a node's whole cache, node A re-reads each of its
repositories from the database after every push (and, when the pushes go through
node A, after every write of a push); with per-repository invalidation, a push
into another repository leaves node A's entries alone. Everything shares the
machine's CPUs (wrk, the nodes, PostgreSQL, the pushers). Medians of --rounds.

    bench/cache_nodes.py --bin before=/path/old-berth --bin after=target/release/berth
    bench/cache_nodes.py --backend sqlite --push-blobs --bin before=... --bin after=...

Standard library only, plus `psql` and `wrk`.
"""
import argparse, base64, hashlib, http.client, json, os, re, shutil, statistics
import subprocess, sys, tempfile, threading, time, urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import PASSWORD, free_port, push_blob_in_session  # noqa: E402
from meta_backends import psql, with_database  # noqa: E402
from nodes import request  # noqa: E402

PROJECT = "bench/cache"
BUSY = PROJECT + "/busy"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def token(port, repos):
    basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
    scopes = "&".join("scope=" + urllib.parse.quote(f"repository:{r}:pull,push") for r in repos)
    _, body = request(port, "GET", f"/jwt/auth?service=container_registry&{scopes}",
                      headers={"Authorization": f"Basic {basic}"})
    return json.loads(body)["token"]


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Node:
    def __init__(self, binary, work, name, database_url):
        self.data = os.path.join(work, name)
        env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD, BERTH_LOG_LEVEL="warn",
                   BERTH_TOKEN_EXPIRY="1h")
        env.pop("BERTH_DATABASE_URL", None)
        if database_url:
            env["BERTH_DATABASE_URL"] = database_url
        self.env = env
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=work)
        if not self.proc.stdout.readline().startswith(b"berth listening"):
            raise SystemExit("berth did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def push_image(port, tok, repo, tag, config):
    auth = {"Authorization": f"Bearer {tok}"}
    cd = digest(config)
    request(port, "POST", f"/v2/{repo}/blobs/uploads/?digest={urllib.parse.quote(cd)}", config,
            {**auth, "Content-Type": "application/octet-stream"}, want=(201,))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cd, "size": len(config)},
                           "layers": []}).encode()
    request(port, "PUT", f"/v2/{repo}/manifests/{tag}", manifest,
            {**auth, "Content-Type": MANIFEST_TYPE}, want=(201,))
    return manifest


def wrk(port, tok, repos, seconds, work):
    script = os.path.join(work, "cycle.lua")
    paths = ", ".join(f'"/v2/{r}/manifests/t"' for r in repos)
    with open(script, "w") as f:
        f.write(f"""local paths = {{{paths}}}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
""")
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", "10", "-d", f"{seconds}s", "--latency", "-s", script,
         "-H", f"Authorization: Bearer {tok}", "-H", f"Accept: {MANIFEST_TYPE}",
         f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out):
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    return rps


def push_blob(c, port, tok, n):
    """A fresh blob in an upload session on connection `c`; returns its digest and size."""
    data = f"layer {port} {n} {time.time_ns()}".encode()
    auth = {"Authorization": f"Bearer {tok}"}
    return push_blob_in_session(c, BUSY, auth, data), len(data)


def one_binary(binary, a, work, label):
    sqlite = a.backend == "sqlite"
    db = f"cache_nodes_{label}_{os.getpid()}"
    url = None
    if not sqlite:
        psql(a.pg_url, f"CREATE DATABASE {db}")
        url = with_database(a.pg_url, db)
    nodes = []
    try:
        node_a = Node(binary, work, f"{label}-a", url)
        nodes.append(node_a)
        subprocess.run([binary, "admin", "--data-dir", node_a.data, "project", "create",
                        PROJECT, "--parents"], env=node_a.env, check=True, capture_output=True)
        if sqlite:
            node_b = node_a
        else:
            node_b = Node(binary, work, f"{label}-b", url)
            nodes.append(node_b)
        pushed_through = node_a if a.push_through == "a" else node_b
        repos = [f"{PROJECT}/r{k}" for k in range(a.repos)]
        tok_b = token(node_b.port, repos + [BUSY])
        for r in repos:
            push_image(node_b.port, tok_b, r, "t", b'{"architecture":"amd64","os":"linux"}')
        push_image(node_b.port, tok_b, BUSY, "first", b'{"architecture":"arm64","os":"linux"}')
        tok_a = token(node_a.port, repos)
        wrk(node_a.port, tok_a, repos, 2, work)  # warm up
        quiet = wrk(node_a.port, tok_a, repos, a.wrk_seconds, work)

        # The manifest pushed again and again under new tags (or, with --push-blobs,
        # a manifest of each push's fresh blob).
        _, manifest = request(node_b.port, "GET", f"/v2/{BUSY}/manifests/first",
                              headers={"Authorization": f"Bearer {tok_b}",
                                       "Accept": MANIFEST_TYPE})
        stop, pushed = threading.Event(), []
        port = pushed_through.port
        tok_p = token(port, [BUSY])

        def pusher(k):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            n = 0
            while not stop.is_set():
                body = manifest
                if a.push_blobs:
                    d, size = push_blob(c, port, tok_p, f"{k}-{n}")
                    body = json.dumps({
                        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": d, "size": size},
                        "layers": []}).encode()
                c.request("PUT", f"/v2/{BUSY}/manifests/p{k}-{n}", body=body,
                          headers={"Authorization": f"Bearer {tok_p}",
                                   "Content-Type": MANIFEST_TYPE})
                r = c.getresponse()
                r.read()
                if r.status != 201:
                    raise SystemExit(f"push: {r.status}")
                n += 1
            pushed.append(n)
            c.close()

        threads = [threading.Thread(target=pusher, args=(k,)) for k in range(a.pushers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        busy = wrk(node_a.port, tok_a, repos, a.wrk_seconds, work)
        stop.set()
        for t in threads:
            t.join()
        push_rate = sum(pushed) / (time.perf_counter() - t0)
        return quiet, busy, push_rate
    finally:
        for n in nodes:
            n.stop()
        if not sqlite:
            psql(a.pg_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, help="LABEL=PATH, repeatable")
    ap.add_argument("--repos", type=int, default=200)
    ap.add_argument("--pushers", type=int, default=2)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    ap.add_argument("--push-through", choices=("a", "b"), default="b",
                    help="the node the pushes go through (SQLite: always a)")
    ap.add_argument("--push-blobs", action="store_true",
                    help="each push also uploads a fresh blob in an upload session")
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    if a.backend == "sqlite":
        a.push_through = "a"
    bins = [b.split("=", 1) for b in a.bin]
    results = {label: [] for label, _ in bins}
    work = tempfile.mkdtemp(prefix="cache-nodes-", dir=a.workdir)
    try:
        for rnd in range(a.rounds):
            order = bins if rnd % 2 == 0 else bins[::-1]
            for label, path in order:
                q, b, p = one_binary(path, a, work, f"{label}{rnd}")
                results[label].append((q, b, p))
                print(f"round {rnd + 1} {label}: quiet {q:.0f} req/s, while node "
                      f"{a.push_through.upper()} takes pushes "
                      f"{b:.0f} req/s ({p:.0f} pushes/s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians of {a.rounds} ({a.backend}, {a.repos} repositories cycled on node A, "
          f"{a.pushers} pushers through node {a.push_through.upper()}"
          f"{', each push with a blob' if a.push_blobs else ''}):")
    for label, rs in results.items():
        q = statistics.median(r[0] for r in rs)
        b = statistics.median(r[1] for r in rs)
        p = statistics.median(r[2] for r in rs)
        print(f"  {label}: quiet {q:.0f} req/s; while pushing {b:.0f} req/s "
              f"({100 * b / q:.0f} % of quiet), {p:.0f} pushes/s")


if __name__ == "__main__":
    main()
