#!/usr/bin/env python3
"""Berth at a large installation's scale: a synthetic installation built directly in
the metadata database and the blob store (no HTTP for the fill), then measured.

The fill (SQL run by the `sqlite3` / `psql` clients, in one transaction per table):

- one group `scale` with --projects projects `scale/pNNNN`, and --repos repositories
  spread evenly over them (`scale/pNNNN/rNNN`);
- per repository one manifest referencing 10 blobs of its own (so --repos x 10 blob
  records; 1,000,000 at the default 100,000 repositories); 9 in 10 manifests are tagged
  `latest`, the tenth is untagged (what `berth gc -m` deletes, with its blobs);
- one more repository `scale/p0000/cleanup` with --cleanup-tags tags on one manifest
  pushed in 2020, and a cleanup policy (name_regex .*, name_regex_keep `t[0-9]*0`,
  keep_n 1, older_than 7d) that deletes nine tenths of them;
- an empty file in the blob store for every blob record (offline GC compares the two),
  made by one loop of open/close calls relative to the 256 directories (tens of
  microseconds a file on an idle disk).

Measured, per backend (sqlite, postgres):

- `berth serve` start-up time (process start to its `listening` line) and idle RSS
  (VmRSS 2 s after start);
- `GET /v2/_catalog?n=1000` walked to the end (every page timed) and the group
  registry page `GET /api/v4/groups/:id/registry/repositories?per_page=100` (first,
  middle and last page), as root; the web UI's registry pages of the group (first
  page, page 500) and of the project `scale/p0000`, signed in as root;
- `berth cleanup --dry-run` (the preview) and `berth cleanup` over the cleanup
  repository (server running, as an operator would);
- offline `berth gc -m --grace 0s` with the server stopped: wall time and peak RSS
  (`wait4`'s ru_maxrss of that process alone);
- with --online-gc, afterwards: online GC draining a review queue of one due manifest
  per repository (100,000; a new untagged manifest of 10 new blobs in one repository
  in ten, which the reviewer deletes and whose blobs it then reviews too) while
  --push-threads clients push small images under new tags: queue length every half
  second, reviews a second, and push latency p50 / p99 during the drain and after it
  (see `online_gc`).

`--small` divides every count by 100 (a quick check that it all works), `--divide N` by N. Standard library
only, plus the `sqlite3` and `psql` clients. Figures are printed as a Markdown table;
--json writes them. Nothing here asserts a time.
"""
import argparse
import base64
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

PASSWORD = "scale-root-password"
OCI = "application/vnd.oci.image.manifest.v1+json"
BASE = 1_600_000_000_000  # created_at of generated rows = BASE + index (Unix ms, 2020)
MIX = 2654435761  # spreads digests over the store's two-hex-digit directories


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def log(msg):
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def hex_of(i):
    return "%08x%056x" % ((i * MIX) % (1 << 32), i)


class Dialect:
    def __init__(self, kind):
        self.kind = kind

    def nums(self, n, name="n"):
        if self.kind == "sqlite":
            return (f"{name}(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM {name} "
                    f"WHERE i < {n - 1})")
        return f"{name}(i) AS (SELECT generate_series(0, {n - 1}))"

    def with_(self):
        return "WITH RECURSIVE" if self.kind == "sqlite" else "WITH"

    def digest(self, e):
        if self.kind == "sqlite":
            return f"printf('sha256:%08x%056x', (({e}) * {MIX}) % 4294967296, ({e}))"
        return (f"('sha256:' || lpad(to_hex((({e})::bigint * {MIX}) % 4294967296), 8, '0') "
                f"|| lpad(to_hex(({e})::bigint), 56, '0'))")

    def pad(self, e, width):
        if self.kind == "sqlite":
            return f"printf('%0{width}d', {e})"
        return f"lpad(({e})::text, {width}, '0')"

    def blob(self, text_expr):
        if self.kind == "sqlite":
            return f"CAST({text_expr} AS BLOB)"
        return f"convert_to({text_expr}, 'UTF8')"


