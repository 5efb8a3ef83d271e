#!/usr/bin/env python3
"""Server memory while the web UI shows the tag page of a manifest with many layers.

Starts Berth (release binary) on a loopback port with a fresh data dir, pushes N tiny
layer blobs (default 38,000) and one manifest listing them all (kept under the 4 MiB
manifest limit with a short layer media type), signs in to the web UI with the form,
then reads the server's resident memory (VmRSS from /proc/<pid>/status): idle after
the push, the peak while loading the tag page (first layer page, and a later one
with `?layers_page=`) several times, and again after a pause. Prints a table in MiB
and the size of the HTML. Standard library only; Linux only (reads /proc).

    bench/huge_manifest.py [--berth target/release/berth] [--layers 38000] [--loads 5]
"""
import argparse, base64, hashlib, html, http.client, json, os, re, shutil, socket
import subprocess, sys, tempfile, threading, time, urllib.parse

PASSWORD = "bench-root-password"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--layers", type=int, default=38_000)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()
    a.berth = os.path.abspath(a.berth)

    work = tempfile.mkdtemp(prefix="berth-huge-manifest-")
    port = free_port()
    data = os.path.join(work, "data")
    env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD, BERTH_LOG_LEVEL="warn",
               BERTH_TOKEN_EXPIRY="1h")
    server = subprocess.Popen([a.berth, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=work)
    try:
        server.stdout.readline()  # "berth listening on ..."
        subprocess.run([a.berth, "admin", "--data-dir", data, "project", "create", "bench/huge", "--parents"],
                       check=True, stdout=subprocess.DEVNULL, cwd=work)
        repo = "bench/huge"
        basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("GET", "/jwt/auth?service=container_registry&scope=" +
                  urllib.parse.quote(f"repository:{repo}:pull,push"), headers={"Authorization": "Basic " + basic})
        auth = {"Authorization": "Bearer " + json.loads(c.getresponse().read())["token"]}
        started_rss = rss_kib(server.pid)

        def blob(conn, data):
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            conn.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body=data, headers=auth)
            r = conn.getresponse(); r.read(); assert r.status == 201, r.status
            return d

        digests = [None] * a.layers

        def push(start, stop):
            conn = http.client.HTTPConnection("127.0.0.1", port)
            for i in range(start, stop):
                digests[i] = blob(conn, b"layer %d" % i)
        t0 = time.time()
        step = (a.layers + a.threads - 1) // a.threads
        threads = [threading.Thread(target=push, args=(k * step, min(a.layers, (k + 1) * step)))
                   for k in range(a.threads)]
        for t in threads: t.start()
        for t in threads: t.join()
        cfg = b'{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z"}'
        layer_type = "application/vnd.oci.image.layer.v1.tar"
        while True:
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(c, cfg), "size": len(cfg)},
                "layers": [{"mediaType": layer_type, "digest": d, "size": 8} for d in digests],
            }, separators=(",", ":")).encode()
            if len(manifest) <= 4 * 1024 * 1024 or len(layer_type) <= 1:
                break
            layer_type = layer_type[: len(layer_type) // 2]
        c.request("PUT", f"/v2/{repo}/manifests/huge", body=manifest,
                  headers={**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        r = c.getresponse(); body = r.read(); assert r.status == 201, (r.status, body[:300])
        print(f"pushed {a.layers} layers and a {len(manifest)} byte manifest in {time.time() - t0:.1f} s",
              file=sys.stderr)

        # Sign in through the form, as a browser does.
        c.request("GET", "/users/sign_in")
        r = c.getresponse(); page = r.read().decode()
        csrf_cookie = re.search(r"berth_csrf=([^;]+)", r.getheader("set-cookie")).group(1)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"csrf_token": token, "username": "root", "password": PASSWORD})
        c.request("POST", "/users/sign_in", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"berth_csrf={csrf_cookie}"})
        r = c.getresponse(); r.read(); assert r.status == 303, r.status
        session = re.search(r"berth_session=([^;]+)", r.getheader("set-cookie")).group(1)
        cookie = {"Cookie": f"berth_session={session}"}
        c.request("GET", "/bench/huge/container_registry", headers=cookie)
        listing = html.unescape(c.getresponse().read().decode())
        rid = re.search(r'href="/bench/huge/container_registry/(\d+)"', listing).group(1)
        tag_page = f"/bench/huge/container_registry/{rid}/-/tags/huge"

        time.sleep(1)
        idle = rss_kib(server.pid)
        peak = [idle]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(server.pid))
                time.sleep(0.005)
        sampler = threading.Thread(target=sample)
        sampler.start()
        sizes = []
        t0 = time.time()
        for i in range(a.loads):
            url = tag_page if i % 2 == 0 else f"{tag_page}?layers_page=200"
            c.request("GET", url, headers=cookie)
            r = c.getresponse(); body = r.read()
            assert r.status == 200, (r.status, body[:300])
            sizes.append(len(body))
        elapsed = time.time() - t0
        stop.set()
        sampler.join()
        time.sleep(2)
        after = rss_kib(server.pid)
        mib = lambda k: f"{k / 1024:.1f}"
        print(f"| {a.layers} layers, {a.loads} loads of the tag page | MiB |")
        print("|---|---|")
        print(f"| RSS after start | {mib(started_rss)} |")
        print(f"| RSS idle, after the push | {mib(idle)} |")
        print(f"| RSS peak while loading | {mib(peak[0])} |")
        print(f"| RSS 2 s after | {mib(after)} |")
        print(f"HTML bytes per load: {sorted(set(sizes))}; {elapsed / a.loads * 1000:.0f} ms per load")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
