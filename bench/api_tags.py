#!/usr/bin/env python3
"""Tag listing through Berth's REST API on a repository with many tags.

Starts Berth (release binary) on a loopback port with a fresh data dir, pushes one
manifest under N tags (default 100,000) over the registry API, then times one page of
100 tags through `GET /api/v4/projects/:id/registry/repositories/:rid/tags` with
offset pagination (first, middle and last pages) and with keyset pagination, and
prints medians and p99s in milliseconds. Standard library only.

    bench/api_tags.py [--berth target/release/berth] [--tags 100000] [--samples 200]
"""
import argparse, json, statistics, sys, time

from benchlib import Berth, p99, push_tags


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--tags", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()

    with Berth(a.berth, "api-tags") as b:
        b.admin("project", "create", "bench/tags", "--parents")
        pat = b.admin("token", "create", "--user", "root", "--name", "bench", "--scopes", "api")
        repo = "bench/tags/many"
        t0 = time.time()
        push_tags(b, repo, b.registry_auth(repo), a.tags, a.threads)
        print(f"pushed {a.tags} tags in {time.time() - t0:.1f} s", file=sys.stderr)
        c = b.conn()

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
            print(f"| {name} | {statistics.median(xs):.2f} | {p99(xs):.2f} |")


if __name__ == "__main__":
    main()
