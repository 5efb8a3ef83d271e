#!/usr/bin/env python3
"""SQLite vs PostgreSQL metadata: tag listing and a cleanup run on a large repository.

For each backend, starts Berth on a loopback port with a fresh data dir (and, for
PostgreSQL, a fresh database made with `psql` on --pg-url's server), pushes one image
under N tags (default 10,000) over the registry API, then measures:

- `GET /v2/<repo>/tags/list?n=N` (every tag in one response), `?n=100&last=<middle>`
  (one keyset page), and the REST API's offset page in the middle
  (`GET /api/v4/projects/:id/registry/repositories/:rid/tags?page=..&per_page=100`);
  medians and p99 over --samples requests, in milliseconds;
- `berth cleanup --project ... --dry-run` (plans the run: reads every tag; median of
  --cleanup-samples) and one real `berth cleanup` that deletes all but 10 tags (the
  image is dated 2020, so `older_than` 7d keeps nothing back).

Prints a table; --json writes the numbers. Standard library only, plus the `psql` client
for PostgreSQL.

    bench/meta_backends.py [--berth target/release/berth] [--tags 10000]
        [--pg-url postgres://postgres@127.0.0.1:5432/postgres] [--backends sqlite,postgres]
"""
import argparse, base64, hashlib, http.client, json, os, shutil, statistics
import subprocess, sys, tempfile, threading, time, urllib.parse

from benchlib import PASSWORD, free_port

PROJECT = "bench/meta"
REPO = PROJECT + "/many"


def psql(admin_url, sql):
    subprocess.run(["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True,
                   stdout=subprocess.DEVNULL)


def with_database(url, name):
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/{name}" + (f"?{query}" if query else "")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Berth:
    def __init__(self, binary, work, database_url):
        self.binary, self.work = binary, work
        self.data = os.path.join(work, "data")
        self.env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD,
                        BERTH_LOG_LEVEL="warn", BERTH_TOKEN_EXPIRY="1h")
        if database_url:
            self.env["BERTH_DATABASE_URL"] = database_url
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env, cwd=work)
        line = self.proc.stdout.readline()
        if not line.startswith(b"berth listening"):
            raise SystemExit("berth did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def cmd(self, *args):
        return subprocess.run([self.binary, *args[:1], "--data-dir", self.data, *args[1:]],
                              check=True, capture_output=True, text=True, env=self.env,
                              cwd=self.work).stdout.strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def conn(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=600)


def request(c, method, path, body=None, headers=None, want=200):
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if r.status != want:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return data


def timed(c, path, headers, samples):
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        request(c, "GET", path, headers=headers)
        out.append((time.perf_counter() - t) * 1000)
    return out


def bench_backend(a, label, database_url):
    work = tempfile.mkdtemp(prefix=f"berth-meta-{label}-")
    b = Berth(a.berth, work, database_url)
    try:
        b.cmd("admin", "project", "create", PROJECT, "--parents")
        pat = b.cmd("admin", "token", "create", "--user", "root", "--name", "bench",
                    "--scopes", "api")
        basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
        c = conn(b.port)
        token = json.loads(request(
            c, "GET", "/jwt/auth?service=container_registry&scope="
            + urllib.parse.quote(f"repository:{REPO}:pull,push,delete"),
            headers={"Authorization": "Basic " + basic}))["token"]
        auth = {"Authorization": "Bearer " + token}

        def blob(data):
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            request(c, "POST", f"/v2/{REPO}/blobs/uploads/?digest={d}", body=data,
                    headers=auth, want=201)
            return d, len(data)

        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "created": "2020-01-01T00:00:00Z",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        cd, cs = blob(config)
        ld, ls = blob(os.urandom(1024))
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": ld, "size": ls}]}).encode()
        mh = {**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        names = [f"t{i:06d}" for i in range(a.tags)]

        def push(chunk):
            pc = conn(b.port)
            for n in chunk:
                request(pc, "PUT", f"/v2/{REPO}/manifests/{n}", body=manifest, headers=mh,
                        want=201)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=push, args=(names[i::a.threads],))
                   for i in range(a.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        push_s = time.perf_counter() - t0

        res = {"push_tags_per_s": a.tags / push_s}
        middle = names[len(names) // 2]
        res["v2_tags_all_ms"] = timed(c, f"/v2/{REPO}/tags/list?n={a.tags}", auth, a.samples)
        res["v2_tags_page_ms"] = timed(c, f"/v2/{REPO}/tags/list?n=100&last={middle}", auth,
                                       a.samples)
        ph = {"PRIVATE-TOKEN": pat}
        pid = json.loads(request(c, "GET", "/api/v4/projects/" + urllib.parse.quote(PROJECT, safe=""),
                                 headers=ph))["id"]
        rid = json.loads(request(c, "GET", f"/api/v4/projects/{pid}/registry/repositories",
                                 headers=ph))[0]["id"]
        page = a.tags // 200
        res["api_tags_offset_page_ms"] = timed(
            c, f"/api/v4/projects/{pid}/registry/repositories/{rid}/tags?page={page}&per_page=100",
            ph, a.samples)
        policy = {"container_expiration_policy_attributes": {
            "enabled": True, "cadence": "1d", "keep_n": 10, "older_than": "7d",
            "name_regex": ".*"}}
        request(c, "PUT", f"/api/v4/projects/{pid}", body=json.dumps(policy),
                headers={**ph, "Content-Type": "application/json"})
        dry = []
        for _ in range(a.cleanup_samples):
            t = time.perf_counter()
            b.cmd("cleanup", "--project", PROJECT, "--dry-run")
            dry.append((time.perf_counter() - t) * 1000)
        res["cleanup_dry_run_ms"] = dry
        t = time.perf_counter()
        out = b.cmd("cleanup", "--project", PROJECT)
        res["cleanup_run_ms"] = [(time.perf_counter() - t) * 1000]
        res["cleanup_output"] = out.splitlines()[-1] if out else ""
        return res
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--cleanup-samples", type=int, default=5)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--json")
    a = ap.parse_args()
    a.berth = os.path.abspath(a.berth)

    results = {}
    for backend in a.backends.split(","):
        if backend == "sqlite":
            results[backend] = bench_backend(a, backend, None)
        else:
            name = f"berth_bench_{os.getpid()}"
            psql(a.pg_url, f"CREATE DATABASE {name}")
            try:
                results[backend] = bench_backend(a, backend, with_database(a.pg_url, name))
            finally:
                psql(a.pg_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    rows = [("push (tags/s, 4 clients)", "push_tags_per_s"),
            (f"GET /v2/…/tags/list?n={a.tags} (ms)", "v2_tags_all_ms"),
            ("GET /v2/…/tags/list?n=100&last=… (ms)", "v2_tags_page_ms"),
            ("REST tags, offset page in the middle (ms)", "api_tags_offset_page_ms"),
            ("berth cleanup --dry-run (ms)", "cleanup_dry_run_ms"),
            (f"berth cleanup, deletes {a.tags - 10} tags (ms)", "cleanup_run_ms")]
    backends = list(results)
    print(f"| {a.tags} tags | " + " | ".join(f"{b} median (p99)" for b in backends) + " |")
    print("|---|" + "---|" * len(backends))
    for label, key in rows:
        cells = []
        for b in backends:
            v = results[b][key]
            if isinstance(v, list):
                cells.append(f"{statistics.median(v):.1f} ({pct(v, 99):.1f})")
            else:
                cells.append(f"{v:.0f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for b in backends:
        print(f"{b}: {results[b]['cleanup_output']}", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
