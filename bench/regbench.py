#!/usr/bin/env python3
"""regbench: measure an OCI distribution registry (helper for bench/run.sh).

Standard library only; shells out to curl, wrk, openssl and dd.

Sub-commands:
  limits  --file F --workdir D --out J          physical limits of this machine
  suite   --url U [--pid P] --small F --large F --out J [...]
                                                 the whole registry suite
  report  --out-md M --out-json J RESULT.json... side-by-side table

Every target must be a loopback address (127.0.0.0/8 or localhost); the script
refuses anything else, including a Location header or token realm that points elsewhere.

Authentication: like a real client. A 401 with a `WWW-Authenticate: Bearer` challenge
makes the script fetch a token from the realm (HTTP Basic with --user/--password, or the
environment variables REGBENCH_USER/REGBENCH_PASSWORD; anonymous without them), cache it
per scope and retry. Registries that never challenge are used anonymously.
"""

import argparse
import base64
import glob
import gzip
import hashlib
import http.client
import io
import ipaddress
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse

MIB = 1024 * 1024
LIMIT_KEYS = ("sha256", "copy_fsync", "copy_direct", "loop_put", "loop_put_client", "loop_get",
              "loop_patch_curl", "loop_patch_client", "static_rps", "static_p99")
# bench/patch-client, built by `cargo build --release` with the rest of the workspace.
PATCH_CLIENT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "target", "release", "patch-client")
CHUNK = 8 * MIB

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def log(msg):
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- #
# HTTP helpers
# --------------------------------------------------------------------------- #

def check_loopback(host):
    if host in ("localhost",):
        return
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise BenchError(f"refusing non-loopback target host {host!r}")
    if not ip.is_loopback:
        raise BenchError(f"refusing non-loopback target host {host!r}")


def _challenge_params(header):
    """The parameters of a `Bearer k="v",...` challenge, or None if not Bearer."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}


def _parse_scope(scope):
    """`type:name:a,b` -> (type, name, {a, b}); the name may contain ':' only if the
    type is not repository (as in registry:catalog:*), so split at the first and last."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind, name, {a for a in actions.split(",") if a}


REPO_ACTIONS = {"pull", "push", "delete"}


def scopes_for_path(path):
    """The scopes a request to `path` needs, as a set of (type, name, action): for a
    repository always pull, push and delete (one token then serves every operation),
    `registry:catalog:*` for the catalog, nothing for GET /v2/."""
    p = urllib.parse.urlsplit(path).path
    if p.rstrip("/") == "/v2":
        return set()
    if p.startswith("/v2/_catalog"):
        return {("registry", "catalog", "*")}
    m = re.match(r"^/v2/(.+?)/(blobs|manifests|tags)/", p)
    if m:
        return {("repository", m.group(1), a) for a in REPO_ACTIONS}
    return set()


class Auth:
    """Docker token auth, shared by every connection of one suite (thread-safe).
    Tokens are cached per granted scope set and reused for any request whose scopes
    they cover, until 30 s (or half the lifetime) before they expire."""

    def __init__(self, user=None, password=None):
        self.user = user
        self.password = password
        self.lock = threading.Lock()
        self.by_resource = {}  # (type, name) -> [(scopes frozenset, token, expiry)]
        self.any_token = None  # (token, expiry): any valid token serves GET /v2/
        self.challenged = False  # the server asked for a bearer token at least once
        self.fetches = 0
        self.fetch_s = 0.0

    def describe(self):
        if not self.challenged:
            return "anonymous (no auth challenge)"
        who = f"user {self.user}" if self.user else "anonymous"
        return f"bearer tokens ({who})"

    def stats(self):
        with self.lock:
            return self.fetches, self.fetch_s

    def cached(self, needed):
        now = time.time()
        with self.lock:
            if not needed:
                if self.any_token and self.any_token[1] > now:
                    return self.any_token[0]
                return None
            first = next(iter(needed))
            for scopes, tok, exp in reversed(self.by_resource.get(first[:2], ())):
                if exp > now and needed <= scopes:
                    return tok
        return None

    def fetch(self, realm, service, needed, conns):
        """GET realm?service=...&scope=... for `needed` ((type, name, action) set);
        caches and returns the token. `conns` is the caller's dict of persistent
        connections to token services."""
        u = urllib.parse.urlsplit(realm)
        if u.scheme != "http" or not u.hostname:
            raise BenchError(f"token realm {realm!r} is not a plain http URL")
        check_loopback(u.hostname)
        merged = {}
        for kind, name, act in needed:
            merged.setdefault((kind, name), set()).add(act)
        params = [("service", service)] if service else []
        params += [("scope", f"{k}:{n}:{','.join(sorted(a))}")
                   for (k, n), a in sorted(merged.items())]
        q = urllib.parse.urlencode(params)
        target = u.path + "?" + "&".join(x for x in (u.query, q) if x)
        headers = {}
        if self.user is not None:
            cred = f"{self.user}:{self.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()
        key = (u.hostname, u.port or 80)
        t0 = time.perf_counter()
        for attempt in (0, 1):
            conn = conns.get(key)
            if conn is None:
                conn = conns[key] = http.client.HTTPConnection(key[0], key[1], timeout=60)
            try:
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError, http.client.CannotSendRequest):
                conn.close()
                del conns[key]
                if attempt == 1:
                    raise
        dt = time.perf_counter() - t0
        if resp.status != 200:
            hint = "" if self.user else " (no credentials given: --user/--password)"
            raise BenchError(f"token request for {params} returned HTTP {resp.status}{hint}: "
                             f"{data[:300].decode('utf-8', 'replace')}")
        body = json.loads(data)
        tok = body.get("token") or body.get("access_token")
        if not tok:
            raise BenchError("token response has neither token nor access_token")
        life = float(body.get("expires_in") or 60)
        exp = time.time() + life - min(30.0, life / 2)
        granted = frozenset(needed)
        with self.lock:
            self.fetches += 1
            self.fetch_s += dt
            self.any_token = (tok, exp)
            for res in merged:
                lst = self.by_resource.setdefault(res, [])
                lst[:] = [e for e in lst if e[2] > time.time()]
                lst.append((granted, tok, exp))
        return tok


class Registry:
    """A registry at a loopback base URL, with one persistent connection."""

    def __init__(self, base, timeout=600, auth=None):
        u = urllib.parse.urlsplit(base)
        if u.scheme != "http" or not u.hostname:
            raise BenchError(f"need a plain http://HOST:PORT URL, got {base!r}")
        check_loopback(u.hostname)
        self.host = u.hostname
        self.port = u.port or 80
        self.base = f"http://{u.hostname}:{self.port}"
        self.timeout = timeout
        self.conn = None
        self.auth = auth or Auth()
        self.token_conns = {}  # persistent connections to the token service

    def new(self):
        return Registry(self.base, self.timeout, self.auth)

    def _connect(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        for c in self.token_conns.values():
            c.close()
        self.token_conns.clear()

    def abs_url(self, path_or_url, relative_to="/"):
        """Resolve a (possibly relative) Location against the registry base URL."""
        full = urllib.parse.urljoin(self.base + relative_to, path_or_url)
        u = urllib.parse.urlsplit(full)
        check_loopback(u.hostname or "")
        if (u.port or 80) != self.port:
            raise BenchError(f"Location {path_or_url!r} points to another port")
        return full

    def path_of(self, url):
        u = urllib.parse.urlsplit(self.abs_url(url))
        return u.path + (("?" + u.query) if u.query else "")

    def request(self, method, path, body=None, headers=None, retry=True, scopes=None):
        """One request on the persistent connection; returns (status, headers, body).
        A cached bearer token covering the request's scopes is sent along; on a 401
        with a Bearer challenge a token is fetched (for the challenged scope, widened to
        pull,push,delete for repositories, plus `scopes`) and the request retried once."""
        headers = dict(headers or {})
        if body is None and method in ("PUT", "POST", "PATCH"):
            headers.setdefault("Content-Length", "0")
        needed = scopes_for_path(path) | set(scopes or ())
        tok = self.auth.cached(needed)
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        st, resp, data = self._send(method, path, body, headers, retry)
        if st == 401:
            ch = _challenge_params(resp.getheader("WWW-Authenticate"))
            if ch is not None and ch.get("realm"):
                self.auth.challenged = True
                for sc in (ch.get("scope") or "").split():
                    parsed = _parse_scope(sc)
                    if parsed:
                        kind, name, acts = parsed
                        if kind == "repository":
                            acts = acts | REPO_ACTIONS
                        needed |= {(kind, name, a) for a in acts}
                tok = self.auth.fetch(ch["realm"], ch.get("service"), needed, self.token_conns)
                headers["Authorization"] = f"Bearer {tok}"
                st, resp, data = self._send(method, path, body, headers, retry)
        return st, resp, data

    def bearer_header(self, path, scopes=None):
        """Headers with a bearer token for `path` (for curl and wrk, which cannot answer
        a challenge themselves): `{}` when the registry has not asked for auth. Makes a
        cheap request first if needed, so that the token is fetched the normal way."""
        if not self.auth.challenged:
            return {}
        needed = scopes_for_path(path) | set(scopes or ())
        tok = self.auth.cached(needed)
        if tok is None:
            self.request("HEAD", path, scopes=scopes)
            tok = self.auth.cached(needed)
        if tok is None:
            raise BenchError(f"could not get a bearer token for {path}")
        return {"Authorization": f"Bearer {tok}"}

    def _send(self, method, path, body, headers, retry):
        for attempt in (0, 1):
            conn = self._connect()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, resp, data
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError, http.client.CannotSendRequest):
                self.close()
                # Only retry idempotent-ish small requests, and only once.
                if attempt == 1 or not retry or (body is not None and len(body) > 1 << 20):
                    raise
        raise AssertionError("unreachable")

    def expect(self, want, method, path, body=None, headers=None, what=""):
        st, resp, data = self.request(method, path, body, headers)
        if st not in (want if isinstance(want, tuple) else (want,)):
            snippet = data[:300].decode("utf-8", "replace")
            raise BenchError(f"{what or method} {path}: HTTP {st} (want {want}): {snippet}")
        return resp, data

    # ---- distribution API pieces ------------------------------------------ #

    def ping(self):
        st, _, _ = self.request("GET", "/v2/")
        return st

    def start_upload(self, repo):
        t0 = time.perf_counter()
        resp, _ = self.expect(202, "POST", f"/v2/{repo}/blobs/uploads/", what="start upload")
        dt = time.perf_counter() - t0
        loc = resp.getheader("Location")
        if not loc:
            raise BenchError("POST blobs/uploads/ returned no Location")
        return self.abs_url(loc, f"/v2/{repo}/blobs/uploads/"), dt

    def put_small_blob(self, repo, data, digest=None, mount_from=None):
        """Make a small blob present in repo: cross-repo mount when mount_from is given
        (falling back to an upload if the server declines), else HEAD, then upload."""
        digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        loc = None
        if mount_from:
            st, resp, _ = self.request(
                "POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={mount_from}",
                scopes={("repository", mount_from, "pull")})
            if st == 201:
                return digest
            if st == 202 and resp.getheader("Location"):
                loc = self.abs_url(resp.getheader("Location"), f"/v2/{repo}/blobs/uploads/")
        else:
            st, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
            if st == 200:
                return digest
        if loc is None:
            loc, _ = self.start_upload(repo)
        self.expect(201, "PUT", self.path_of(with_query(loc, "digest", digest)), body=data,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Length": str(len(data))}, what="put blob")
        return digest

    def put_manifest(self, repo, ref, body):
        self.expect(201, "PUT", f"/v2/{repo}/manifests/{ref}", body=body,
                    headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(len(body))},
                    what="put manifest")


