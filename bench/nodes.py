#!/usr/bin/env python3
"""One Berth node vs. three: push and pull throughput and manifest GETs through 1 or 3
nodes that share one PostgreSQL database and one S3 bucket (a moto server started
here), all on this machine.

For each node count it starts a fresh database (made with `psql` on --pg-url's server),
a fresh bucket, and the nodes (`berth serve` on loopback ports, one config file), then:

- push: --clients threads each upload --blobs blobs of --blob-mib MiB (fresh bytes,
  digests computed before timing) as a two-step upload, the POST and the PUT sent to
  consecutive nodes in turn; aggregate MiB/s over the wall time;
- pull: the same threads GET every blob back, each from the next node in turn;
- manifest GET: wrk with 12 connections in all against a public repository, with an
  anonymous pull token one node issued: one wrk on the single node, or one wrk with 4
  connections on each of the three nodes at once (their req/s summed).

The client spreads requests over the nodes itself (no load balancer process in
between). Everything shares the machine's CPUs, so three nodes cannot do more work
than one here; what the comparison shows is the cost of spreading requests over nodes
that share state. Standard library only, plus `psql`, `wrk` and a Python with
`moto[server]` (--moto-python, default: the test venv's).

    bench/nodes.py [--berth target/release/berth] [--nodes 1,3]
"""
import argparse, base64, hashlib, http.client, json, os, re, shutil, socket, statistics
import subprocess, sys, tempfile, threading, time, urllib.parse

PASSWORD = "bench-root-password"
PROJECT = "bench/nodes"
REPO = PROJECT + "/img"
MIB = 1024 * 1024

# The loopback-port and database helpers of the backend benchmark (same directory).
from meta_backends import free_port, psql, with_database  # noqa: E402


def request(port, method, path, body=None, headers=None, want=(200,)):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        if r.status not in want:
            raise SystemExit(f"{method} {path} on :{port}: {r.status} {data[:300]!r}")
        return r, data
    finally:
        c.close()


class Moto:
    def __init__(self, python):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("moto did not start")

    def bucket(self, name):
        request(self.port, "PUT", f"/{name}", want=(200,))

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Cluster:
    """`n` nodes on one database and one bucket, each with its own data dir."""

    def __init__(self, a, n, moto, database_url, bucket):
        self.work = tempfile.mkdtemp(prefix=f"berth-nodes-{n}-")
        self.config = os.path.join(self.work, "berth.toml")
        with open(self.config, "w") as f:
            f.write(f'[database]\nurl = "{database_url}"\n\n[storage]\nkind = "s3"\n\n'
                    f'[storage.s3]\nbucket = "{bucket}"\n'
                    f'endpoint = "http://127.0.0.1:{moto.port}"\nregion = "us-east-1"\n'
                    'access_key_id = "bench"\nsecret_access_key = "bench"\npath_style = true\n')
        self.env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD,
                        BERTH_LOG_LEVEL="warn", BERTH_TOKEN_EXPIRY="1h")
        self.berth = a.berth
        self.procs, self.ports = [], []
        for i in range(n):
            data = os.path.join(self.work, f"node{i}")
            port = free_port()
            p = subprocess.Popen(
                [a.berth, "serve", "--config", self.config, "--listen", f"127.0.0.1:{port}",
                 "--data-dir", data],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env)
            if not p.stdout.readline().startswith(b"berth listening"):
                raise SystemExit(f"node {i} did not start")
            threading.Thread(target=lambda p=p: [None for _ in p.stdout], daemon=True).start()
            self.procs.append(p)
            self.ports.append(port)

    def admin(self, *args):
        subprocess.run([self.berth, "admin", "--config", self.config, "--data-dir",
                        os.path.join(self.work, "node0"), *args], check=True,
                       capture_output=True, env=self.env)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def token(port, anonymous=False):
    """A bearer token from one node's token service (every node accepts it)."""
    headers = {}
    if not anonymous:
        basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
        headers["Authorization"] = "Basic " + basic
    scope = f"repository:{REPO}:pull" + ("" if anonymous else ",push")
    _, data = request(port, "GET", "/jwt/auth?service=container_registry&scope="
                      + urllib.parse.quote(scope), headers=headers)
    return {"Authorization": "Bearer " + json.loads(data)["token"]}


def run_threads(n, fn):
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"a client failed: {errors[0]}")
    return time.perf_counter() - t0


