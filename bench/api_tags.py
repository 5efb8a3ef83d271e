#!/usr/bin/env python3
"""Tag listing through Berth's REST API on a repository with many tags.

Starts Berth (release binary) on a loopback port with a fresh data dir, pushes one
manifest under N tags (default 100,000) over the registry API, then times one page of
100 tags through `GET /api/v4/projects/:id/registry/repositories/:rid/tags` with
offset pagination (first, middle and last pages) and with keyset pagination, and
prints medians and p99s in milliseconds. Standard library only.

    bench/api_tags.py [--berth target/release/berth] [--tags 100000] [--samples 200]
"""
import argparse, base64, hashlib, http.client, json, os, shutil, socket, statistics
import subprocess, sys, tempfile, threading, time, urllib.parse

PASSWORD = "bench-root-password"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--tags", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()
    a.berth = os.path.abspath(a.berth)

    work = tempfile.mkdtemp(prefix="berth-api-tags-")
    port = free_port()
    env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD, BERTH_LOG_LEVEL="warn",
               BERTH_TOKEN_EXPIRY="1h")
    server = subprocess.Popen([a.berth, "serve", "--listen", f"127.0.0.1:{port}",
                               "--data-dir", os.path.join(work, "data")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=work)
    try:
        server.stdout.readline()  # "berth listening on ..."
        subprocess.run([a.berth, "admin", "--data-dir", os.path.join(work, "data"), "project",
                        "create", "bench/tags", "--parents"], check=True, stdout=subprocess.DEVNULL, cwd=work)
        pat = subprocess.run([a.berth, "admin", "--data-dir", os.path.join(work, "data"), "token",
                              "create", "--user", "root", "--name", "bench", "--scopes", "api"],
                             check=True, capture_output=True, text=True, cwd=work).stdout.strip()
        repo = "bench/tags/many"
        basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("GET", "/jwt/auth?service=container_registry&scope=" +
                  urllib.parse.quote(f"repository:{repo}:pull,push"), headers={"Authorization": "Basic " + basic})
        token = json.loads(c.getresponse().read())["token"]
        auth = {"Authorization": "Bearer " + token}

        def blob(data):
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            c.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body=data, headers=auth)
            r = c.getresponse(); r.read(); assert r.status == 201, r.status
            return d
        cfg = b'{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z"}'
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(cfg), "size": len(cfg)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(b"layer"), "size": 5}]}).encode()

        def push(start, stop):
            conn = http.client.HTTPConnection("127.0.0.1", port)
            for i in range(start, stop):
                conn.request("PUT", f"/v2/{repo}/manifests/t{i:07d}", body=manifest,
                             headers={**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
                r = conn.getresponse(); r.read(); assert r.status == 201, r.status
        t0 = time.time()
        step = (a.tags + a.threads - 1) // a.threads
        threads = [threading.Thread(target=push, args=(k * step, min(a.tags, (k + 1) * step))) for k in range(a.threads)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(f"pushed {a.tags} tags in {time.time() - t0:.1f} s", file=sys.stderr)

        api = {"PRIVATE-TOKEN": pat}
        c.request("GET", "/api/v4/projects/bench%2Ftags/registry/repositories", headers=api)
        rid = json.loads(c.getresponse().read())[0]["id"]
        base = f"/api/v4/projects/bench%2Ftags/registry/repositories/{rid}/tags"

        def timed(path):
            t0 = time.perf_counter()
            c.request("GET", path, headers=api)
            r = c.getresponse(); body = r.read()
            ms = (time.perf_counter() - t0) * 1000
            assert r.status == 200, (r.status, body[:200])
            assert len(json.loads(body)) == 100
            return ms
        pages = a.tags // 100
        cases = {
            "offset, first page": f"{base}?per_page=100&page=1",
            "offset, middle page": f"{base}?per_page=100&page={pages // 2}",
            "offset, last page": f"{base}?per_page=100&page={pages}",
            "keyset, first page": f"{base}?pagination=keyset&order_by=name&sort=asc&per_page=100",
            "keyset, middle page": f"{base}?pagination=keyset&order_by=name&sort=asc&per_page=100&last=t{a.tags // 2:07d}",
        }
        print(f"| tags list, {a.tags} tags, one page of 100 | median ms | p99 ms |")
        print("|---|---|---|")
        for name, path in cases.items():
            timed(path)  # warm
            xs = sorted(timed(path) for _ in range(a.samples))
            p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
            print(f"| {name} | {statistics.median(xs):.2f} | {p99:.2f} |")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
