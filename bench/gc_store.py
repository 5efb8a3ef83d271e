#!/usr/bin/env python3
"""Online GC deleting blob bytes from S3 while pushes go on.

For each Berth binary given (`--bin label=PATH`, interleaved round by round): one
`berth serve` on SQLite with its blobs in a moto S3 bucket (moto from --venv, started
here and stopped afterwards) and `BERTH_GC_REVIEW_DELAY` of --delay seconds (online
GC then looks for due items every half of that, at least every 0.2 s).

--blobs small blobs are pushed into one repository (monolithic POST with the digest,
4 clients) and never used by a manifest: each is queued for review and, once its
delay has passed, online GC deletes its link, its row and its bytes, while the later
ones are still being pushed. Meanwhile one more client pushes fresh blobs into
another repository, one after another, timing each: a push publishes under the
blob lock's shared side, which the deletion of bytes holds exclusively.

Reported: push latencies of that client while GC deletes (median, p99, max), and
how long after the last blob was due GC had deleted them all
(`berth_gc_blobs_deleted_total` on /metrics).

    bench/gc_store.py --bin before=/path/old-berth --bin after=target/release/berth

Standard library only, plus moto[server] in the venv (tests/requirements.txt).
"""
import argparse, hashlib, http.client, os, re, shutil, statistics
import subprocess, sys, tempfile, threading, time, urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import PASSWORD, free_port, in_threads, p99  # noqa: E402
from cache_nodes import token  # noqa: E402
from nodes import Moto, request  # noqa: E402

PROJECT = "bench/gc"


def push_blob(c, repo, tok, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    c.request("POST", f"/v2/{repo}/blobs/uploads/?digest={urllib.parse.quote(d)}", body=data,
              headers={"Authorization": f"Bearer {tok}",
                       "Content-Type": "application/octet-stream"})
    r = c.getresponse()
    r.read()
    if r.status != 201:
        raise SystemExit(f"push into {repo}: {r.status}")


def deleted(port):
    _, body = request(port, "GET", "/metrics")
    m = re.search(rb"^berth_gc_blobs_deleted_total(?:\{[^}]*\})? (\d+)", body, re.M)
    return int(m.group(1)) if m else 0


def one_binary(binary, a, moto, bucket, work, label):
    data = os.path.join(work, label)
    config = os.path.join(work, f"{label}.toml")
    with open(config, "w") as f:
        f.write(f'[storage]\nkind = "s3"\n\n[storage.s3]\nbucket = "{bucket}"\n'
                f'prefix = "{label}"\nendpoint = "http://127.0.0.1:{moto.port}"\n'
                'region = "us-east-1"\naccess_key_id = "bench"\n'
                'secret_access_key = "bench"\npath_style = true\n')
    env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD, BERTH_LOG_LEVEL="warn",
               BERTH_TOKEN_EXPIRY="1h", BERTH_GC_REVIEW_DELAY=f"{a.delay}s")
    env.pop("BERTH_DATABASE_URL", None)
    subprocess.run([binary, "admin", "--config", config, "--data-dir", data, "project",
                    "create", PROJECT, "--parents"], env=env, check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([binary, "serve", "--config", config, "--listen",
                             f"127.0.0.1:{port}", "--data-dir", data],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        if not proc.stdout.readline().startswith(b"berth listening"):
            raise SystemExit("berth did not start")
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        doomed, busy = f"{PROJECT}/doomed", f"{PROJECT}/busy"
        tok = token(port, [doomed, busy])

        def fill(start, stop):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for i in range(start, stop):
                push_blob(c, doomed, tok, f"{label} doomed blob {i}".encode())
            c.close()

        latencies, stop = [], threading.Event()

        def probe():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            n = 0
            while not stop.is_set():
                t = time.perf_counter()
                push_blob(c, busy, tok, f"{label} busy blob {n} {time.time_ns()}".encode())
                latencies.append((time.perf_counter() - t) * 1000)
                n += 1
            c.close()

        prober = threading.Thread(target=probe)
        t0 = time.monotonic()
        # Start timing once the first blobs are due: before that GC has nothing to do.
        threading.Timer(a.delay, prober.start).start()
        in_threads(a.blobs, 4, fill)
        filled = time.monotonic()
        if filled - t0 < a.delay + 2:
            raise SystemExit(f"pushing took {filled - t0:.1f} s: give a --delay well below it")
        stop.set()
        prober.join()
        # The timed pushes' blobs are garbage too, the last due `delay` after it.
        want = a.blobs + len(latencies)
        while deleted(port) < want:
            if time.monotonic() - filled > a.timeout:
                raise SystemExit(f"GC deleted {deleted(port)} of {want} in {a.timeout} s")
            time.sleep(0.05)
        lag = time.monotonic() - filled - a.delay
        latencies.sort()
        return {"fill_s": filled - t0, "lag_s": lag, "pushes": len(latencies),
                "p50": statistics.median(latencies), "p99": p99(latencies),
                "max": latencies[-1]}
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, help="LABEL=PATH, repeatable")
    ap.add_argument("--blobs", type=int, default=1000)
    ap.add_argument("--delay", type=int, default=4,
                    help="BERTH_GC_REVIEW_DELAY in seconds (well below what pushing takes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--venv", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "target", "e2e-venv"))
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bin]
    results = {label: [] for label, _ in bins}
    work = tempfile.mkdtemp(prefix="gc-store-", dir=a.workdir)
    moto = Moto(os.path.join(a.venv, "bin", "python"))
    try:
        for rnd in range(a.rounds):
            order = bins if rnd % 2 == 0 else bins[::-1]
            for label, path in order:
                bucket = f"gc-{label}-{rnd}".lower()
                moto.bucket(bucket)
                r = one_binary(path, a, moto, bucket, work, f"{label}{rnd}")
                results[label].append(r)
                print(f"round {rnd + 1} {label}: {a.blobs} blobs pushed in {r['fill_s']:.1f} s, "
                      f"all deleted {r['lag_s']:.1f} s after the last was due; {r['pushes']} timed pushes "
                      f"meanwhile: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
                      f"max {r['max']:.0f} ms", flush=True)
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians of {a.rounds} (SQLite + moto S3, {a.blobs} blobs to delete):")
    for label, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"  {label}: all deleted {med['lag_s']:.1f} s after the last was due; pushes "
              f"while GC deletes: p50 {med['p50']:.1f} ms, p99 {med['p99']:.1f} ms, "
              f"max {med['max']:.0f} ms")

if __name__ == "__main__":
    main()