def fill_sql(d, projects, repos, cleanup_tags):
    per = repos // projects
    W = d.with_()
    rpath = (f"'scale/p' || {d.pad('n.i / ' + str(per), 4)} || '/r' || "
             f"{d.pad('n.i % ' + str(per), 3)}")
    idx = f"(r.created_at - {BASE})"
    payload = ("'{\"schemaVersion\":2,\"mediaType\":\"" + OCI + "\",\"n\":' || "
               + ("CAST(" if d.kind == "sqlite" else "(") + idx
               + (" AS TEXT)" if d.kind == "sqlite" else ")::text") + " || '}'")
    ours = "r.path LIKE 'scale/p%/r%'"
    stmts = [
        # Projects of the group `scale` (made with the first project by `berth admin`).
        f"""{W} {d.nums(projects)}
        INSERT INTO projects (namespace_id, name, path, full_path, created_at)
        SELECT (SELECT id FROM namespaces WHERE full_path = 'scale'),
               'p' || {d.pad('n.i', 4)}, 'p' || {d.pad('n.i', 4)},
               'scale/p' || {d.pad('n.i', 4)}, {BASE} + n.i
        FROM n WHERE n.i > 0""",
        f"""{W} {d.nums(repos)}
        INSERT INTO repositories (path, project_id, created_at, updated_at, shown_name)
        SELECT {rpath}, p.id, {BASE} + n.i, {BASE} + n.i, 'r' || {d.pad('n.i % ' + str(per), 3)}
        FROM n JOIN projects p ON lower(p.full_path) = lower('scale/p' || {d.pad('n.i / ' + str(per), 4)})""",
        f"""{W} {d.nums(repos * 10)}
        INSERT INTO blobs (digest, size, created_at)
        SELECT {d.digest('n.i')}, 1024, {BASE} FROM n""",
        f"""{W} {d.nums(10, 'k')}
        INSERT INTO repository_blobs (repository_id, digest, created_at)
        SELECT r.id, {d.digest(idx + ' * 10 + k.i')}, {BASE}
        FROM repositories r, k WHERE {ours}""",
        f"""INSERT INTO manifests (repository_id, digest, media_type, config_digest, size,
            payload, created_at, image_created_at, total_size)
        SELECT r.id, {d.digest(str(10 * repos) + ' + ' + idx)}, '{OCI}',
               {d.digest(idx + ' * 10')}, 100, {d.blob(payload)}, {BASE}, {BASE}, 9216
        FROM repositories r WHERE {ours}""",
        f"""{W} {d.nums(10, 'k')}
        INSERT INTO manifest_blobs (manifest_id, digest)
        SELECT m.id, {d.digest(idx + ' * 10 + k.i')}
        FROM manifests m JOIN repositories r ON r.id = m.repository_id, k WHERE {ours}""",
        f"""INSERT INTO tags (repository_id, name, manifest_digest, created_at)
        SELECT r.id, 'latest', m.digest, {BASE}
        FROM manifests m JOIN repositories r ON r.id = m.repository_id
        WHERE {ours} AND {idx} % 10 <> 9""",
        # The cleanup repository: one manifest (on blob 0), many tags.
        f"""INSERT INTO repositories (path, project_id, created_at, updated_at, shown_name)
        SELECT 'scale/p0000/cleanup', id, {BASE - 1}, {BASE - 1}, 'cleanup' FROM projects
        WHERE full_path = 'scale/p0000'""",
        f"""INSERT INTO repository_blobs (repository_id, digest, created_at)
        SELECT id, {d.digest('0')}, {BASE} FROM repositories WHERE path = 'scale/p0000/cleanup'""",
        f"""INSERT INTO manifests (repository_id, digest, media_type, config_digest, size,
            payload, created_at, image_created_at, total_size)
        SELECT id, {d.digest(str(20 * repos))}, '{OCI}', {d.digest('0')}, 2,
               {d.blob("'{}'")}, {BASE}, {BASE}, 1024
        FROM repositories WHERE path = 'scale/p0000/cleanup'""",
        f"""INSERT INTO manifest_blobs (manifest_id, digest)
        SELECT m.id, {d.digest('0')} FROM manifests m JOIN repositories r
        ON r.id = m.repository_id WHERE r.path = 'scale/p0000/cleanup'""",
        f"""{W} {d.nums(cleanup_tags)}
        INSERT INTO tags (repository_id, name, manifest_digest, created_at)
        SELECT r.id, 't' || {d.pad('n.i', 6)}, {d.digest(str(20 * repos))}, {BASE} + n.i
        FROM n, repositories r WHERE r.path = 'scale/p0000/cleanup'""",
    ]
    if d.kind == "postgres":
        # The live-tag count trigger updates the repository's row once per tag: in one
        # transaction on PostgreSQL each update walks the row's chain of versions made
        # by the ones before, so 100,000 tags took many minutes. Counted once instead.
        stmts[-1] = ("ALTER TABLE tags DISABLE TRIGGER tags_count_insert; " + stmts[-1]
                     + "; ALTER TABLE tags ENABLE TRIGGER tags_count_insert; "
                     f"UPDATE repositories SET live_tags = live_tags + {cleanup_tags} "
                     "WHERE path = 'scale/p0000/cleanup'")
    return stmts


