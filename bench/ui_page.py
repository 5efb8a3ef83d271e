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
import argparse, html, re, statistics, sys, time

from benchlib import Berth, p99, push_tags


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--tags", type=int, default=50_000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()

    with Berth(a.berth, "ui-page") as b:
        b.admin("project", "create", "bench/ui", "--parents")
        repo = "bench/ui/many"
        t0 = time.time()
        push_tags(b, repo, b.registry_auth(repo), a.tags, a.threads)
        print(f"pushed {a.tags} tags in {time.time() - t0:.1f} s", file=sys.stderr)
        cookie = b.sign_in()
        c = b.conn()

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
            print(f"| {name} | {statistics.median(srv):.2f} | {p99(srv):.2f} | {statistics.median(cli):.2f} |")


if __name__ == "__main__":
    main()