def bench(a, n, moto):
    name = f"berth_nodes_{os.getpid()}_{n}"
    psql(a.pg_url, f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                   "LC_COLLATE 'C' LC_CTYPE 'C'")
    bucket = f"nodes-{n}-{os.getpid()}"
    moto.bucket(bucket)
    cluster = Cluster(a, n, moto, with_database(a.pg_url, name), bucket)
    try:
        cluster.admin("project", "create", PROJECT, "--parents", "--visibility", "public")
        auth = token(cluster.ports[0])  # any node accepts any node's token
        ports = cluster.ports
        base = os.urandom(a.blob_mib * MIB)
        blobs = [[None] * a.blobs for _ in range(a.clients)]
        for c in range(a.clients):
            for k in range(a.blobs):
                data = os.urandom(16) + base[16:]
                blobs[c][k] = (data, "sha256:" + hashlib.sha256(data).hexdigest())

        def push(c):
            turn = c
            for data, digest in blobs[c]:
                r, _ = request(ports[turn % len(ports)], "POST", f"/v2/{REPO}/blobs/uploads/",
                               headers=auth, want=(202,))
                turn += 1
                loc = urllib.parse.urlsplit(r.getheader("Location"))
                path = loc.path + "?" + (loc.query + "&" if loc.query else "") + "digest=" + digest
                request(ports[turn % len(ports)], "PUT", path, body=data,
                        headers={**auth, "Content-Type": "application/octet-stream"},
                        want=(201,))
                turn += 1

        def pull(c):
            turn = c + 1
            for data, digest in blobs[c]:
                _, got = request(ports[turn % len(ports)], "GET",
                                 f"/v2/{REPO}/blobs/{digest}", headers=auth)
                if len(got) != len(data):
                    raise SystemExit("pulled blob has the wrong size")
                turn += 1

        total = a.clients * a.blobs * a.blob_mib
        push_s = run_threads(a.clients, push)
        pull_s = run_threads(a.clients, pull)

        # A small public image for the manifest GETs.
        cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        cd = "sha256:" + hashlib.sha256(cfg).hexdigest()
        request(ports[0], "POST", f"/v2/{REPO}/blobs/uploads/?digest={cd}", body=cfg,
                headers=auth, want=(201,))
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd, "size": len(cfg)},
            "layers": []}).encode()
        request(ports[-1], "PUT", f"/v2/{REPO}/manifests/latest", body=manifest,
                headers={**auth, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                want=(201,))
        conns = max(1, 12 // len(ports))
        pull_token = token(ports[-1], anonymous=True)["Authorization"]
        procs = [subprocess.Popen(
            ["wrk", "-t", "1" if len(ports) > 1 else "2", "-c", str(conns),
             "-d", f"{a.wrk_seconds}s", "-H",
             "Accept: application/vnd.oci.image.manifest.v1+json",
             "-H", f"Authorization: {pull_token}",
             f"http://127.0.0.1:{port}/v2/{REPO}/manifests/latest"],
            stdout=subprocess.PIPE, text=True) for port in ports]
        rps = 0.0
        for p in procs:
            out, _ = p.communicate()
            if "Non-2xx" in out:
                raise SystemExit(f"wrk saw errors:\n{out}")
            rps += float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
        return {"push_mib_s": total / push_s, "pull_mib_s": total / pull_s,
                "manifest_get_rps": rps}
    finally:
        cluster.stop()
        psql(a.pg_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--berth", default=os.path.join(root, "target/release/berth"))
    ap.add_argument("--nodes", default="1,3")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--blobs", type=int, default=2, help="blobs per client")
    ap.add_argument("--blob-mib", type=int, default=32)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--moto-python", default=os.path.join(root, "target/e2e-venv/bin/python"))
    ap.add_argument("--json")
    a = ap.parse_args()
    moto = Moto(a.moto_python)
    results = {}
    try:
        for n in [int(x) for x in a.nodes.split(",")]:
            print(f"== {n} node(s)", file=sys.stderr)
            results[n] = bench(a, n, moto)
            print(f"   {results[n]}", file=sys.stderr)
    finally:
        moto.stop()
    counts = sorted(results)
    print(f"| PostgreSQL + S3 (moto), {a.clients} clients | "
          + " | ".join(f"{n} node{'s' if n > 1 else ''}" for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for key, label in (("push_mib_s", f"push MiB/s ({a.blob_mib} MiB blobs, POST and PUT on "
                                     "different nodes)"),
                       ("pull_mib_s", "pull MiB/s (blob GETs spread over the nodes)"),
                       ("manifest_get_rps", "manifest GET req/s (wrk, 12 connections in all)")):
        print(f"| {label} | " + " | ".join(f"{results[n][key]:.1f}" for n in counts) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