class Berth:
    def __init__(self, binary, work, database_url):
        self.binary, self.work = binary, work
        self.data = os.path.join(work, "data")
        self.env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD,
                        BERTH_LOG_LEVEL="warn", BERTH_TOKEN_EXPIRY="1h")
        if database_url:
            self.env["BERTH_DATABASE_URL"] = database_url
        self.proc = None

    def cmd(self, *args, check=True):
        p = subprocess.run([self.binary, *args[:1], "--data-dir", self.data, *args[1:]],
                           capture_output=True, text=True, env=self.env, cwd=self.work)
        if check and p.returncode != 0:
            raise SystemExit(f"berth {' '.join(args)} failed:\n{p.stderr[-2000:]}")
        return p

    def timed_cmd(self, *args):
        """Run a berth command: (seconds, peak RSS MiB of that process, output)."""
        t = time.perf_counter()
        p = subprocess.Popen([self.binary, *args[:1], "--data-dir", self.data, *args[1:]],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
                             cwd=self.work)
        out = []
        reader = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
        reader.start()
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t
        reader.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        return secs, usage.ru_maxrss / 1024, p.returncode, out[0].decode(errors="replace")

    def start(self):
        self.port = free_port()
        t = time.perf_counter()
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
             self.data], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env,
            cwd=self.work)
        line = self.proc.stdout.readline()
        started = time.perf_counter() - t
        if not line.startswith(b"berth listening"):
            raise SystemExit("berth did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        return started

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return None

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None


def request(c, method, path, body=None, headers=None, want=200):
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if r.status != want:
        raise SystemExit(f"{method} {path}: {r.status} {data[:300]!r}")
    return r, data


def web_pages(c, samples):
    """Sign in as root through the form, then time the web UI's registry pages: the
    group's (first page and page 500 of 20 a page) and one project's (101 images)."""
    jar = {}

    def get(method, path, body=None, headers=None):
        h = dict(headers or {})
        if jar:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, value = v.split(";")[0].partition("=")
                jar[name] = value
        return r, data

    _, body = get("GET", "/users/sign_in")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', body).group(1).decode()
    form = urllib.parse.urlencode({"csrf_token": token, "username": "root",
                                   "password": PASSWORD, "redirect_to": "/"})
    r, _ = get("POST", "/users/sign_in", form,
               {"Content-Type": "application/x-www-form-urlencoded"})
    if r.status != 303:
        raise SystemExit(f"web sign-in: {r.status}")
    out = {}
    for label, path in (("group, first", "/groups/scale/-/container_registries"),
                        ("group, page 500", "/groups/scale/-/container_registries?page=500"),
                        ("project p0000", "/scale/p0000/container_registry")):
        xs = []
        for _ in range(max(3, samples // 4)):
            t = time.perf_counter()
            r, _ = get("GET", path)
            xs.append((time.perf_counter() - t) * 1000)
            if r.status != 200:
                raise SystemExit(f"GET {path}: {r.status}")
        out[label] = pct(xs, 50)
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


# Insert triggers that queue every new blob link and manifest for online GC review.
# They are off during the fill (the queues would hold every row of the installation,
# and the SQLite ones use unixepoch('subsec'), newer than Debian's sqlite3 client);
# offline GC does not use the queues.
QUEUE_TRIGGERS = (("gc_blob_linked", "repository_blobs"), ("gc_manifest_pushed", "manifests"))


def run_sql(kind, target, stmts):
    if kind == "sqlite":
        saved = []
        for name, _ in QUEUE_TRIGGERS:
            sql = subprocess.run(["sqlite3", target, "SELECT sql FROM sqlite_master WHERE "
                                  f"type = 'trigger' AND name = '{name}'"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            saved.append(sql)
            subprocess.run(["sqlite3", target, f"DROP TRIGGER {name}"], check=True)
    else:
        for name, table in QUEUE_TRIGGERS:
            subprocess.run(["psql", target, "-v", "ON_ERROR_STOP=1", "-qc",
                            f"ALTER TABLE {table} DISABLE TRIGGER {name}"], check=True)
    try:
        fill(kind, target, stmts)
    finally:
        if kind == "sqlite":
            for sql in saved:
                subprocess.run(["sqlite3", target], input=sql + ";\n", text=True, check=True)
        else:
            for name, table in QUEUE_TRIGGERS:
                subprocess.run(["psql", target, "-v", "ON_ERROR_STOP=1", "-qc",
                                f"ALTER TABLE {table} ENABLE TRIGGER {name}"], check=True)


def fill(kind, target, stmts):
    for s in stmts:
        t = time.perf_counter()
        if kind == "sqlite":
            script = "PRAGMA foreign_keys=ON;\nBEGIN;\n" + s + ";\nCOMMIT;\n"
            subprocess.run(["sqlite3", target], input=script, text=True, check=True)
        else:
            subprocess.run(["psql", target, "-v", "ON_ERROR_STOP=1", "-q", "-1", "-c", s],
                           check=True, stdout=subprocess.DEVNULL)
        log(f"{(time.perf_counter() - t):6.1f} s  {' '.join(s.split())[:90]}")


def make_blob_files(data, indices):
    """An empty file in the blob store for each blob index: the 256 directories made
    first, then one open/close per file relative to its directory's descriptor (about
    25 µs a file on an idle disk, so a million take under a minute)."""
    root = os.path.join(data, "storage", "blobs", "sha256")
    dirs = {}
    for k in range(256):
        d = os.path.join(root, "%02x" % k)
        os.makedirs(d, exist_ok=True)
        dirs["%02x" % k] = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    flags = os.O_CREAT | os.O_WRONLY
    try:
        for i in indices:
            h = hex_of(i)
            os.close(os.open(h, flags, 0o644, dir_fd=dirs[h[:2]]))
    finally:
        for fd in dirs.values():
            os.close(fd)


def online_gc_fill_sql(d, repos):
    """After offline GC: a new untagged manifest of 10 new blobs in one repository in
    ten (what offline GC just deleted, again), then every manifest queued for review
    with a due time in 2020. The queue then holds one item per repository (9 in 10
    tagged, kept; 1 in 10 deleted, which queues its 10 blobs in turn)."""
    W = d.with_()
    idx = f"(r.created_at - {BASE})"
    ours = f"r.path LIKE 'scale/p%/r%' AND {idx} % 10 = 9"
    blob = f"{30 * repos} + {idx} * 10 + k.i"
    return [
        f"""{W} {d.nums(10, 'k')}
        INSERT INTO blobs (digest, size, created_at)
        SELECT {d.digest(blob)}, 1024, {BASE} FROM repositories r, k WHERE {ours}""",
        f"""{W} {d.nums(10, 'k')}
        INSERT INTO repository_blobs (repository_id, digest, created_at)
        SELECT r.id, {d.digest(blob)}, {BASE} FROM repositories r, k WHERE {ours}""",
        f"""INSERT INTO manifests (repository_id, digest, media_type, config_digest, size,
            payload, created_at, image_created_at, total_size)
        SELECT r.id, {d.digest(str(50 * repos) + ' + ' + idx)}, '{OCI}',
               {d.digest(f"{30 * repos} + {idx} * 10")}, 100,
               {d.blob("'{" + '"n":' + "' || r.id || '}'")}, {BASE}, {BASE}, 9216
        FROM repositories r WHERE {ours}""",
        f"""{W} {d.nums(10, 'k')}
        INSERT INTO manifest_blobs (manifest_id, digest)
        SELECT m.id, {d.digest(blob)}
        FROM manifests m JOIN repositories r ON r.id = m.repository_id, k
        WHERE {ours} AND m.digest = {d.digest(str(50 * repos) + ' + ' + idx)}""",
        f"""INSERT INTO gc_manifest_review_queue (manifest_id, repository_id, queued_at, event)
        SELECT id, repository_id, {BASE}, 'manifest_upload' FROM manifests WHERE true
        ON CONFLICT (manifest_id) DO UPDATE SET queued_at = excluded.queued_at""",
    ]


def query_ints(kind, target, sql):
    if kind == "sqlite":
        out = subprocess.run(["sqlite3", "-cmd", ".timeout 5000", target, sql],
                             capture_output=True, text=True, check=True).stdout
        return [int(x) for x in out.strip().split("|")]
    out = subprocess.run(["psql", target, "-AtXc", sql], capture_output=True, text=True,
                         check=True).stdout
    return [int(x) for x in out.strip().split("|")]


def online_gc(a, b, kind, target, repos):
    """Online GC draining a review queue while clients push: `berth serve` with a short
    review delay starts on an installation whose manifest queue holds one due item per
    manifest (see online_gc_fill_sql), while --push-threads clients push small images
    (a 1 KiB layer of its own, the shared config, a manifest under a new tag), each
    push timed end to end. The queue is read with the database's own client every
    half second. Phases: `manifests` until the queued manifests are reviewed,
    `blobs` until the blobs the deleted manifests queued are, then `after` (pushes
    for --after seconds more, the queue holding only what the pushes queue)."""
    t = time.perf_counter()
    run_sql(kind, target, online_gc_fill_sql(Dialect(kind), repos))
    untagged = [i for i in range(repos) if i % 10 == 9]
    make_blob_files(b.data, (30 * repos + i * 10 + k for i in untagged for k in range(10)))
    if kind == "postgres":
        subprocess.run(["psql", target, "-qc", "VACUUM ANALYZE"], check=True)
    else:
        subprocess.run(["sqlite3", target, "ANALYZE;"], check=True)
    queued = query_ints(kind, target, "SELECT count(*) FROM gc_manifest_review_queue")[0]
    res = {"fill_s": time.perf_counter() - t, "manifests_queued": queued,
           "untagged": len(untagged), "review_delay_s": a.gc_delay,
           "push_threads": a.push_threads}
    log(f"online GC: {queued} manifests queued ({len(untagged)} untagged, "
        f"{len(untagged) * 10} blobs to follow), filled in {res['fill_s']:.0f} s")
    # Blob items GC itself queued (a manifest deleted, a blob unlinked), not pushes'.
    poll_sql = ("SELECT (SELECT count(*) FROM gc_manifest_review_queue WHERE queued_at < "
                f"{BASE + 1}), (SELECT count(*) FROM gc_blob_review_queue WHERE event <> "
                "'blob_upload')")

    b.env["BERTH_GC_REVIEW_DELAY"] = f"{a.gc_delay}s"
    try:
        b.start()
        t0 = time.perf_counter()
        basic = {"Authorization": "Basic " + base64.b64encode(
            f"root:{PASSWORD}".encode()).decode()}
        c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=600)
        repo = "scale/p0000/push"
        _, body = request(c, "GET", "/jwt/auth?service=container_registry&scope="
                          + urllib.parse.quote(f"repository:{repo}:pull,push"), headers=basic)
        auth = {"Authorization": "Bearer " + json.loads(body)["token"]}
        c.close()
        stop = threading.Event()
        pushes, errors = [], []  # (end time since t0, seconds)

        def pusher(k):
            conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=600)
            n = 0
            while not stop.is_set():
                layer = f"layer {k} {n} ".encode().ljust(1024, b".")
                s0 = time.perf_counter()
                try:
                    d = benchlib.push_blob(conn, repo, auth, layer)
                    m = benchlib.image_manifest(conn, repo, auth, [(d, len(layer))])
                    benchlib.put_manifest(conn, repo, auth, f"w{k}-{n:06d}", m)
                except (AssertionError, OSError, http.client.HTTPException) as e:
                    errors.append(repr(e)[:200])
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=600)
                s1 = time.perf_counter()
                pushes.append((s1 - t0, s1 - s0))
                n += 1
            conn.close()

        threads = [threading.Thread(target=pusher, args=(k,), daemon=True)
                   for k in range(a.push_threads)]
        for th in threads:
            th.start()
        timeline, t_m, t_b, peak_b = [], None, None, 0
        deadline = t0 + a.online_timeout
        while time.perf_counter() < deadline:
            m_left, b_left = query_ints(kind, target, poll_sql)
            now = time.perf_counter() - t0
            timeline.append((round(now, 2), m_left, b_left))
            peak_b = max(peak_b, b_left)
            if t_m is None and m_left == 0:
                t_m = now
                log(f"online GC: manifest queue drained after {now:.1f} s")
            if t_m is not None and t_b is None and b_left == 0 and now > a.gc_delay:
                t_b = now
                log(f"online GC: blob items drained after {now:.1f} s")
                break
            time.sleep(0.5)
        t_after = time.perf_counter() - t0
        if t_b is not None:
            time.sleep(a.after)
        stop.set()
        for th in threads:
            th.join()
        end = time.perf_counter() - t0
        rss = b.rss_mib()
    finally:
        b.stop()
        b.env.pop("BERTH_GC_REVIEW_DELAY", None)

    def lat(lo, hi):
        xs = [s for e, s in pushes if lo <= e < hi]
        if not xs:
            return None
        return {"pushes": len(xs), "per_s": len(xs) / max(hi - lo, 1e-9),
                "p50_ms": pct(xs, 50) * 1000, "p99_ms": pct(xs, 99) * 1000,
                "max_ms": max(xs) * 1000}

    res.update({"timeline": timeline, "blob_items_peak": peak_b, "push_errors": len(errors),
                "push_error_samples": errors[:5], "server_rss_end_mib": rss})
    if t_m is not None:
        res["manifest_drain_s"] = t_m
        res["manifest_items_per_s"] = queued / t_m
        res["push_during_manifests"] = lat(0, t_m)
    if t_b is not None:
        # Blob reviews start once the manifest queue is empty (a round does manifests
        # first) and their items are due (the review delay after each deletion): timed
        # from the last poll before the blob items began to fall.
        top = max(range(len(timeline)), key=lambda i: (timeline[i][2], -i))
        start_b = timeline[top][0]
        res["blob_drain_s"] = t_b - start_b
        res["blob_items"] = len(untagged) * 10
        res["blob_items_per_s"] = len(untagged) * 10 / max(t_b - start_b, 1e-9)
        res["drain_total_s"] = t_b
        res["push_during_blobs"] = lat(t_m, t_b)
        res["push_after"] = lat(t_after, end)
    res["push_during_drain"] = lat(0, t_b if t_b is not None else end)
    log(f"online GC: {json.dumps({k: v for k, v in res.items() if k != 'timeline'})}")
    return res


def bench(a, kind, database_url):
    projects, repos, cleanup_tags = a.projects, a.repos, a.cleanup_tags
    work = tempfile.mkdtemp(prefix=f"berth-scale-{kind}-", dir=a.workdir)
    b = Berth(a.berth, work, database_url)
    res = {"backend": kind, "projects": projects, "repositories": repos,
           "blobs": repos * 10, "manifests": repos + 1, "cleanup_tags": cleanup_tags}
    try:
        b.cmd("admin", "project", "create", "scale/p0000", "--parents")
        target = os.path.join(b.data, "berth.db") if kind == "sqlite" else database_url
        t = time.perf_counter()
        run_sql(kind, target, fill_sql(Dialect(kind), projects, repos, cleanup_tags))
        res["fill_sql_s"] = time.perf_counter() - t
        t_files = time.perf_counter()
        make_blob_files(b.data, range(repos * 10))
        # Written back before anything is measured: a million new files still being
        # flushed slowed every figure after them (cleanup 5.1 -> 7.2 s in one run).
        os.sync()
        res["fill_files_s"] = time.perf_counter() - t_files
        res["fill_s"] = time.perf_counter() - t
        log(f"filled in {res['fill_s']:.0f} s (SQL {res['fill_sql_s']:.0f} s, "
            f"{repos * 10} files {res['fill_files_s']:.0f} s)")
        if kind == "postgres":
            subprocess.run(["psql", target, "-qc", "VACUUM ANALYZE"], check=True)
        else:
            subprocess.run(["sqlite3", target, "ANALYZE;"], check=True)
        if a.fill_only:
            print(f"filled: --data-dir {b.data}"
                  + (f" BERTH_DATABASE_URL={database_url}" if database_url else ""))
            return res

        res["startup_s"] = b.start()
        time.sleep(2)  # idle: what it holds after start-up, once quiet (not a wait)
        res["idle_rss_mib"] = b.rss_mib()
        log(f"start-up {res['startup_s'] * 1000:.0f} ms, idle RSS {res['idle_rss_mib']:.1f} MiB")

        c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=600)
        basic = {"Authorization": "Basic " + base64.b64encode(
            f"root:{PASSWORD}".encode()).decode()}
        _, body = request(c, "GET", "/jwt/auth?service=container_registry&scope="
                          + urllib.parse.quote("registry:catalog:*"), headers=basic)
        bearer = {"Authorization": "Bearer " + json.loads(body)["token"]}
        pages, path, seen = [], "/v2/_catalog?n=1000", 0
        t_walk = time.perf_counter()
        while path:
            t = time.perf_counter()
            r, body = request(c, "GET", path, headers=bearer)
            pages.append((time.perf_counter() - t) * 1000)
            seen += len(json.loads(body)["repositories"])
            link = r.getheader("Link")
            path = link.split(";")[0].strip("<> ") if link else None
            if path and path.startswith("http"):
                path = urllib.parse.urlsplit(path)._replace(scheme="", netloc="").geturl()
        res["catalog_walk_s"] = time.perf_counter() - t_walk
        res["catalog_pages"] = len(pages)
        res["catalog_page_ms_median"] = pct(pages, 50)
        res["catalog_page_ms_p99"] = pct(pages, 99)
        res["catalog_repositories"] = seen
        log(f"_catalog: {seen} repositories in {len(pages)} pages, page median "
            f"{res['catalog_page_ms_median']:.1f} ms, p99 {res['catalog_page_ms_p99']:.1f} ms")

        pat = b.cmd("admin", "token", "create", "--user", "root", "--name", "scale",
                    "--scopes", "api").stdout.strip().split()[-1]
        ph = {"PRIVATE-TOKEN": pat}
        _, body = request(c, "GET", "/api/v4/groups/scale", headers=ph)
        gid = json.loads(body)["id"]
        total_pages = max(1, (repos + 1 + 99) // 100)
        gp = {}
        for label, page in (("first", 1), ("middle", total_pages // 2 or 1),
                            ("last", total_pages)):
            xs = []
            for _ in range(a.samples):
                t = time.perf_counter()
                request(c, "GET", f"/api/v4/groups/{gid}/registry/repositories"
                        f"?per_page=100&page={page}", headers=ph)
                xs.append((time.perf_counter() - t) * 1000)
            gp[label] = pct(xs, 50)
        res["group_page_ms"] = gp
        log(f"group registry page (100 a page) median ms: {gp}")
        res["web_page_ms"] = web_pages(c, a.samples)
        log(f"registry pages in the web UI, median ms: {res['web_page_ms']}")

        _, body = request(c, "GET", "/api/v4/projects/" + urllib.parse.quote(
            "scale/p0000", safe=""), headers=ph)
        pid = json.loads(body)["id"]
        # keep_n only takes GitLab's values (1 … 100): the tenth kept is named instead,
        # every tag whose name ends in 0.
        policy = {"container_expiration_policy_attributes": {
            "enabled": True, "cadence": "1d", "keep_n": 1, "older_than": "7d",
            "name_regex": ".*", "name_regex_keep": "t[0-9]*0"}}
        request(c, "PUT", f"/api/v4/projects/{pid}", body=json.dumps(policy),
                headers={**ph, "Content-Type": "application/json"})
        secs, rss, rc, out = b.timed_cmd("cleanup", "--project", "scale/p0000", "--dry-run")
        res["cleanup_preview_s"], res["cleanup_preview_rss_mib"] = secs, rss
        log(f"cleanup preview: {secs:.2f} s (rc {rc}) {out.strip().splitlines()[-1:]} ")
        secs, rss, rc, out = b.timed_cmd("cleanup", "--project", "scale/p0000")
        res["cleanup_run_s"], res["cleanup_run_rss_mib"] = secs, rss
        res["cleanup_output"] = out.strip().splitlines()[-1:] if out.strip() else []
        log(f"cleanup run: {secs:.2f} s (rc {rc}) {res['cleanup_output']}")
        c.close()
        b.stop()

        secs, rss, rc, out = b.timed_cmd("gc", "-m", "--grace", "0s")
        res["gc_s"], res["gc_peak_rss_mib"], res["gc_rc"] = secs, rss, rc
        lines = [l for l in out.splitlines() if l.strip() and "\r" not in l]
        res["gc_output"] = lines[:12] if rc != 0 else lines[-8:]
        log(f"offline gc: {secs:.1f} s, peak RSS {rss:.0f} MiB, rc {rc}")
        for line in res["gc_output"]:
            log("   " + line.strip())
        if a.online_gc:
            res["online_gc"] = online_gc(a, b, kind, target, repos)
        return res
    finally:
        b.stop()
        if not a.fill_only:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--small", action="store_true", help="every count divided by 100")
    ap.add_argument("--divide", type=int, default=1,
                    help="every count divided by this (--small is --divide 100); creating "
                         "a million blob files is what takes longest on a slow disk")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--workdir", default=None, help="parent of the data dirs (the disk used)")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--json")
    ap.add_argument("--runs", type=int, default=1,
                    help="fill and measure each backend this many times (the backends "
                         "take turns); the table gives each figure's median and its runs")
    ap.add_argument("--online-gc", action="store_true",
                    help="after offline GC, also measure online GC draining a queue of one "
                         "item per repository while clients push")
    ap.add_argument("--gc-delay", type=int, default=10,
                    help="gc.review_delay (s) of the online GC run; pushes' own items are "
                         "reviewed this long after they are queued")
    ap.add_argument("--push-threads", type=int, default=4)
    ap.add_argument("--after", type=float, default=15,
                    help="seconds of pushes after the queue is drained, for comparison")
    ap.add_argument("--online-timeout", type=float, default=1800,
                    help="give up waiting for the queue to drain after this many seconds")
    ap.add_argument("--fill-only", action="store_true",
                    help="fill, print where, and stop: the installation is kept (for "
                         "profiling with `berth serve` and the database's own tools)")
    a = ap.parse_args()
    a.berth = os.path.abspath(a.berth)
    div = 100 if a.small else a.divide
    a.projects, a.repos, a.cleanup_tags = 1000 // div, 100_000 // div, 100_000 // div

    results = {}
    for run, kind in ((run, kind) for run in range(a.runs) for kind in a.backends.split(",")):
        log(f"== {kind}, run {run + 1} of {a.runs}: {a.repos} repositories in {a.projects} "
            f"projects, {a.repos * 10} blobs, {a.cleanup_tags} tags in the cleanup repository")
        if kind == "sqlite":
            results.setdefault(kind, []).append(bench(a, kind, None))
        else:
            name = f"berth_scale_{os.getpid()}"
            subprocess.run(["psql", a.pg_url, "-qc", f"CREATE DATABASE {name}"], check=True)
            base, _, query = a.pg_url.partition("?")
            scheme, _, rest = base.partition("://")
            url = f"{scheme}://{rest.split('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
            try:
                results.setdefault(kind, []).append(bench(a, kind, url))
            finally:
                if not a.fill_only:
                    subprocess.run(["psql", a.pg_url, "-qc",
                                    f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                                   check=True)
    if a.fill_only:
        return

    rows = [("fill (s)", lambda r: r["fill_s"]),
            ("berth serve start-up (ms)", lambda r: r["startup_s"] * 1000),
            ("idle RSS (MiB)", lambda r: r["idle_rss_mib"]),
            ("_catalog page n=1000, median (ms)", lambda r: r["catalog_page_ms_median"]),
            ("_catalog page n=1000, p99 (ms)", lambda r: r["catalog_page_ms_p99"]),
            ("_catalog whole walk (s)", lambda r: r["catalog_walk_s"]),
            ("group registry page, first (ms)", lambda r: r["group_page_ms"]["first"]),
            ("group registry page, middle (ms)", lambda r: r["group_page_ms"]["middle"]),
            ("group registry page, last (ms)", lambda r: r["group_page_ms"]["last"]),
            ("web UI: group registry page, first (ms)",
             lambda r: r["web_page_ms"]["group, first"]),
            ("web UI: group registry page 500 (ms)",
             lambda r: r["web_page_ms"]["group, page 500"]),
            ("web UI: registry page of p0000, 101 images (ms)",
             lambda r: r["web_page_ms"]["project p0000"]),
            ("cleanup preview (s, incl. process start)", lambda r: r["cleanup_preview_s"]),
            ("cleanup run (s, incl. process start)", lambda r: r["cleanup_run_s"]),
            ("cleanup preview peak RSS (MiB)", lambda r: r["cleanup_preview_rss_mib"]),
            ("cleanup run peak RSS (MiB)", lambda r: r["cleanup_run_rss_mib"]),
            ("offline gc -m (s)", lambda r: r["gc_s"]),
            ("offline gc peak RSS (MiB)", lambda r: r["gc_peak_rss_mib"]),
            ("online GC: manifests queued", lambda r: r["online_gc"]["manifests_queued"]),
            ("online GC: manifest reviews / s", lambda r: r["online_gc"]["manifest_items_per_s"]),
            ("online GC: blob reviews / s (blobs of deleted manifests)",
             lambda r: r["online_gc"]["blob_items_per_s"]),
            ("online GC: whole drain (s)", lambda r: r["online_gc"]["drain_total_s"]),
            ("pushes / s during drain", lambda r: r["online_gc"]["push_during_drain"]["per_s"]),
            ("push p50 during drain (ms)", lambda r: r["online_gc"]["push_during_drain"]["p50_ms"]),
            ("push p99 during drain (ms)", lambda r: r["online_gc"]["push_during_drain"]["p99_ms"]),
            ("push p50 while reviewing manifests (ms)",
             lambda r: r["online_gc"]["push_during_manifests"]["p50_ms"]),
            ("push p99 while reviewing manifests (ms)",
             lambda r: r["online_gc"]["push_during_manifests"]["p99_ms"]),
            ("push p50 while reviewing blobs (ms)",
             lambda r: r["online_gc"]["push_during_blobs"]["p50_ms"]),
            ("push p99 while reviewing blobs (ms)",
             lambda r: r["online_gc"]["push_during_blobs"]["p99_ms"]),
            ("pushes / s after drain", lambda r: r["online_gc"]["push_after"]["per_s"]),
            ("push p50 after drain (ms)", lambda r: r["online_gc"]["push_after"]["p50_ms"]),
            ("push p99 after drain (ms)", lambda r: r["online_gc"]["push_after"]["p99_ms"]),
            ("push errors", lambda r: r["online_gc"]["push_errors"])]
    kinds = list(results)
    if not a.online_gc:
        rows = [r for r in rows if "online GC" not in r[0] and "push" not in r[0]]
    print("| figure | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, f in rows:
        vals = []
        for k in kinds:
            xs = []
            for r in results[k]:
                try:
                    xs.append(f(r))
                except (KeyError, TypeError):
                    pass
            if not xs:
                vals.append("-")
            elif len(xs) == 1:
                vals.append(f"{xs[0]:.2f}")
            else:
                vals.append(f"{statistics.median(xs):.2f} ("
                            + " / ".join(f"{x:.2f}" for x in xs) + ")")
        print(f"| {name} | " + " | ".join(vals) + " |")
    if a.runs > 1:
        print("\nEach cell: the median of the runs, then each run in order.")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
