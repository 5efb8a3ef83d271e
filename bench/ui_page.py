#!/usr/bin/env python3
"""Server time of the web UI's repository page for a repository with many tags.

Starts Berth on a loopback port with a fresh data dir, pushes one manifest under N
tags (default 50,000) over the registry API, signs in to the web UI with the form,
then requests `/<project>/container_registry/<id>` in several views (first page,
a middle page, sorted by creation date, a name search) and prints the median and
p99 of the `Server-Timing` the page reports (handler start to rendered HTML) and of
the client's time to the last byte on loopback, in milliseconds. Standard library only.

    bench/ui_page.py [--berth target/release/berth] [--tags 50000] [--samples 100]
"""
import argparse, base64, hashlib, html, http.client, json, os, re, shutil, socket, statistics
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
    ap.add_argument("--tags", type=int, default=50_000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()
    a.berth = os.path.abspath(a.berth)

    work = tempfile.mkdtemp(prefix="berth-ui-page-")
    port = free_port()
    data = os.path.join(work, "data")
    env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD, BERTH_LOG_LEVEL="warn",
               BERTH_TOKEN_EXPIRY="1h")
    server = subprocess.Popen([a.berth, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=work)
    try:
        server.stdout.readline()  # "berth listening on ..."
        subprocess.run([a.berth, "admin", "--data-dir", data, "project", "create", "bench/ui", "--parents"],
                       check=True, stdout=subprocess.DEVNULL, cwd=work)
        repo = "bench/ui/many"
        basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("GET", "/jwt/auth?service=container_registry&scope=" +
                  urllib.parse.quote(f"repository:{repo}:pull,push"), headers={"Authorization": "Basic " + basic})
        auth = {"Authorization": "Bearer " + json.loads(c.getresponse().read())["token"]}

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

        c.request("GET", "/bench/ui/container_registry?search=many", headers=cookie)
        listing = html.unescape(c.getresponse().read().decode())
        rid = re.search(r'href="/bench/ui/container_registry/(\d+)"', listing).group(1)
        path = f"/bench/ui/container_registry/{rid}"

        def timed(url):
            t0 = time.perf_counter()
            c.request("GET", url, headers=cookie)
            r = c.getresponse(); body = r.read()
            client = (time.perf_counter() - t0) * 1000
            assert r.status == 200, (r.status, body[:200])
            assert body.count(b'data-tag="') > 0
            server_ms = float(re.search(r"dur=([0-9.]+)", r.getheader("server-timing")).group(1))
            return server_ms, client

        pages = a.tags // 20
        cases = {
            "first page (20 tags, by name)": f"{path}",
            "middle page": f"{path}?page={pages // 2}",
            "last page, 100 per page": f"{path}?per_page=100&page={a.tags // 100}",
            "newest first (sort=created, desc)": f"{path}?sort=created&order=desc",
            "name search (search=t00123)": f"{path}?search=t00123",
        }
        print(f"| repository page, {a.tags} tags | server median ms | server p99 ms | client median ms |")
        print("|---|---|---|---|")
        for name, url in cases.items():
            timed(url)  # warm
            xs = [timed(url) for _ in range(a.samples)]
            srv = sorted(x[0] for x in xs)
            cli = sorted(x[1] for x in xs)
            p99 = srv[min(len(srv) - 1, int(len(srv) * 0.99))]
            print(f"| {name} | {statistics.median(srv):.2f} | {p99:.2f} | {statistics.median(cli):.2f} |")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
