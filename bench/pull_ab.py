#!/usr/bin/env python3
"""`skopeo copy` pulls from Berth (SQLite and PostgreSQL) and the reference registry,
interleaved round by round, so that the machine's drift falls on all alike.

`bench/run.sh` measures each registry minutes apart, one after the other; a pull
writes every layer to the disk, whose speed here changes within minutes (writeback of
an earlier row, throttling), so that row compares the registries under different
disks. Here all of them run at once (an idle registry takes no CPU), hold the same
image (N layers of random bytes, an uncompressed tar media type so skopeo unpacks
nothing), and each round pulls it from each registry in turn, the order rotating, each
into a fresh `dir:` destination after an `os.sync()`. Prints every sample, the
medians, and each Berth median against the reference's.

    bench/pull_ab.py --berth target/release/berth --layers 20 --layer-mib 20 \
        --rounds 5 --workdir /work/scale

Standard library only, plus skopeo, docker-registry (the reference) and, for the
PostgreSQL backend, psql.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import put_ab  # noqa: E402
import regbench  # noqa: E402

REPO = put_ab.REPO


def start_reference(binary, workdir):
    """The CNCF distribution registry as `bench/run.sh` configures it."""
    data = tempfile.mkdtemp(prefix="pull-ab-reference-", dir=workdir)
    port = benchlib.free_port()
    cfg = os.path.join(data, "config.yml")
    with open(cfg, "w") as f:
        f.write(regbench.reference_config(f"{data}/storage", port))
    log = open(os.path.join(data, "serve.log"), "w")
    proc = subprocess.Popen([binary, "serve", cfg], stdout=log, stderr=log)
    benchlib.wait_listening(port, "reference registry", proc)
    return {"label": "reference", "proc": proc, "port": port, "data": data, "db": None,
            "auth": {}}


def push_image(s, layers):
    """The image (config, `layers` blobs, manifest) under REPO:latest."""
    c = http.client.HTTPConnection("127.0.0.1", s["port"])
    descs = [(benchlib.push_blob_in_session(c, REPO, s["auth"], data), len(data)) for data in layers]
    manifest = benchlib.image_manifest(c, REPO, s["auth"], descs,
                                       push=benchlib.push_blob_in_session)
    benchlib.put_manifest(c, REPO, s["auth"], "latest", manifest)
    c.close()
    return descs


def pull(s, work, descs, authfile):
    dest = os.path.join(work, f"pull-{s['label']}")
    cmd = ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"]
    cmd += ["--src-authfile", authfile] if s["auth"] else ["--src-no-creds"]
    cmd += [f"docker://127.0.0.1:{s['port']}/{REPO}:latest", f"dir:{dest}"]
    os.sync()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{s['label']}: skopeo copy failed: {p.stderr.strip()[:600]}")
    for d, n in descs:
        got = os.path.getsize(os.path.join(dest, d.split(":", 1)[1]))
        if got != n:
            raise SystemExit(f"{s['label']}: layer {d} pulled as {got} bytes, want {n}")
    shutil.rmtree(dest)
    return sum(n for _, n in descs) / 2**20 / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--berth", required=True, help="Berth binary")
    ap.add_argument("--backends", default="sqlite,postgres",
                    help="Berth's metadata backends, comma-separated")
    ap.add_argument("--reference", default="/usr/bin/docker-registry",
                    help="the reference registry's binary")
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--layer-mib", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", default=None, help="where registries keep data and "
                    "skopeo writes (the disk measured)")
    a = ap.parse_args()
    if not shutil.which("skopeo"):
        raise SystemExit("skopeo not found (apt-get install skopeo)")
    work = tempfile.mkdtemp(prefix="pull-ab-", dir=a.workdir)
    servers = []
    try:
        for backend in a.backends.split(","):
            s = put_ab.start(a.berth, backend, work, backend, a.pg_url)
            s["auth"] = {"Authorization": f"Bearer {put_ab.token(s['port'])}"}
            servers.append(s)
        servers.append(start_reference(a.reference, work))
        authfile = os.path.join(work, "auth.json")
        cred = base64.b64encode(f"root:{put_ab.PASSWORD}".encode()).decode()
        with open(os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump({"auths": {f"127.0.0.1:{s['port']}": {"auth": cred}
                                 for s in servers if s["auth"]}}, f)
        layers = [os.urandom(a.layer_mib * 2**20) for _ in range(a.layers)]
        descs = [push_image(s, layers) for s in servers][0]
        del layers
        for s in servers:  # warm-up, not counted
            pull(s, work, descs, authfile)
        rates = {s["label"]: [] for s in servers}
        for i in range(a.rounds):
            k = i % len(servers)
            for s in servers[k:] + servers[:k]:
                r = pull(s, work, descs, authfile)
                rates[s["label"]].append(r)
                print(f"round {i + 1} {s['label']}: {r:.0f} MiB/s", flush=True)
        med = {k: statistics.median(v) for k, v in rates.items()}
        ref = med["reference"]
        print(f"\nmedians of {a.rounds} rounds, {a.layers} x {a.layer_mib} MiB layers:")
        for label, m in med.items():
            tail = "" if label == "reference" else f" ({100 * m / ref:.0f} % of the reference)"
            print(f"  {label}: {m:.0f} MiB/s{tail}")
    finally:
        for s in servers:
            put_ab.stop(s, a.pg_url)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
