#!/usr/bin/env python3
"""Chunked blob upload over one connection (8 MiB PATCHes), several Berth variants
interleaved on the same data: the row `bench/run.sh` calls "chunked upload 1 GiB",
alone, so a difference between builds (or between settings of one build) can be
pinned down without the whole suite.

A variant is `LABEL=BINARY` or `LABEL=BINARY:ENV=VALUE,...` (extra environment for
`berth serve`). Each round uploads a fresh random blob once per variant, in turn,
and the medians per variant are printed at the end with the ratio to the first.

    bench/chunked_one_conn.py --mib 1024 --rounds 3 \\
        before=target/release/berth-old after=target/release/berth \\
        no-mallopt=target/release/berth:BENCH_NO_MALLOPT=1
"""
import argparse, hashlib, os, statistics, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Berth  # noqa: E402

CHUNK = 8 << 20
MIB = 1 << 20


def variant(spec):
    label, _, rest = spec.partition("=")
    binary, _, envs = rest.partition(":")
    env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
    return label, binary, env


def upload(b, repo, path, digest):
    auth = b.registry_auth(repo)
    c = b.conn()
    t0 = time.perf_counter()
    c.request("POST", f"/v2/{repo}/blobs/uploads/", headers=auth)
    r = c.getresponse()
    r.read()
    assert r.status == 202, r.status
    loc = r.getheader("Location")
    off = 0
    buf = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as f:
        while (n := f.readinto(buf)):
            c.request("PATCH", loc, body=memoryview(buf)[:n], headers={
                **auth, "Content-Type": "application/octet-stream",
                "Content-Length": str(n), "Content-Range": f"{off}-{off + n - 1}"})
            r = c.getresponse()
            r.read()
            assert r.status == 202, (r.status, off)
            loc = r.getheader("Location")
            off += n
    sep = "&" if "?" in loc else "?"
    c.request("PUT", f"{loc}{sep}digest={digest}", headers=auth)
    r = c.getresponse()
    r.read()
    assert r.status == 201, r.status
    return off / MIB / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("variants", nargs="+", help="LABEL=BINARY[:ENV=VALUE,...]")
    a = ap.parse_args()
    variants = [variant(v) for v in a.variants]
    rates = {label: [] for label, _, _ in variants}
    with tempfile.TemporaryDirectory(dir=a.workdir) as work:
        path = os.path.join(work, "blob")
        for rnd in range(a.rounds):
            with open(path, "wb") as f:
                for _ in range(a.mib // 8):
                    f.write(os.urandom(CHUNK))
            digest = "sha256:" + hashlib.sha256(open(path, "rb").read()).hexdigest()
            for label, binary, env in variants:
                saved = {k: os.environ.get(k) for k in env}
                os.environ.update(env)
                try:
                    with Berth(binary, label) as b:
                        b.admin("project", "create", "bench/c", "--parents")
                        os.sync()
                        rate = upload(b, "bench/c/chunked", path, digest)
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
                rates[label].append(rate)
                print(f"round {rnd + 1} {label}: {rate:.0f} MiB/s", flush=True)
    first = statistics.median(rates[variants[0][0]])
    print(f"\nchunked upload {a.mib} MiB, 8 MiB PATCHes, one connection (MiB/s, median of {a.rounds})")
    for label, _, _ in variants:
        m = statistics.median(rates[label])
        runs = " / ".join(f"{r:.0f}" for r in rates[label])
        print(f"  {label:<14} {m:7.0f}   ({runs})   {m / first:.2f}x")


if __name__ == "__main__":
    main()
