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
import argparse, html, re, sys, threading, time

from benchlib import Berth, image_manifest, in_threads, push_blob, put_manifest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--layers", type=int, default=38_000)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()

    with Berth(a.berth, "huge-manifest") as b:
        b.admin("project", "create", "bench/huge", "--parents")
        repo = "bench/huge"
        auth = b.registry_auth(repo)
        started_rss = b.rss_kib()
        c = b.conn()
        digests = [None] * a.layers

        def push(start, stop):
            conn = b.conn()
            for i in range(start, stop):
                digests[i] = push_blob(conn, repo, auth, b"layer %d" % i)
        t0 = time.time()
        in_threads(a.layers, a.threads, push)
        # The longest layer media type that keeps the manifest within the 4 MiB limit.
        layer_type = "application/vnd.oci.image.layer.v1.tar"
        while True:
            manifest = image_manifest(c, repo, auth, [(d, 8) for d in digests], layer_type)
            if len(manifest) <= 4 * 1024 * 1024 or len(layer_type) <= 1:
                break
            layer_type = layer_type[: len(layer_type) // 2]
        put_manifest(c, repo, auth, "huge", manifest)
        print(f"pushed {a.layers} layers and a {len(manifest)} byte manifest in {time.time() - t0:.1f} s",
              file=sys.stderr)
        cookie = b.sign_in()
        c.request("GET", "/bench/huge/container_registry", headers=cookie)
        listing = html.unescape(c.getresponse().read().decode())
        rid = re.search(r'href="/bench/huge/container_registry/(\d+)"', listing).group(1)
        tag_page = f"/bench/huge/container_registry/{rid}/-/tags/huge"

        time.sleep(1)
        idle = b.rss_kib()
        peak = [idle]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], b.rss_kib())
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
        after = b.rss_kib()
        mib = lambda k: f"{k / 1024:.1f}"
        print(f"| {a.layers} layers, {a.loads} loads of the tag page | MiB |")
        print("|---|---|")
        print(f"| RSS after start | {mib(started_rss)} |")
        print(f"| RSS idle, after the push | {mib(idle)} |")
        print(f"| RSS peak while loading | {mib(peak[0])} |")
        print(f"| RSS 2 s after | {mib(after)} |")
        print(f"HTML bytes per load: {sorted(set(sizes))}; {elapsed / a.loads * 1000:.0f} ms per load")


if __name__ == "__main__":
    main()
