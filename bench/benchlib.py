"""What the single-server benchmark scripts share: a Berth started on a loopback port
with a fresh data dir, its admin command, registry tokens, blob and manifest pushes
over the registry API, a web UI sign-in, and the server's resident memory.
Standard library only; Linux only for `rss_kib` (reads /proc).
"""
import base64, hashlib, http.client, json, os, re, shutil, socket, subprocess, tempfile
import threading, time, urllib.parse

PASSWORD = "bench-root-password"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z"}'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, what, proc):
    """Wait until something accepts connections on loopback `port`; `proc` exiting
    first, or 20 s passing, is fatal."""
    for _ in range(400):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited (rc {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


def p99(sorted_xs):
    return sorted_xs[min(len(sorted_xs) - 1, int(len(sorted_xs) * 0.99))]


def in_threads(total, threads, fn):
    """Run `fn(start, stop)` over `range(total)` split among `threads` threads."""
    step = (total + threads - 1) // threads
    ts = [threading.Thread(target=fn, args=(k * step, min(total, (k + 1) * step)))
          for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


class Berth:
    """`with Berth(binary, "name") as b:` a server on a free loopback port, stopped and
    its work dir removed on leaving."""

    def __init__(self, binary, name):
        self.binary = os.path.abspath(binary)
        self.work = tempfile.mkdtemp(prefix=f"berth-{name}-")
        self.data = os.path.join(self.work, "data")
        self.port = free_port()

    def __enter__(self):
        env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD, BERTH_LOG_LEVEL="warn",
                   BERTH_TOKEN_EXPIRY="1h")
        self.server = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=self.work)
        self.server.stdout.readline()  # "berth listening on ..."
        return self

    def __exit__(self, *_):
        self.server.terminate()
        self.server.wait()
        shutil.rmtree(self.work, ignore_errors=True)

    @property
    def pid(self):
        return self.server.pid

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port)

    def admin(self, *args):
        return subprocess.run([self.binary, "admin", "--data-dir", self.data, *args], check=True,
                              capture_output=True, text=True, cwd=self.work).stdout.strip()

    def registry_auth(self, repo):
        """Headers with root's registry token for pull and push on `repo`."""
        basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
        c = self.conn()
        c.request("GET", "/jwt/auth?service=container_registry&scope=" +
                  urllib.parse.quote(f"repository:{repo}:pull,push"),
                  headers={"Authorization": "Basic " + basic})
        return {"Authorization": "Bearer " + json.loads(c.getresponse().read())["token"]}

    def sign_in(self):
        """Cookie headers of a web session of root's, signed in through the form."""
        c = self.conn()
        c.request("GET", "/users/sign_in")
        r = c.getresponse()
        page = r.read().decode()
        csrf_cookie = re.search(r"berth_csrf=([^;]+)", r.getheader("set-cookie")).group(1)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"csrf_token": token, "username": "root", "password": PASSWORD})
        c.request("POST", "/users/sign_in", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"berth_csrf={csrf_cookie}"})
        r = c.getresponse()
        r.read()
        assert r.status == 303, r.status
        session = re.search(r"berth_session=([^;]+)", r.getheader("set-cookie")).group(1)
        return {"Cookie": f"berth_session={session}"}

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def push_blob(conn, repo, auth, data):
    """A monolithic upload; the blob's digest."""
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    conn.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body=data, headers=auth)
    r = conn.getresponse()
    r.read()
    assert r.status == 201, r.status
    return d


def push_blob_in_session(conn, repo, auth, data):
    """An upload session: POST, then one PUT with the bytes and `?digest=` (which every
    registry takes, unlike the monolithic POST of `push_blob`); the blob's digest."""
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    conn.request("POST", f"/v2/{repo}/blobs/uploads/", headers={**auth, "Content-Length": "0"})
    r = conn.getresponse()
    r.read()
    if r.status != 202:
        raise SystemExit(f"upload start: HTTP {r.status}")
    loc = urllib.parse.urlsplit(r.getheader("Location"))
    query = "&".join(q for q in [loc.query, f"digest={urllib.parse.quote(d)}"] if q)
    conn.request("PUT", f"{loc.path}?{query}", body=data,
                 headers={**auth, "Content-Type": "application/octet-stream"})
    r = conn.getresponse()
    r.read()
    if r.status != 201:
        raise SystemExit(f"upload end: HTTP {r.status}")
    return d


def put_manifest(conn, repo, auth, reference, manifest):
    conn.request("PUT", f"/v2/{repo}/manifests/{reference}", body=manifest,
                 headers={**auth, "Content-Type": OCI_MANIFEST})
    r = conn.getresponse()
    body = r.read()
    assert r.status == 201, (r.status, body[:300])


def image_manifest(conn, repo, auth, layers, layer_type="application/vnd.oci.image.layer.v1.tar",
                   push=None):
    """A manifest of the config above and `layers` (digest, size) pairs, as bytes; the
    config is pushed with `push(conn, repo, auth, data)` (default: `push_blob`)."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": (push or push_blob)(conn, repo, auth, CONFIG),
                   "size": len(CONFIG)},
        "layers": [{"mediaType": layer_type, "digest": d, "size": n} for d, n in layers],
    }, separators=(",", ":")).encode()


def push_tags(b, repo, auth, tags, threads):
    """One small image under `tags` tags named t0000000, t0000001, ..."""
    c = b.conn()
    manifest = image_manifest(c, repo, auth, [(push_blob(c, repo, auth, b"layer"), 5)])

    def push(start, stop):
        conn = b.conn()
        for i in range(start, stop):
            put_manifest(conn, repo, auth, f"t{i:07d}", manifest)
    in_threads(tags, threads, push)