def with_query(url, key, value):
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{key}={urllib.parse.quote(value, safe=':')}"


def next_link(resp):
    """The target of a Link: <...>; rel="next" header, or None."""
    link = resp.getheader("Link")
    if not link:
        return None
    m = re.search(r'<([^>]*)>\s*;\s*rel="?next"?', link)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- #
# Measurement helpers
# --------------------------------------------------------------------------- #

def median(xs):
    return statistics.median(xs) if xs else None


def refresh_blob(path):
    """Overwrite the first 16 bytes with fresh random bytes; return (digest, size).
    Digest time is not counted by callers."""
    with open(path, "r+b") as f:
        f.write(os.urandom(16))
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
            size += n
    return "sha256:" + h.hexdigest(), size


class RssSampler:
    """Samples VmRSS of a PID every `interval` s; combines with VmHWM for the peak."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = None
        self.hwm_before = None
        self.hwm_after = None

    def _status(self):
        out = {}
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        k, v = line.split(":", 1)
                        out[k] = int(v.split()[0]) * 1024
        except OSError:
            pass
        return out

    def _run(self):
        while not self._stop.is_set():
            s = self._status()
            if "VmRSS" in s:
                self.samples.append(s["VmRSS"])
            self._stop.wait(self.interval)

    def __enter__(self):
        s = self._status()
        self.hwm_before = s.get("VmHWM")
        self.rss_before = s.get("VmRSS")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        s = self._status()
        self.hwm_after = s.get("VmHWM")
        if "VmRSS" in s:
            self.samples.append(s["VmRSS"])

    def peak(self):
        sampled = max(self.samples) if self.samples else None
        # If the high-water mark rose during the window, it is the exact peak.
        if self.hwm_before is not None and self.hwm_after is not None \
                and self.hwm_after > self.hwm_before:
            return max(self.hwm_after, sampled or 0)
        return sampled


def curl_headers(headers):
    out = []
    for k, v in (headers or {}).items():
        out += ["-H", f"{k}: {v}"]
    return out


def curl_put(url, path, timeout, headers=None):
    """PUT the whole file in one request with curl; returns (seconds, http_code)."""
    cmd = ["curl", "-sS", "--http1.1", "-X", "PUT", "-T", path,
           "-H", "Content-Type: application/octet-stream", "-H", "Expect:",
           *curl_headers(headers),
           "--max-time", str(timeout), "-o", "/dev/null",
           "-w", "%{http_code} %{time_total} %{size_upload}", url]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"curl PUT failed (rc {p.returncode}): {p.stderr.strip()}")
    code, t, up = p.stdout.split()
    return float(t), int(code), int(float(up))


def patch_client_cmd(client, url, path, off, n, headers, put=False):
    """The command line of `bench/patch-client` sending bytes off..off+n of `path` to
    `url` (a PATCH with Content-Range, or with `put` one PUT)."""
    u = urllib.parse.urlsplit(url)
    return [client, *(["--put"] if put else []), u.netloc,
            u.path + (f"?{u.query}" if u.query else ""), path, str(off), str(n),
            *(f"{k}: {v}" for k, v in (headers or {}).items())]


def client_put(client, url, path, timeout, headers=None):
    """PUT the whole file in one request with `bench/patch-client --put` (sendfile);
    returns (seconds, http_code), the time around the whole process."""
    cmd = patch_client_cmd(client, url, path, 0, os.path.getsize(path), headers, put=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    t = time.perf_counter() - t0
    status = re.search(r"^HTTP/\S+ (\d+)", p.stdout, re.M)
    if p.returncode != 0 or not status:
        raise BenchError(f"patch-client PUT failed (rc {p.returncode}): {p.stderr.strip()}")
    return t, int(status.group(1))


def curl_get(url, timeout, headers=None):
    cmd = ["curl", "-sS", "--http1.1", "--max-time", str(timeout), "-o", "/dev/null",
           *curl_headers(headers),
           "-w", "%{http_code} %{time_total} %{size_download}", url]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"curl GET failed (rc {p.returncode}): {p.stderr.strip()}")
    code, t, down = p.stdout.split()
    return float(t), int(code), int(float(down))


def parse_wrk_time(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", s.strip())
    if not m:
        raise BenchError(f"cannot parse wrk time {s!r}")
    v = float(m.group(1))
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}[m.group(2)]


# --------------------------------------------------------------------------- #
# The suite
# --------------------------------------------------------------------------- #

def small_image():
    """A tiny but real image: config `{}` and one gzipped tar layer."""
    config = b"{}"
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as tf:
        payload = b"hello from the berth benchmark\n"
        ti = tarfile.TarInfo("hello.txt")
        ti.size = len(payload)
        ti.mtime = 0
        tf.addfile(ti, io.BytesIO(payload))
    layer = gzip.compress(tbuf.getvalue(), mtime=0)
    cd = "sha256:" + hashlib.sha256(config).hexdigest()
    ld = "sha256:" + hashlib.sha256(layer).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": ld, "size": len(layer)}],
    }, separators=(",", ":")).encode()
    return config, cd, layer, ld, manifest


class Suite:
    def __init__(self, args):
        self.a = args
        self.reg = Registry(args.url, auth=Auth(args.user, args.password))
        self.pid = args.pid
        self.res = {"label": args.label, "url": self.reg.base, "pid": args.pid,
                    "params": {}, "metrics": {}, "errors": {}}
        p = args.repo_prefix.strip("/")
        self.repo_single = f"{p}/single"
        self.repo_chunked = f"{p}/chunked"
        self.repo_small = f"{p}/small"
        self.repo_tags = f"{p}/tags"
        self.repo_pull = f"{p}/pull"
        self.repo_concurrent = f"{p}/concurrent"
        self.repo_public = args.public_repo.strip("/")
        self.catalog_prefix = args.catalog_prefix.strip("/")
        self.last_large = None  # (repo, digest, size) of the last large blob pushed

    def warm_auth(self, repo):
        """Fetch the token for repo before a timed section (as a client has its token
        before it streams a blob); a no-op for a registry that does not ask for one."""
        return self.reg.bearer_header(f"/v2/{repo}/manifests/latest")

    def metric(self, key, name, value, unit, better, **extra):
        self.res["metrics"][key] = dict(name=name, value=value, unit=unit, better=better, **extra)
        v = f"{value:.2f}" if isinstance(value, float) else str(value)
        log(f"{name}: {v} {unit}")

    def guarded(self, key, fn):
        try:
            fn()
        except Exception as e:  # record and go on with the other metrics
            msg = f"{type(e).__name__}: {e}"
            self.res["errors"][key] = msg
            log(f"ERROR in {key}: {msg}")
            self.reg.close()

    # ---- blob uploads ------------------------------------------------------ #

    def single_upload(self, repo, path, sample_rss=False, client="curl"):
        """One blob as POST + one PUT of the whole file, by `curl -T` or (another
        `client`) `bench/patch-client --put`."""
        digest, size = refresh_blob(path)
        os.sync()  # do not let writeback of earlier runs land in this timing
        loc, t_post = self.reg.start_upload(repo)
        # curl cannot answer a challenge with a streamed body: give it the token.
        auth = self.reg.bearer_header(self.reg.path_of(loc))
        self.reg.close()  # curl uses its own connection; do not hold an idle one
        url = with_query(loc, "digest", digest)
        sampler = RssSampler(self.pid) if (sample_rss and self.pid) else None

        def put():
            if client == "curl":
                return curl_put(url, path, self.a.timeout, auth)
            return (*client_put(client, url, path, self.a.timeout, auth), size)
        if sampler:
            with sampler:
                t_put, code, up = put()
        else:
            t_put, code, up = put()
        if code != 201:
            raise BenchError(f"single PUT returned HTTP {code}")
        if up != size:
            raise BenchError(f"curl uploaded {up} bytes, file has {size}")
        self.verify_blob(repo, digest, size)
        return size / MIB / (t_post + t_put), sampler, digest, size

    def chunked_upload(self, repo, path):
        digest, size = refresh_blob(path)
        os.sync()
        reg = self.reg
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        t0 = time.perf_counter()
        loc, _ = reg.start_upload(repo)
        off = 0
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                st, resp, data = reg.request(
                    "PATCH", reg.path_of(loc), body=mv[:n], retry=False,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Length": str(n),
                             "Content-Range": f"{off}-{off + n - 1}"})
                if st != 202:
                    raise BenchError(f"PATCH at offset {off}: HTTP {st}: "
                                     f"{data[:300].decode('utf-8', 'replace')}")
                new = resp.getheader("Location")
                if not new:
                    raise BenchError("PATCH response has no Location")
                loc = reg.abs_url(new, reg.path_of(loc))
                off += n
        reg.expect(201, "PUT", reg.path_of(with_query(loc, "digest", digest)),
                   what="final PUT")
        dt = time.perf_counter() - t0
        self.verify_blob(repo, digest, size)
        return size / MIB / dt

    def chunked_upload_per_process(self, repo, path, client):
        """Chunked upload as a client that runs one process, hence one new connection,
        per 8 MiB PATCH (`patch_per_process`). Each PATCH pays a new TCP connection
        and the server's whole per-request cost."""
        digest, size = refresh_blob(path)
        if client == "curl":
            split_chunks(path)
        os.sync()
        reg = self.reg
        t0 = time.perf_counter()
        loc, _ = reg.start_upload(repo)
        auth = reg.bearer_header(reg.path_of(loc))
        reg.close()
        first = loc
        loc = patch_per_process(lambda new: reg.abs_url(new, reg.path_of(first)) if new
                                else first, path, size, auth, client, self.a.timeout)
        reg.expect(201, "PUT", reg.path_of(with_query(reg.abs_url(loc, reg.path_of(first)),
                                                      "digest", digest)), what="final PUT")
        dt = time.perf_counter() - t0
        self.verify_blob(repo, digest, size)
        return size / MIB / dt

    def verify_blob(self, repo, digest, size):
        resp, _ = self.reg.expect(200, "HEAD", f"/v2/{repo}/blobs/{digest}", what="HEAD blob")
        cl = resp.getheader("Content-Length")
        if cl is not None and int(cl) != size:
            raise BenchError(f"HEAD blob says {cl} bytes, uploaded {size}")

    def run_uploads(self):
        a = self.a
        for tag, path in (("small", a.small), ("large", a.large)):
            size_mib = os.path.getsize(path) // MIB
            sz = f"{size_mib} MiB" if size_mib < 1024 else f"{size_mib // 1024} GiB"

            def single():
                rates, peaks = [], []
                self.warm_auth(self.repo_single)
                for i in range(a.runs):
                    rate, sampler, digest, size = self.single_upload(
                        self.repo_single, path, sample_rss=(tag == "large"))
                    log(f"single PUT {sz} run {i + 1}: {rate:.1f} MiB/s")
                    rates.append(rate)
                    if sampler and sampler.peak():
                        peaks.append(sampler.peak())
                    if tag == "large":
                        self.last_large = (self.repo_single, digest, size)
                self.metric(f"upload_single_{tag}", f"single-request PUT {sz}",
                            median(rates), "MiB/s", "higher", runs=rates)
                if tag == "large" and peaks:
                    self.metric("rss_peak_upload_large", f"server peak RSS during {sz} PUT",
                                max(peaks) / MIB, "MiB", "lower",
                                runs=[p / MIB for p in peaks])
            self.guarded(f"upload_single_{tag}", single)

        for tag, path in (("small", a.small), ("large", a.large)):
            size_mib = os.path.getsize(path) // MIB
            sz = f"{size_mib} MiB" if size_mib < 1024 else f"{size_mib // 1024} GiB"

            def chunked():
                rates, disk = [], []
                self.warm_auth(self.repo_chunked)
                for i in range(a.runs):
                    rate = self.chunked_upload(self.repo_chunked, path)
                    # The disk's synced-write rate drifts as a run writes GiB after
                    # GiB: measure it beside each upload so the two can be compared.
                    probe = synced_copy_rate(path)
                    log(f"chunked {sz} run {i + 1}: {rate:.1f} MiB/s "
                        f"(dd conv=fsync right after: {probe:.1f} MiB/s)")
                    rates.append(rate)
                    disk.append(probe)
                self.metric(f"upload_chunked_{tag}", f"chunked upload {sz} (8 MiB PATCHes)",
                            median(rates), "MiB/s", "higher", runs=rates)
                self.metric(f"disk_after_chunked_{tag}",
                            f"dd {sz} conv=fsync beside each chunked run",
                            median(disk), "MiB/s", "higher", runs=disk)
            self.guarded(f"upload_chunked_{tag}", chunked)

        size_mib = os.path.getsize(a.small) // MIB
        if os.access(a.patch_client, os.X_OK):
            def single_sendfile():
                rates = []
                self.warm_auth(self.repo_single)
                for i in range(a.runs):
                    rates.append(self.single_upload(self.repo_single, a.small,
                                                    client=a.patch_client)[0])
                    log(f"single PUT {size_mib} MiB by patch-client --put, run {i + 1}: "
                        f"{rates[-1]:.1f} MiB/s")
                self.metric("upload_single_sendfile_small",
                            f"single-request PUT {size_mib} MiB, bench/patch-client --put "
                            "(sendfile)", median(rates), "MiB/s", "higher", runs=rates)
            self.guarded("upload_single_sendfile_small", single_sendfile)

        for key, client in (("upload_chunked_newconn_small", "curl"),
                            ("upload_chunked_newproc_small", a.patch_client)):
            if client != "curl" and not os.access(client, os.X_OK):
                log(f"{client} not found (cargo build --release builds it): "
                    f"{key} not measured")
                continue
            name = "curl" if client == "curl" else "patch-client"

            def per_process(key=key, client=client, name=name):
                rates, disk = [], []
                self.warm_auth(self.repo_chunked)
                for i in range(a.runs):
                    rates.append(self.chunked_upload_per_process(self.repo_chunked, a.small,
                                                                 client))
                    # The ceiling of this row is the synced copy; this disk's rate swings
                    # several-fold within minutes, so it is taken beside each run too.
                    disk.append(synced_copy_rate(a.small))
                    log(f"chunked {size_mib} MiB, a {name} per PATCH, run {i + 1}: "
                        f"{rates[-1]:.1f} MiB/s (dd conv=fsync right after: "
                        f"{disk[-1]:.1f} MiB/s)")
                self.metric(key, f"chunked upload {size_mib} MiB, one {name} process and "
                            "connection per 8 MiB PATCH", median(rates), "MiB/s", "higher",
                            runs=rates)
                self.metric(BESIDE[key], f"dd {size_mib} MiB conv=fsync beside each run "
                            f"with a {name} per PATCH", median(disk), "MiB/s", "higher",
                            runs=disk)
            self.guarded(key, per_process)

    def run_blob_get(self):
        if not self.last_large:
            raise BenchError("no large blob was uploaded; cannot time GET")
        repo, digest, size = self.last_large
        size_mib = size // MIB
        sz = f"{size_mib} MiB" if size_mib < 1024 else f"{size_mib // 1024} GiB"
        url = f"{self.reg.base}/v2/{repo}/blobs/{digest}"
        auth = self.reg.bearer_header(f"/v2/{repo}/blobs/{digest}")
        self.reg.close()
        rates = []
        for i in range(self.a.runs):
            os.sync()
            t, code, down = curl_get(url, self.a.timeout, auth)
            if code != 200 or down != size:
                raise BenchError(f"blob GET: HTTP {code}, {down} bytes (want 200, {size})")
            rates.append(size / MIB / t)
            log(f"blob GET {sz} run {i + 1}: {rates[-1]:.1f} MiB/s")
        self.metric("blob_get_large", f"blob GET {sz}", median(rates), "MiB/s", "higher",
                    runs=rates)

    # ---- skopeo pull ------------------------------------------------------ #

    def push_layered_image(self, repo, tag, layers, layer_bytes):
        """Push an image of `layers` layers of random bytes (uncompressed tar media type,
        so no client unpacks them; the config's diff_ids are the layer digests) with
        this script's own client; not timed. Returns the layers' (digest, size) list."""
        reg = self.reg
        descs = []
        for _ in range(layers):
            data = os.urandom(layer_bytes)
            descs.append((reg.put_small_blob(repo, data), len(data)))
            del data
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d for d, _ in descs]},
        }, separators=(",", ":")).encode()
        cd = reg.put_small_blob(repo, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": d, "size": n}
                       for d, n in descs],
        }, separators=(",", ":")).encode()
        reg.put_manifest(repo, tag, manifest)
        return descs

    def run_skopeo_pull(self):
        """`skopeo copy docker://… dir:DEST` of an image of N random layers, a fresh
        destination each run, MiB/s of layer bytes over skopeo's wall time (process
        start, token request, manifest, config and layers, written to the work dir)."""
        a = self.a
        if not shutil.which("skopeo"):
            raise BenchError("skopeo not found (apt-get install skopeo)")
        repo = self.repo_pull
        layer_bytes = a.pull_layer_mib * MIB
        descs = self.push_layered_image(repo, "latest", a.pull_layers, layer_bytes)
        total = sum(n for _, n in descs)
        self.reg.close()
        hostport = f"{self.reg.host}:{self.reg.port}"
        work = tempfile.mkdtemp(prefix="skopeo-pull-", dir=a.workdir)
        authfile = None
        try:
            cmd = ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"]
            if self.reg.auth.challenged and a.user:
                # Credentials in a 0600 file rather than --src-creds (visible in ps).
                authfile = os.path.join(work, "auth.json")
                cred = base64.b64encode(f"{a.user}:{a.password or ''}".encode()).decode()
                fd = os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    json.dump({"auths": {hostport: {"auth": cred}}}, f)
                cmd += ["--src-authfile", authfile]
            else:
                cmd += ["--src-no-creds"]
            src = f"docker://{hostport}/{repo}:latest"
            rates = []
            for i in range(a.runs):
                dest = os.path.join(work, f"pull-{i}")
                os.sync()
                t0 = time.perf_counter()
                p = subprocess.run(cmd + [src, f"dir:{dest}"], capture_output=True, text=True,
                                   timeout=a.timeout)
                dt = time.perf_counter() - t0
                if p.returncode != 0:
                    raise BenchError(f"skopeo copy failed (rc {p.returncode}): "
                                     f"{p.stderr.strip()[:600]}")
                self.check_pulled(dest, descs)
                shutil.rmtree(dest)
                rates.append(total / MIB / dt)
                log(f"skopeo pull {len(descs)} x {a.pull_layer_mib} MiB run {i + 1}: "
                    f"{dt:.2f} s, {rates[-1]:.1f} MiB/s")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.metric("pull_skopeo", f"skopeo copy pull, {len(descs)} x {a.pull_layer_mib} MiB "
                    "layers to dir: (whole process)", median(rates), "MiB/s", "higher",
                    runs=rates, auth=("bearer token (--src-authfile)" if authfile
                                      else "anonymous"))

    @staticmethod
    def check_pulled(dest, descs):
        """The pulled dir: has the manifest with every layer, each file of the right size."""
        with open(os.path.join(dest, "manifest.json"), "rb") as f:
            got = [(l["digest"], l["size"]) for l in json.load(f).get("layers", [])]
        if got != descs:
            raise BenchError(f"pulled manifest lists {len(got)} layers, pushed {len(descs)}")
        for d, n in descs:
            path = os.path.join(dest, d.split(":", 1)[1])
            if not os.path.exists(path) or os.path.getsize(path) != n:
                raise BenchError(f"pulled layer {d} missing or not {n} bytes")

    # ---- concurrent pushers ----------------------------------------------- #

    def run_concurrent_push(self):
        """N clients (threads, one connection each) each push a fresh blob of M MiB
        (POST, then one PUT with the whole body) at the same moment; the server's VmRSS
        is sampled every 50 ms from the start of the PUTs to the end of the last one,
        then read again 5 s later. Median MiB/s, the highest peak, the last RSS after."""
        a = self.a
        n, size = a.pushers, a.pusher_mib * MIB
        shared = os.urandom(size - 16)  # every blob: these bytes + 16 of its own
        base_hash = hashlib.sha256(shared)
        self.warm_auth(self.repo_concurrent)
        before = self.rss_now()
        rates, peaks, afters = [], [], []
        for i in range(a.runs):
            os.sync()
            rate, peak, after = self.concurrent_push_once(n, shared, base_hash)
            rates.append(rate)
            peaks.append(peak)
            afters.append(after)
            log(f"{n} concurrent pushers x {a.pusher_mib} MiB run {i + 1}: {rate:.1f} MiB/s"
                + (f", peak RSS {peak / MIB:.1f} MiB, 5 s after {after / MIB:.1f} MiB"
                   if peak else ""))
        what = f"{n} clients each pushing a fresh {a.pusher_mib} MiB blob at once"
        self.metric("push_concurrent", f"{what} (POST + one PUT, total)", median(rates),
                    "MiB/s", "higher", runs=rates)
        if before is not None:
            self.metric("rss_before_concurrent", "server RSS before the concurrent pushes",
                        before / MIB, "MiB", "lower")
        if all(peaks):
            self.metric("rss_peak_concurrent", f"server peak RSS while {what}",
                        max(peaks) / MIB, "MiB", "lower", runs=[p / MIB for p in peaks])
        if all(afters):
            self.metric("rss_after_concurrent", "server RSS 5 s after the last concurrent push",
                        afters[-1] / MIB, "MiB", "lower", runs=[x / MIB for x in afters])

    def rss_now(self):
        if not self.pid:
            return None
        return RssSampler(self.pid)._status().get("VmRSS")

    def concurrent_push_once(self, n, shared, base_hash):
        repo = self.repo_concurrent
        size = len(shared) + 16
        barrier = threading.Barrier(n + 1)
        lock = threading.Lock()
        ends, errors, pushed = [], [], []

        def pusher():
            reg = self.reg.new()
            try:
                suffix = os.urandom(16)
                h = base_hash.copy()
                h.update(suffix)
                digest = "sha256:" + h.hexdigest()
                try:
                    loc, _ = reg.start_upload(repo)
                    path = reg.path_of(with_query(loc, "digest", digest))
                    auth = reg.bearer_header(path)
                    conn = reg._connect()
                finally:
                    barrier.wait()  # every client starts its PUT at the same moment
                conn.putrequest("PUT", path, skip_accept_encoding=True)
                for k, v in {"Content-Type": "application/octet-stream",
                             "Content-Length": str(size), **auth}.items():
                    conn.putheader(k, v)
                conn.endheaders()
                conn.send(memoryview(shared))
                conn.send(suffix)
                resp = conn.getresponse()
                body = resp.read()
                t = time.perf_counter()
                if resp.status != 201:
                    raise BenchError(f"concurrent PUT: HTTP {resp.status}: "
                                     f"{body[:300].decode('utf-8', 'replace')}")
                with lock:
                    ends.append(t)
                    pushed.append(digest)
            except Exception as e:
                with lock:
                    errors.append(e)
            finally:
                reg.close()

        ts = [threading.Thread(target=pusher) for _ in range(n)]
        for t in ts:
            t.start()
        sampler = RssSampler(self.pid) if self.pid else None
        barrier.wait()
        t0 = time.perf_counter()
        if sampler:
            with sampler:
                for t in ts:
                    t.join()
        else:
            for t in ts:
                t.join()
        if errors:
            raise BenchError(f"{len(errors)} of {n} concurrent pushes failed; first: "
                             f"{type(errors[0]).__name__}: {errors[0]}")
        dt = max(ends) - t0
        for d in pushed:  # not timed
            self.verify_blob(repo, d, size)
        after = None
        if sampler:
            time.sleep(5)
            after = self.rss_now()
        return n * size / MIB / dt, (sampler.peak() if sampler else None), after

    # ---- manifests, tags, catalog ---------------------------------------- #

    def push_small_image(self, reg, repo, tag, mount_from=None):
        config, cd, layer, ld, manifest = self.image
        reg.put_small_blob(repo, config, cd, mount_from)
        reg.put_small_blob(repo, layer, ld, mount_from)
        reg.put_manifest(repo, tag, manifest)

    def run_manifest_get(self):
        self.wrk_manifest(self.repo_small, anonymous=False, key="manifest_get",
                          what="manifest GET by tag")

    def run_manifest_get_anonymous(self):
        """The same GET without any credentials, from a public project (Berth) or any
        repository of a registry that never asks for them."""
        self.wrk_manifest(self.repo_public, anonymous=True, key="manifest_get_anon",
                          what="manifest GET by tag, anonymous (public project)")

    def wrk_manifest(self, repo, anonymous, key, what):
        self.push_small_image(self.reg, repo, "latest")
        # Sanity check the GET once before hammering it.
        resp, data = self.reg.expect(200, "GET", f"/v2/{repo}/manifests/latest",
                                     headers={"Accept": OCI_MANIFEST}, what="GET manifest")
        if data != self.image[4]:
            raise BenchError("GET manifest returned different bytes than were pushed")
        # wrk cannot answer a challenge: when the registry wants a token, fetch one for
        # pulling this repository and send it with every request (the server verifies
        # it on each one). The check above proves the same token is accepted.
        if anonymous:
            # No credentials: what `docker pull` of a public image does. A registry that
            # challenges hands out an anonymous pull token, fetched once as usual.
            anon = Registry(self.reg.base, auth=Auth())
            anon.expect(200, "GET", f"/v2/{repo}/manifests/latest",
                        headers={"Accept": OCI_MANIFEST}, what="anonymous GET manifest")
            auth = anon.bearer_header(f"/v2/{repo}/manifests/latest")
            anon.close()
        else:
            auth = self.reg.bearer_header(f"/v2/{repo}/manifests/latest")
        self.reg.close()
        url = f"{self.reg.base}/v2/{repo}/manifests/latest"
        headers = ["-H", f"Accept: {OCI_MANIFEST}", *curl_headers(auth)]
        auth_note = ("anonymous bearer token" if anonymous else "bearer token") if auth \
            else "anonymous"
        # Median of --runs wrk runs, like the static-file ceiling it is compared with.
        rpss, p99s, p50s, sockerrs, outs = [], [], [], [], []
        for _ in range(max(1, self.a.runs)):
            rps, p99, p50, out = wrk_run(url, self.a.wrk_threads, self.a.wrk_conns,
                                         self.a.wrk_duration, headers)
            outs.append(out)
            rpss.append(rps)
            p99s.append(p99)
            if p50 is not None:
                p50s.append(p50)
            sockerr = re.search(r"Socket errors:.*", out)
            if sockerr:
                sockerrs.append(sockerr.group(0).strip())
        self.res[f"wrk_output_{key}"] = "\n".join(outs)
        note = f"{self.a.wrk_conns} conns, {self.a.wrk_threads} threads, {self.a.wrk_duration}s"
        if sockerrs:
            note += "; " + "; ".join(sockerrs)
        self.metric(f"{key}_rps", f"{what} ({note})", median(rpss),
                    "req/s", "higher", auth=auth_note, runs=rpss)
        self.metric(f"{key}_p99", f"{what}: p99 latency",
                    median(p99s), "ms", "lower", auth=auth_note, runs=p99s)
        if p50s:
            self.metric(f"{key}_p50", f"{what}: p50 latency",
                        median(p50s), "ms", "lower", auth=auth_note, runs=p50s)

    def parallel(self, items, fn, workers):
        """Run fn(reg, item) over items with `workers` threads, each with its own
        persistent connection. Returns elapsed seconds."""
        errors = []
        lock = threading.Lock()
        it = iter(items)

        def worker():
            reg = self.reg.new()
            try:
                while True:
                    with lock:
                        if errors:
                            return
                        try:
                            item = next(it)
                        except StopIteration:
                            return
                    fn(reg, item)
            except Exception as e:
                with lock:
                    errors.append(e)
            finally:
                reg.close()

        t0 = time.perf_counter()
        ts = [threading.Thread(target=worker) for _ in range(workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return dt

    def time_list(self, path, key, reps):
        """Median wall time (ms) of GET path, following Link rel=next pages.
        Returns (median_ms, items, pages)."""
        reg = self.reg.new()
        times = []
        items = pages = 0
        try:
            for i in range(reps + 1):  # first one is a warm-up
                t0 = time.perf_counter()
                cur = path
                items = pages = 0
                while cur and pages < 10000:
                    resp, data = reg.expect(200, "GET", cur, what=f"GET {cur}")
                    body = json.loads(data)
                    items += len(body.get(key) or [])
                    pages += 1
                    nxt = next_link(resp)
                    cur = reg.path_of(nxt) if nxt else None
                dt = (time.perf_counter() - t0) * 1000
                if i > 0:
                    times.append(dt)
        finally:
            reg.close()
        return median(times), items, pages

    def run_tags(self):
        a = self.a
        repo = self.repo_tags
        self.push_small_image(self.reg, repo, "t0")
        manifest = self.image[4]
        names = [f"t{i:05d}" for i in range(1, a.tags)]
        dt = self.parallel(names, lambda reg, t: reg.put_manifest(repo, t, manifest),
                           a.push_workers)
        self.metric("tag_push_rate", f"manifest PUT under new tag ({a.push_workers} conns)",
                    len(names) / dt, "req/s", "higher")
        ms, items, pages = self.time_list(f"/v2/{repo}/tags/list", "tags", a.list_reps)
        if items != a.tags:
            raise BenchError(f"tags/list returned {items} tags in {pages} pages, want {a.tags}")
        self.metric("tags_list_full", f"tags/list, {a.tags} tags, full list (median of "
                    f"{a.list_reps}{', ' + str(pages) + ' pages via Link' if pages > 1 else ''})",
                    ms, "ms", "lower", pages=pages)
        ms, items, pages = self.time_list(f"/v2/{repo}/tags/list?n={a.tags}", "tags",
                                          a.list_reps)
        self.metric("tags_list_n", f"tags/list?n={a.tags} ({items} tags returned"
                    f"{', ' + str(pages) + ' pages' if pages > 1 else ''})",
                    ms, "ms", "lower", items=items, pages=pages)

    def run_catalog(self):
        a = self.a
        repos = [f"{self.catalog_prefix}/r{i:05d}" for i in range(a.repos)]
        f0, s0 = self.reg.auth.stats()
        dt = self.parallel(
            repos, lambda reg, r: self.push_small_image(reg, r, "latest", self.repo_small),
            a.push_workers)
        f1, s1 = self.reg.auth.stats()
        # A client pushing to a new repository needs a new token for it: those token
        # requests (each checks the password) are part of the push, as with docker.
        extra = {}
        if f1 > f0:
            extra = dict(auth=f"bearer, {f1 - f0} token fetches", token_fetches=f1 - f0,
                         token_fetch_s=s1 - s0)
        self.metric("repo_push_rate", f"new repository push, small image "
                    f"({a.push_workers} conns)", len(repos) / dt, "repos/s", "higher",
                    **extra)
        # Only the first page is timed, as a client asking for n=1000 would see it.
        reg = self.reg.new()
        times = []
        n_items = 0
        try:
            for i in range(a.list_reps + 1):
                t0 = time.perf_counter()
                resp, data = reg.expect(200, "GET", "/v2/_catalog?n=1000", what="catalog")
                n_items = len(json.loads(data).get("repositories") or [])
                if i > 0:
                    times.append((time.perf_counter() - t0) * 1000)
        finally:
            reg.close()
        if n_items < min(1000, a.repos):
            raise BenchError(f"_catalog?n=1000 returned only {n_items} repositories")
        self.metric("catalog", f"_catalog?n=1000 over {a.repos}+ repos ({n_items} returned, "
                    f"median of {a.list_reps})", median(times), "ms", "lower")

    def run(self):
        a = self.a
        self.res["params"] = {
            "small_bytes": os.path.getsize(a.small), "large_bytes": os.path.getsize(a.large),
            "runs": a.runs, "tags": a.tags, "repos": a.repos,
            "wrk": {"threads": a.wrk_threads, "conns": a.wrk_conns, "duration_s": a.wrk_duration},
            "list_reps": a.list_reps, "push_workers": a.push_workers,
            "pull_layers": a.pull_layers, "pull_layer_mib": a.pull_layer_mib,
            "pushers": a.pushers, "pusher_mib": a.pusher_mib,
        }
        self.image = small_image()
        self.res["loadavg_start"] = os.getloadavg()
        st = self.reg.ping()
        if st != 200:
            raise BenchError(f"GET /v2/ returned {st}"
                             + ("" if self.a.user else " (no credentials given)"))
        if self.pid:
            s = RssSampler(self.pid)._status()
            if "VmRSS" in s:
                self.metric("rss_idle", "server RSS at start", s["VmRSS"] / MIB, "MiB", "lower")
        t0 = time.perf_counter()
        self.run_uploads()
        self.guarded("blob_get_large", self.run_blob_get)
        if a.pull_layers > 0:
            self.guarded("pull_skopeo", self.run_skopeo_pull)
        if a.pushers > 0:
            self.guarded("push_concurrent", self.run_concurrent_push)
        self.guarded("manifest_get", self.run_manifest_get)
        self.guarded("manifest_get_anon", self.run_manifest_get_anonymous)
        self.guarded("tags_list", self.run_tags)
        self.guarded("catalog", self.run_catalog)
        if self.pid:
            s = RssSampler(self.pid)._status()
            if "VmRSS" in s:
                self.metric("rss_end", "server RSS at end of suite", s["VmRSS"] / MIB, "MiB",
                            "lower")
        self.res["elapsed_s"] = time.perf_counter() - t0
        fetches, fetch_s = self.reg.auth.stats()
        self.res["auth"] = {"mode": self.reg.auth.describe(), "token_fetches": fetches,
                            "token_fetch_s": fetch_s}
        log(f"suite finished in {self.res['elapsed_s']:.0f} s; auth: "
            f"{self.reg.auth.describe()}, {fetches} token fetches ({fetch_s:.1f} s)")
        return self.res


# --------------------------------------------------------------------------- #
# Physical limits
# --------------------------------------------------------------------------- #

def reference_config(rootdirectory, port):
    """The reference registry's config for every benchmark: its filesystem driver at
    `rootdirectory`, listening on 127.0.0.1:`port`, no access log, no upload purging."""
    return f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {rootdirectory}
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""


def split_chunks(path):
    """Cut `path` into 8 MiB files `<path>.parts/NNNN` (`split`), as a script that
    uploads a file a chunk per process does before it starts. Not timed by callers:
    the file changes before each upload (`refresh_blob`)."""
    parts = f"{path}.parts"
    shutil.rmtree(parts, ignore_errors=True)
    os.makedirs(parts)
    subprocess.run(["split", "-b", str(CHUNK), "-d", "-a", "4", path, f"{parts}/"],
                   check=True)


def chunk_files(path):
    """The files `split_chunks(path)` made, in order; an error when they no longer
    hold `path` (it changed since)."""
    parts = sorted(glob.glob(f"{path}.parts/*"))
    if sum(os.path.getsize(p) for p in parts) != os.path.getsize(path):
        raise BenchError(f"{path}.parts does not hold {path}: run split_chunks first")
    return parts


def patch_per_process(url_of, path, size, auth, client, timeout):
    """PATCH `path` in 8 MiB chunks, one client process (hence one new connection) per
    chunk; `url_of(location)` gives each chunk's URL from the last answer's Location
    (None at first). `client` "curl": `curl -T` streams each chunk from the files
    `split_chunks(path)` made (which must be current). Otherwise the path of
    `bench/patch-client`, which sends the file's range with sendfile(2). Returns the
    last Location."""
    parts = chunk_files(path) if client == "curl" else []
    loc, off = None, 0
    while off < size:
        n = min(CHUNK, size - off)
        url = url_of(loc)
        if client == "curl":
            p = subprocess.run(curl_patch_cmd(url, parts[off // CHUNK], off, n, auth, timeout),
                               capture_output=True, text=True)
        else:
            p = subprocess.run(patch_client_cmd(client, url, path, off, n, auth),
                               capture_output=True, text=True, timeout=timeout)
        head = p.stdout
        status = re.search(r"^HTTP/\S+ (\d+)", head, re.M)
        if p.returncode != 0 or not status or status.group(1) != "202":
            raise BenchError(f"PATCH at offset {off}: {head[:300]} {p.stderr[:300]}")
        new = re.search(r"^location:\s*(\S+)", head, re.M | re.I)
        if not new:
            raise BenchError("PATCH response has no Location")
        loc = new.group(1)
        off += n
    return loc


def curl_patch_cmd(url, part, off, n, auth, timeout, extra=()):
    """`curl -T part -X PATCH`: the chunk streamed from its file (`--data-binary @file`
    would read it whole into memory first: about half the rate here), the response
    head on stdout."""
    return ["curl", "-sS", "--http1.1", "-X", "PATCH", "-T", part,
            "-H", "Content-Type: application/octet-stream", "-H", "Expect:",
            "-H", f"Content-Range: {off}-{off + n - 1}", *curl_headers(auth),
            "-D", "-", "-o", "/dev/null", "--max-time", str(timeout), *extra, url]


class _Sink:
    """A minimal loopback HTTP server for the client-side ceiling: PUT bodies are read
    and discarded, GET answers with the file via sendfile(). One connection at a time."""

    def __init__(self, path):
        import socket
        self.path = path
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                self._handle(c)
            except OSError:
                pass
            finally:
                c.close()

    def _handle(self, c):
        head = b""
        while b"\r\n\r\n" not in head:
            d = c.recv(65536)
            if not d:
                return
            head += d
        head, rest = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].split()[0]
        clen = 0
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "content-length":
                clen = int(v)
        if method in ("PUT", "PATCH"):
            left = clen - len(rest)
            buf = bytearray(1 << 20)
            while left > 0:
                n = c.recv_into(buf)
                if not n:
                    return
                left -= n
            c.sendall(b"HTTP/1.1 202 Accepted\r\nLocation: /sink\r\nContent-Length: 0\r\n"
                      b"Connection: close\r\n\r\n" if method == "PATCH" else
                      b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        else:
            size = os.path.getsize(self.path)
            c.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n"
                      f"Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
                      .encode())
            with open(self.path, "rb") as f:
                off = 0
                while off < size:
                    n = os.sendfile(c.fileno(), f.fileno(), off, size - off)
                    if n == 0:
                        break
                    off += n

    def close(self):
        self._stop = True
        self.sock.close()


def synced_copy_rate(path, workdir=None, direct=False):
    """MiB/s of a synced copy of `path` into `workdir` (default: its own directory, on
    the registries' disk); `direct` writes with O_DIRECT, past the page cache."""
    dst = os.path.join(workdir or os.path.dirname(path), "synced-copy.bin")
    size = os.path.getsize(path)
    os.sync()
    t0 = time.perf_counter()
    flags = ["oflag=direct"] if direct else []
    subprocess.run(["dd", f"if={path}", f"of={dst}", "bs=8M", "conv=fsync", "status=none"]
                   + flags, check=True)
    rate = size / MIB / (time.perf_counter() - t0)
    os.unlink(dst)
    return rate


def free_port():
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def wrk_run(url, threads, conns, duration, headers=()):
    """wrk against url: (req/s, p99 ms, p50 ms, raw output); non-2xx is an error."""
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--latency",
           "--timeout", "5s", *headers, url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    out = p.stdout
    if p.returncode != 0:
        raise BenchError(f"wrk failed (rc {p.returncode}): {p.stderr.strip()}")
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if not rps or not p99:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    if non2xx and int(non2xx.group(1)) > 0:
        raise BenchError(f"wrk saw {non2xx.group(1)} non-2xx responses:\n{out}")
    return (float(rps.group(1)), parse_wrk_time(p99.group(1)),
            parse_wrk_time(p50.group(1)) if p50 else None, out)


def static_ceiling(workdir, size, threads, conns, duration, runs):
    """The request rate of nginx serving one static file of `size` bytes (the
    benchmark manifest's size) to wrk with the suite's settings: what a registry's
    manifest GET could reach at best on this machine. nginx runs as one master and
    `auto` workers (one per CPU), access log off, as a minimal static server."""
    nginx = next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.access(p, os.X_OK)),
                 None)
    if not nginx:
        log("nginx not found (apt-get install nginx-light): no static-file ceiling")
        return None
    root = os.path.join(workdir, "nginx")
    os.makedirs(os.path.join(root, "www"), exist_ok=True)
    with open(os.path.join(root, "www", "manifest"), "wb") as f:
        f.write((b"{" + b"x" * max(size - 2, 0) + b"}")[:size])
    port = free_port()
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        # Run as root, nginx would hand its workers to `nobody`, who cannot read a
        # private work dir: keep them as the user running the benchmark.
        user = "user root;\n" if os.geteuid() == 0 else ""
        f.write(f"""{user}daemon off;
worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    default_type application/vnd.oci.image.manifest.v1+json;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
""")
    os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
    proc = subprocess.Popen([nginx, "-c", conf, "-p", root], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/manifest"
        deadline = time.monotonic() + 10
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/manifest")
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200 and len(body) == size:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise BenchError(f"nginx did not start: {err.strip()}")
            time.sleep(0.05)
        rps, p99 = [], []
        for _ in range(runs):
            r, p, _, _ = wrk_run(url, threads, conns, duration,
                                 ("-H", f"Accept: {OCI_MANIFEST}"))
            rps.append(r)
            p99.append(p)
        return rps, p99
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cmd_limits(a):
    a.chunk_file = a.chunk_file or a.file
    size = os.path.getsize(a.file)
    # Warm the page cache so sha256 measures the CPU, as the registries see it.
    subprocess.run(["cat", a.file], stdout=subprocess.DEVNULL, check=True)
    sha = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        subprocess.run(["openssl", "dgst", "-sha256", a.file], stdout=subprocess.DEVNULL,
                       check=True)
        sha.append(size / MIB / (time.perf_counter() - t0))
    cp = [synced_copy_rate(a.file, a.workdir) for _ in range(a.runs)]
    cpd = [synced_copy_rate(a.file, a.workdir, direct=True) for _ in range(a.runs)]
    # Client-side ceiling: curl against a trivial discard / sendfile server (Python).
    put, put_client, get, patch_floor = [], [], [], {}
    sink = _Sink(a.file)
    try:
        url = f"http://127.0.0.1:{sink.port}/sink"
        for _ in range(a.runs):
            t, code, up = curl_put(url, a.file, 600)
            if code == 201 and up == size:
                put.append(size / MIB / t)
            t, code, down = curl_get(url, 600)
            if code == 200 and down == size:
                get.append(size / MIB / t)
            if os.access(a.patch_client, os.X_OK):
                t, code = client_put(a.patch_client, url, a.file, 600)
                if code == 201:
                    put_client.append(size / MIB / t)
        # The floors of the chunked upload with a process per PATCH: each client
        # against a server that reads and discards every body.
        csize = os.path.getsize(a.chunk_file)
        split_chunks(a.chunk_file)
        clients = [("curl", "curl")]
        if os.access(a.patch_client, os.X_OK):
            clients.append(("client", a.patch_client))
        for key, client in clients:
            rates = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                patch_per_process(lambda _loc: url, a.chunk_file, csize, {}, client, 600)
                rates.append(csize / MIB / (time.perf_counter() - t0))
            name = "curl" if client == "curl" else "bench/patch-client"
            patch_floor[f"loop_patch_{key}"] = {
                "name": f"{csize // MIB} MiB as 8 MiB PATCHes, a {name} process per PATCH, "
                        "to a loopback discard server",
                "value": median(rates), "unit": "MiB/s", "runs": rates}
    finally:
        sink.close()
    szs = f"{size // MIB} MiB" if size < 1 << 30 else f"{size >> 30} GiB"
    res = {
        "sha256": {"name": f"openssl dgst -sha256, {szs} (page cache)", "value": median(sha),
                   "unit": "MiB/s", "runs": sha},
        "copy_fsync": {"name": f"dd copy {szs} same disk, conv=fsync", "value": median(cp),
                       "unit": "MiB/s", "runs": cp},
        "copy_direct": {"name": f"dd copy {szs} same disk, oflag=direct conv=fsync",
                        "value": median(cpd), "unit": "MiB/s", "runs": cpd},
        "loop_put": {"name": f"curl PUT {szs} to a loopback discard server", "value": median(put),
                     "unit": "MiB/s", "runs": put},
        **({"loop_put_client": {
            "name": f"bench/patch-client --put {szs} to a loopback discard server",
            "value": median(put_client), "unit": "MiB/s", "runs": put_client}}
           if put_client else {}),
        "loop_get": {"name": f"curl GET {szs} from a loopback sendfile server",
                     "value": median(get), "unit": "MiB/s", "runs": get},
        **patch_floor,
        "cpus": os.cpu_count(),
    }
    if a.static_wrk_duration > 0:
        size = len(small_image()[4])
        try:
            st = static_ceiling(a.workdir, size, a.wrk_threads, a.wrk_conns,
                                a.static_wrk_duration, a.runs)
        except BenchError as e:
            log(f"static-file ceiling not measured: {e}")
            st = None
        if st:
            note = (f"{size} B file, wrk {a.wrk_conns} conns, {a.wrk_threads} threads, "
                    f"{a.static_wrk_duration}s")
            res["static_rps"] = {"name": f"nginx static file ({note})", "value": median(st[0]),
                                 "unit": "req/s", "runs": st[0]}
            res["static_p99"] = {"name": "nginx static file: p99 latency",
                                 "value": median(st[1]), "unit": "ms", "runs": st[1]}
    for k in LIMIT_KEYS:
        if k in res:
            log(f"{res[k]['name']}: {res[k]['value']:.1f} {res[k]['unit']}")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #

ORDER = ["upload_single_small", "upload_single_sendfile_small", "upload_single_large",
         "upload_chunked_small",
         "upload_chunked_newconn_small", "disk_after_newconn_small",
         "upload_chunked_newproc_small", "disk_after_newproc_small",
         "disk_after_chunked_small", "upload_chunked_large", "disk_after_chunked_large",
         "blob_get_large", "pull_skopeo", "push_concurrent", "rss_before_concurrent",
         "rss_peak_concurrent", "rss_after_concurrent", "manifest_get_rps", "manifest_get_p99",
         "manifest_get_p50", "manifest_get_anon_rps", "manifest_get_anon_p99",
         "manifest_get_anon_p50", "tag_push_rate", "tags_list_full", "tags_list_n",
         "repo_push_rate", "catalog", "rss_peak_upload_large", "rss_idle", "rss_end"]


# metric key -> the key its errors are recorded under (Suite.guarded)
ERROR_GROUP = {
    "rss_peak_upload_large": "upload_single_large",
    "manifest_get_rps": "manifest_get", "manifest_get_p99": "manifest_get",
    "manifest_get_p50": "manifest_get",
    "manifest_get_anon_rps": "manifest_get_anon", "manifest_get_anon_p99": "manifest_get_anon",
    "manifest_get_anon_p50": "manifest_get_anon",
    "tag_push_rate": "tags_list", "tags_list_full": "tags_list", "tags_list_n": "tags_list",
    "repo_push_rate": "catalog",
    "disk_after_chunked_small": "upload_chunked_small",
    "disk_after_chunked_large": "upload_chunked_large",
    "disk_after_newconn_small": "upload_chunked_newconn_small",
    "disk_after_newproc_small": "upload_chunked_newproc_small",
    "rss_before_concurrent": "push_concurrent", "rss_peak_concurrent": "push_concurrent",
    "rss_after_concurrent": "push_concurrent",
}

# Issue 20's targets, checked for every Berth in the report: (metric, ceiling, what,
# lowest acceptable ratio). The ceiling is a key of limits.json, "reference" for the
# reference registry's figure of the same run, or "beside" for the synced copy measured
# beside the row's own runs (BESIDE). None: shown, no target.
RATIOS = (
    ("manifest_get_rps", "static_rps", "manifest GET by tag (Berth: token) / nginx static", 0.50),
    ("manifest_get_anon_rps", "static_rps", "manifest GET (anonymous) / nginx static", None),
    ("upload_single_small", "sha256", "single-request upload, curl -T / openssl sha256", 0.85),
    ("upload_single_sendfile_small", "sha256",
     "single-request upload, patch-client --put / openssl sha256", 0.85),
    ("upload_chunked_small", "copy_fsync", "chunked upload, one connection / synced copy",
     None),
    ("upload_chunked_newconn_small", "copy_fsync",
     "chunked upload, a curl per PATCH / synced copy", 0.70),
    ("upload_chunked_newproc_small", "copy_fsync",
     "chunked upload, a patch-client per PATCH / synced copy", 0.70),
    ("upload_chunked_newconn_small", "beside",
     "chunked upload, a curl per PATCH / synced copy beside each run", 0.70),
    ("upload_chunked_newproc_small", "beside",
     "chunked upload, a patch-client per PATCH / synced copy beside each run", 0.70),
    ("pull_skopeo", "reference", "skopeo pull / reference registry's skopeo pull", 1.00),
)
RSS_TARGET_MIB = 200
# The synced copy measured beside each run of a per-process chunked row (the ceiling
# in limits.json is measured once, minutes earlier, on a disk whose rate drifts).
BESIDE = {"upload_chunked_newconn_small": "disk_after_newconn_small",
          "upload_chunked_newproc_small": "disk_after_newproc_small"}


def is_berth(label):
    return label == "berth" or label.startswith("berth-")


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(headers, rows):
    w = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def cmd_report(a):
    results = []
    for p in a.results:
        with open(p) as f:
            results.append(json.load(f))
    labels = [r["label"] for r in results]
    keys = [k for k in ORDER
            if any(k in r["metrics"] for r in results)
            or (not k.startswith("rss")
                and any(ERROR_GROUP.get(k, k) in r["errors"] or "suite" in r["errors"]
                        for r in results))]
    for r in results:  # any metric not in ORDER, at the end
        keys += [k for k in r["metrics"] if k not in keys]
    berths = [lab for lab in labels if is_berth(lab)]
    ref = "reference" if "reference" in labels else None
    pairs = berths if ref else []
    headers = ["metric", "unit", "better"] + labels
    headers += [("berth" if len(pairs) == 1 else b) + " advantage (x)" for b in pairs]
    rows = []
    for k in keys:
        name = unit = better = None
        vals = []
        for r in results:
            m = r["metrics"].get(k)
            if m:
                name, unit, better = m["name"], m["unit"], m["better"]
                vals.append(m["value"])
            elif ERROR_GROUP.get(k, k) in r["errors"] or "suite" in r["errors"]:
                vals.append("ERROR")
            else:
                vals.append(None)
        if name is None:
            name, unit, better = k, "", ""
        auths = {}
        for r in results:  # one note per distinct auth mode, naming who used it
            au = r["metrics"].get(k, {}).get("auth")
            if au:
                auths.setdefault(au, []).append(r["label"])
        if auths:
            name += " [" + "; ".join(f"{', '.join(labs)}: {au}"
                                     for au, labs in auths.items()) + "]"
        row = [name, unit, better] + [fmt(v) for v in vals]
        for b_lab in pairs:
            b = vals[labels.index(b_lab)]
            rv = vals[labels.index(ref)]
            ratio = "-"
            if isinstance(b, (int, float)) and isinstance(rv, (int, float)) and b > 0 and rv > 0:
                x = b / rv if better == "higher" else rv / b
                ratio = f"{x:.2f}"
            row.append(ratio)
        rows.append(row)
    out = []
    out.append(table(headers, rows))
    if pairs:
        out.append("advantage = berth/reference where higher is better, "
                   "reference/berth where lower is better; > 1 means Berth is better.")
    lim = {}
    if a.limits and os.path.exists(a.limits):
        with open(a.limits) as f:
            lim = json.load(f)
        out.append("")
        out.append(f"Physical limits of this machine ({lim.get('cpus')} CPUs):")
        out.append(table(["limit", "unit", "value"],
                         [[lim[k]["name"], lim[k]["unit"], fmt(lim[k]["value"])]
                          for k in LIMIT_KEYS if k in lim]))
    ratios = []
    got_ref = {k: m["value"] for k, m in results[labels.index(ref)]["metrics"].items()} \
        if ref else {}
    for r in results:
        got = {k: m["value"] for k, m in r.get("metrics", {}).items()}
        target_here = is_berth(r["label"])
        for key, lim_key, what, target in RATIOS:
            if lim_key == "reference":
                if r["label"] == ref:
                    continue
                ceiling = got_ref.get(key)
            elif lim_key == "beside":
                ceiling = got.get(BESIDE[key])
            else:
                ceiling = lim.get(lim_key, {}).get("value")
            if not ceiling:
                continue
            if not got.get(key):
                if target_here and target is not None:
                    ratios.append([r["label"], what, "ERROR" if key in r["errors"]
                                   or ERROR_GROUP.get(key) in r["errors"] else "-",
                                   f">= {100 * target:.0f} %", "no"])
                continue
            x = got[key] / ceiling
            ok = "-"
            if target_here and target is not None:
                ok = "yes" if x >= target else "NO"
            ratios.append([r["label"], what, f"{100 * x:.0f} %",
                           f">= {100 * target:.0f} %" if target_here and target else "-", ok])
        if "rss_peak_concurrent" in got:
            peak = got["rss_peak_concurrent"]
            n = r.get("params", {}).get("pushers")
            ok = ("yes" if peak < RSS_TARGET_MIB else "NO") if target_here else "-"
            ratios.append([r["label"], f"peak RSS, {n} concurrent pushers", f"{peak:.0f} MiB",
                           f"< {RSS_TARGET_MIB} MiB" if target_here else "-", ok])
        if "rss_after_concurrent" in got:
            was = [f"{w} {got[k]:.0f}" for k, w in (("rss_before_concurrent", "before them"),
                                                     ("rss_idle", "at start of suite"))
                   if k in got]
            ratios.append([r["label"], "RSS 5 s after the concurrent pushes",
                           f"{got['rss_after_concurrent']:.0f} MiB"
                           + (f" ({', '.join(was)})" if was else ""),
                           "near idle" if target_here else "-", "-"])
    if ratios:
        out.append("")
        out.append("Against the ceilings of the same run (targets of issue 20):")
        out.append(table(["registry", "ratio", "value", "target", "met"], ratios))
    errs = [(r["label"], k, e) for r in results for k, e in r["errors"].items()]
    if errs:
        out.append("")
        out.append("Errors:")
        for lab, k, e in errs:
            out.append(f"  {lab} / {k}: {(e.splitlines() or [''])[0][:400]}")
    for r in results:
        if "elapsed_s" in r:
            la = r.get("loadavg_start")
            au = r.get("auth")
            out.append(f"{r['label']}: {r['url']}, suite took {r['elapsed_s']:.0f} s"
                       + (f", load average at start {la[0]:.2f}" if la else "")
                       + (f"; auth: {au['mode']}, {au['token_fetches']} token fetches "
                          f"({au['token_fetch_s']:.1f} s)" if au else ""))
    text = "\n".join(out)
    print(text)
    if a.out_md:
        with open(a.out_md, "w") as f:
            f.write("# Registry benchmark\n\n" + text + "\n")
    if a.out_json:
        lim = None
        if a.limits and os.path.exists(a.limits):
            with open(a.limits) as f:
                lim = json.load(f)
        with open(a.out_json, "w") as f:
            json.dump({"results": results, "limits": lim}, f, indent=2)


# --------------------------------------------------------------------------- #

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("suite")
    s.add_argument("--url", required=True)
    s.add_argument("--pid", type=int)
    s.add_argument("--label", default="registry")
    s.add_argument("--small", required=True, help="the smaller blob file (e.g. 256 MiB)")
    s.add_argument("--large", required=True, help="the larger blob file (e.g. 1 GiB)")
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--tags", type=int, default=10000)
    s.add_argument("--repos", type=int, default=1000)
    s.add_argument("--list-reps", type=int, default=20)
    s.add_argument("--wrk-duration", type=int, default=10)
    s.add_argument("--wrk-threads", type=int, default=2)
    s.add_argument("--wrk-conns", type=int, default=10)
    s.add_argument("--push-workers", type=int, default=4)
    s.add_argument("--timeout", type=int, default=600)
    s.add_argument("--repo-prefix", default="bench/p",
                   help="repositories used: PREFIX/single, /chunked, /small, /tags "
                        "(on Berth: a project's path)")
    s.add_argument("--public-repo", default="bench/public/small",
                   help="repository for the anonymous manifest GET (on Berth: in a public "
                        "project)")
    s.add_argument("--catalog-prefix", default="bench/catalog",
                   help="the catalog test pushes PREFIX/rNNNNN (on Berth: a project's path)")
    s.add_argument("--pull-layers", type=int, default=20,
                   help="layers of the image pulled with skopeo (0: skip that row)")
    s.add_argument("--pull-layer-mib", type=int, default=20)
    s.add_argument("--pushers", type=int, default=50,
                   help="clients pushing a blob each at the same moment (0: skip that row)")
    s.add_argument("--pusher-mib", type=int, default=20)
    s.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"),
                   help="where skopeo writes the pulled image (the disk measured)")
    s.add_argument("--patch-client", default=PATCH_CLIENT,
                   help="bench/patch-client's binary (default: %(default)s)")
    s.add_argument("--out", required=True)

    l = sub.add_parser("limits")
    l.add_argument("--file", required=True)
    l.add_argument("--chunk-file",
                   help="the blob for the per-PATCH client floors (default: --file)")
    l.add_argument("--patch-client", default=PATCH_CLIENT,
                   help="bench/patch-client's binary (default: %(default)s)")
    l.add_argument("--workdir", required=True)
    l.add_argument("--runs", type=int, default=3)
    l.add_argument("--out", required=True)
    l.add_argument("--static-wrk-duration", type=int, default=10,
                   help="seconds of wrk against nginx serving a manifest-sized file "
                        "(0: skip the static-file ceiling)")
    l.add_argument("--wrk-threads", type=int, default=2)
    l.add_argument("--wrk-conns", type=int, default=10)

    r = sub.add_parser("report")
    r.add_argument("results", nargs="+")
    r.add_argument("--limits")
    r.add_argument("--out-md")
    r.add_argument("--out-json")

    p = sub.add_parser("ping", help="exit 0 when GET /v2/ answers 200 (after the token "
                                    "dance, if the registry asks for one)")
    p.add_argument("--url", required=True)

    for sp in (s, p):
        sp.add_argument("--user", default=os.environ.get("REGBENCH_USER"),
                        help="HTTP Basic user for the token service (env REGBENCH_USER)")
        sp.add_argument("--password", default=os.environ.get("REGBENCH_PASSWORD"),
                        help="its password or access token (env REGBENCH_PASSWORD; "
                             "prefer the environment, the command line is visible in ps)")

    p = sub.add_parser("freeport", help="print a free loopback TCP port")
    p = sub.add_parser("reference-config",
                       help="print the reference registry's config (see reference_config)")
    p.add_argument("--data", required=True, help="its storage root directory")
    p.add_argument("--port", type=int, required=True, help="its loopback port")

    a = ap.parse_args()
    if hasattr(a, "user") and not a.user:
        a.user = None  # an empty REGBENCH_USER means no credentials
    try:
        if a.cmd == "suite":
            suite = Suite(a)
            try:
                res = suite.run()
            except (BenchError, OSError, http.client.HTTPException) as e:
                # Still write a result, so the table shows this registry as failed.
                res = suite.res
                res["errors"]["suite"] = f"{type(e).__name__}: {e}"
                with open(a.out, "w") as f:
                    json.dump(res, f, indent=2)
                raise BenchError(f"suite aborted: {e}")
            with open(a.out, "w") as f:
                json.dump(res, f, indent=2)
        elif a.cmd == "limits":
            cmd_limits(a)
        elif a.cmd == "report":
            cmd_report(a)
        elif a.cmd == "ping":
            reg = Registry(a.url, timeout=2, auth=Auth(a.user, a.password))
            try:
                st = reg.ping()
            except (OSError, http.client.HTTPException):
                sys.exit(1)  # not listening (yet): the caller keeps waiting
            except ValueError as e:  # an unreadable token response
                raise BenchError(f"token service: {e}")
            # A failed token request raises BenchError: exit 2, the caller stops waiting.
            sys.exit(0 if st == 200 else 1)
        elif a.cmd == "reference-config":
            print(reference_config(a.data, a.port), end="")
        elif a.cmd == "freeport":
            import socket
            with socket.socket() as sk:
                sk.bind(("127.0.0.1", 0))
                print(sk.getsockname()[1])
    except BenchError as e:
        print(f"regbench: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("regbench: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
