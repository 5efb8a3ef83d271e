#!/usr/bin/env python3
"""Single-request uploads on two Berth builds (or two backends), interleaved: A, B, A,
B, ... so that the machine's drift (the disk's writeback, other load) falls on both
alike. Each sample is one blob upload as `bench/run.sh` times it: the POST that opens
the session plus one `curl -T` PUT of the whole file with `?digest=`, after an
`os.sync()`. Prints each sample and the medians; `openssl dgst -sha256` of the same
file is timed between rounds as the ceiling.

    bench/put_ab.py --a target/release/berth-old --b target/release/berth \
        --backend postgres --size-mib 256 --rounds 7 --workdir /work/scale
    bench/put_ab.py --a target/release/berth --b target/release/berth \
        --backend sqlite --backend-b postgres
    bench/put_ab.py --a target/release/berth --b target/release/berth \
        --backend sqlite --workdir-b /mnt/other-disk

Standard library only, plus curl, openssl and (for --backend postgres) psql.
"""
import argparse
import base64
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from regbench import curl_put, refresh_blob  # noqa: E402

PASSWORD = "put-ab-root-password"
REPO = "bench/p/single"


def start(binary, label, workdir, backend, pg_url):
    data = tempfile.mkdtemp(prefix=f"put-ab-{label}-", dir=workdir)
    env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD, BERTH_TOKEN_EXPIRY="1h")
    db = None
    if backend == "postgres":
        db = f"put_ab_{label}_{os.getpid()}"
        subprocess.run(["psql", pg_url, "-qc", f"CREATE DATABASE {db}"], check=True)
        env["BERTH_DATABASE_URL"] = pg_url.rsplit("/", 1)[0] + "/" + db
    subprocess.run([binary, "admin", "--data-dir", data, "project", "create", "bench/p",
                    "--parents"], env=env, check=True, capture_output=True)
    port = benchlib.free_port()
    log = open(os.path.join(data, "serve.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}",
                             "--data-dir", data], env=env, stdout=log, stderr=log)
    benchlib.wait_listening(port, f"{label}: berth serve (see {data}/serve.log)", proc)
    return {"label": label, "proc": proc, "port": port, "data": data, "db": db}


def stop(s, pg_url):
    """Stop a server `start` (or another script's start) gave, dropping its database."""
    s["proc"].terminate()
    s["proc"].wait()
    if s["db"]:
        subprocess.run(["psql", pg_url, "-qc", f"DROP DATABASE IF EXISTS {s['db']} WITH (FORCE)"])


def token(port):
    basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
    c = http.client.HTTPConnection("127.0.0.1", port)
    scope = urllib.parse.quote(f"repository:{REPO}:pull,push")
    c.request("GET", f"/jwt/auth?service=container_registry&scope={scope}",
              headers={"Authorization": f"Basic {basic}"})
    r = c.getresponse()
    body = r.read()
    c.close()
    return json.loads(body)["token"]


def upload(s, path, tok):
    digest, size = refresh_blob(path)
    os.sync()
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", s["port"])
    c.request("POST", f"/v2/{REPO}/blobs/uploads/", headers={
        "Authorization": f"Bearer {tok}", "Content-Length": "0"})
    r = c.getresponse()
    r.read()
    c.close()
    t_post = time.perf_counter() - t0
    if r.status != 202:
        raise SystemExit(f"{s['label']}: POST returned {r.status}")
    loc = r.getheader("Location")
    if loc.startswith("/"):
        loc = f"http://127.0.0.1:{s['port']}{loc}"
    sep = "&" if "?" in loc else "?"
    t_put, code, up = curl_put(f"{loc}{sep}digest={digest}", path, 600,
                               {"Authorization": f"Bearer {tok}"})
    if code != 201 or up != size:
        raise SystemExit(f"{s['label']}: PUT returned {code} after {up} of {size} bytes")
    return size / 2**20 / (t_post + t_put)


def openssl_rate(path, size):
    t0 = time.perf_counter()
    subprocess.run(["openssl", "dgst", "-sha256", path], check=True, capture_output=True)
    return size / 2**20 / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="Berth binary A")
    ap.add_argument("--b", required=True, help="Berth binary B")
    ap.add_argument("--backend", default="postgres", choices=["sqlite", "postgres"],
                    help="metadata backend of both (see --backend-b)")
    ap.add_argument("--backend-b", choices=["sqlite", "postgres"],
                    help="B's backend, if not --backend (e.g. the same binary on both)")
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--workdir-b", default=None,
                    help="where B keeps its data, if not beside A's (another disk or "
                         "filesystem)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="put-ab-", dir=a.workdir)
    path = os.path.join(work, "blob")
    with open(path, "wb") as f:
        for _ in range(a.size_mib):
            f.write(os.urandom(2**20))
    size = a.size_mib * 2**20
    servers = [start(a.a, "a", work, a.backend, a.pg_url),
               start(a.b, "b", a.workdir_b or work, a.backend_b or a.backend, a.pg_url)]
    rates = {"a": [], "b": [], "openssl": []}
    try:
        toks = {s["label"]: token(s["port"]) for s in servers}
        for s in servers:  # warm-up, not counted
            upload(s, path, toks[s["label"]])
        for i in range(a.rounds):
            order = servers if i % 2 == 0 else servers[::-1]
            for s in order:
                r = upload(s, path, toks[s["label"]])
                rates[s["label"]].append(r)
                print(f"round {i + 1} {s['label']}: {r:.0f} MiB/s", flush=True)
            rates["openssl"].append(openssl_rate(path, size))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"\nmedians ({a.rounds} rounds, {a.size_mib} MiB, A {a.backend}, "
              f"B {a.backend_b or a.backend}): "
              f"A {med['a']:.0f} MiB/s ({100 * med['a'] / med['openssl']:.0f} % of openssl), "
              f"B {med['b']:.0f} MiB/s ({100 * med['b'] / med['openssl']:.0f} %), "
              f"openssl {med['openssl']:.0f} MiB/s")
    finally:
        for s in servers:
            stop(s, a.pg_url)
            shutil.rmtree(s["data"], ignore_errors=True)  # B's may be outside `work`
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
