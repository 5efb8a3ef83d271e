#!/usr/bin/env python3
"""The dependency proxy: pulling a 1 GiB image (--layers layers of random bytes) from a
loopback upstream Berth directly, through the proxy when nothing is cached (the first
pull: the proxy fetches while it streams to the client), and through the proxy again
(cached: served from the proxy's blob store without asking upstream for blobs).

Two `berth serve` processes on loopback ports: the upstream (token auth, a private
project `library/big`) and the proxy (upstream = the first, over plain http, with root's
credentials). A pull is what docker does: a token, the manifest, then the config and
the layers, three GETs at a time, every byte read and hashed by the client. Each row is
the median of --runs pulls; every uncached run purges the group's cache first
(`DELETE /api/v4/groups/bench/dependency_proxy/cache`). Standard library only.

    bench/dependency_proxy.py [--berth target/release/berth] [--mib 1024] [--layers 4] [--runs 3]
"""
import argparse, base64, hashlib, http.client, json, os, shutil, statistics, subprocess
import sys, tempfile, threading, time, urllib.parse

PASSWORD = "bench-root-password"
MIB = 1024 * 1024


def start(berth, work, name, env):
    data = os.path.join(work, name)
    os.makedirs(data)
    e = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD, BERTH_LOG_LEVEL="warn",
             BERTH_TOKEN_EXPIRY="1h", **env)
    p = subprocess.Popen([berth, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
                         cwd=work, env=e, stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("berth listening on http://"):
            port = int(line.rsplit(":", 1)[1])
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, port, data
    raise SystemExit(f"{name} did not start")


def admin(berth, data, *args):
    subprocess.run([berth, "admin", "--data-dir", data, *args], check=True,
                   stdout=subprocess.DEVNULL)


def request(port, method, path, body=None, headers=None, want=(200,), sink=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        if sink is None:
            data = r.read()
        else:
            data = b""
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                sink(chunk)
        if r.status not in want:
            raise SystemExit(f"{method} {path} on :{port}: {r.status} {data[:300]!r}")
        return r, data
    finally:
        c.close()


def token(port, scope, user="root", password=PASSWORD):
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    q = urllib.parse.urlencode({"service": "container_registry", "scope": scope})
    _, body = request(port, "GET", f"/jwt/auth?{q}", headers={"Authorization": f"Basic {auth}"})
    return "Bearer " + json.loads(body)["token"]


def push_blob(port, repo, auth, path, digest, size):
    r, _ = request(port, "POST", f"/v2/{repo}/blobs/uploads/", headers={"Authorization": auth},
                   want=(202,))
    loc = r.getheader("Location")
    loc = urllib.parse.urlparse(loc)
    target = f"{loc.path}?{loc.query}&digest={digest}" if loc.query else f"{loc.path}?digest={digest}"
    with open(path, "rb") as f:
        request(port, "PUT", target, body=f, want=(201,),
                headers={"Authorization": auth, "Content-Length": str(size),
                         "Content-Type": "application/octet-stream"})


def make_image(port, work, layers, total):
    """Push an image of `layers` random layers, `total` bytes, to library/big:v1 upstream."""
    repo = "library/big"
    auth = token(port, f"repository:{repo}:pull,push")
    descs = []
    per = total // layers
    for i in range(layers):
        path = os.path.join(work, f"layer{i}")
        h = hashlib.sha256()
        with open(path, "wb") as f:
            left = per
            while left:
                chunk = os.urandom(min(left, 8 * MIB))
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        digest = "sha256:" + h.hexdigest()
        push_blob(port, repo, auth, path, digest, per)
        os.remove(path)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                      "size": per})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]}}).encode()
    cpath = os.path.join(work, "config")
    open(cpath, "wb").write(config)
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    push_blob(port, repo, auth, cpath, cdigest, len(config))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cdigest, "size": len(config)},
                           "layers": descs}).encode()
    request(port, "PUT", f"/v2/{repo}/manifests/v1", body=manifest, want=(201,),
            headers={"Authorization": auth,
                     "Content-Type": "application/vnd.oci.image.manifest.v1+json"})


def pull(port, repo, user="root", password=PASSWORD):
    """A docker-like pull; returns seconds."""
    t0 = time.monotonic()
    auth = token(port, f"repository:{repo}:pull", user, password)
    _, body = request(port, "GET", f"/v2/{repo}/manifests/v1", headers={
        "Authorization": auth, "Accept": "application/vnd.oci.image.manifest.v1+json"})
    m = json.loads(body)
    blobs = [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]
    errors = []

    def get(d):
        h = hashlib.sha256()
        try:
            request(port, "GET", f"/v2/{repo}/blobs/{d}", headers={"Authorization": auth},
                    sink=h.update)
            if "sha256:" + h.hexdigest() != d:
                errors.append(f"{d}: wrong bytes")
        except BaseException as e:  # noqa: BLE001
            errors.append(f"{d}: {e}")

    queue = list(blobs)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                d = queue.pop(0)
            get(d)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("pull failed: " + "; ".join(errors))
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--mib", type=int, default=1024, help="image size (default 1 GiB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    berth = os.path.abspath(a.berth)
    work = tempfile.mkdtemp(prefix="berth-proxy-bench-", dir=a.workdir)
    procs = []
    try:
        up, up_port, up_data = start(berth, work, "upstream", {})
        procs.append(up)
        admin(berth, up_data, "project", "create", "library/big", "--parents")
        make_image(up_port, work, a.layers, a.mib * MIB)
        px, px_port, px_data = start(berth, work, "proxy", {
            "BERTH_DEPENDENCY_PROXY_UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
            "BERTH_DEPENDENCY_PROXY_ALLOW_INSECURE_UPSTREAMS": "true",
            "BERTH_DEPENDENCY_PROXY_UPSTREAM_USERNAME": "root",
            "BERTH_DEPENDENCY_PROXY_UPSTREAM_PASSWORD": PASSWORD,
        })
        procs.append(px)
        admin(berth, px_data, "project", "create", "bench/app", "--parents")
        pat = subprocess.run([berth, "admin", "--data-dir", px_data, "token", "create", "--user",
                              "root", "--name", "bench", "--scopes", "api"], check=True,
                             capture_output=True, text=True).stdout.strip()
        proxied = "bench/dependency_proxy/containers/big"
        rows = {"direct from upstream": [], "proxy, uncached": [], "proxy, cached": []}
        for _ in range(a.runs):
            rows["direct from upstream"].append(pull(up_port, "library/big"))
            request(px_port, "DELETE", "/api/v4/groups/bench/dependency_proxy/cache",
                    headers={"PRIVATE-TOKEN": pat}, want=(202,))
            rows["proxy, uncached"].append(pull(px_port, proxied))
            rows["proxy, cached"].append(pull(px_port, proxied))
        print(f"{a.mib} MiB image ({a.layers} layers), {a.runs} runs each, median:")
        print(f"{'pull':<24}{'seconds':>10}{'MiB/s':>10}")
        for name, times in rows.items():
            t = statistics.median(times)
            print(f"{name:<24}{t:>10.2f}{a.mib / t:>10.0f}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
