#!/usr/bin/env python3
"""Cost of protection rules (issue 17) on manifest PUT and manifest GET.

Starts Berth (release binary) on a loopback port with a fresh data dir, pushes one
small image, then in phases: no rules; six rules that match nothing pushed (one
repository rule, four protected tag rules, one immutable rule: the rule check runs, one
indexed query plus the patterns); a tag rule that matches every pushed tag at
maintainer level (the pusher's role is then looked up too); the rules deleted again.
In each phase it PUTs the same manifest under --tags new tag names (4 persistent
connections) and runs `wrk -t2 -c10 -d<s>s` on the manifest GET. Prints tags/s and
GET req/s per phase. Standard library and wrk only.

    bench/protection.py [--berth target/release/berth] [--tags 4000] [--seconds 10]
"""
import argparse, base64, hashlib, http.client, json, os, re, shutil, socket, subprocess
import sys, tempfile, threading, time, urllib.parse

PASSWORD = "bench-root-password"
MEDIA = "application/vnd.oci.image.manifest.v1+json"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--tags", type=int, default=4000)
    ap.add_argument("--seconds", type=int, default=10)
    a = ap.parse_args()
    a.berth = os.path.abspath(a.berth)
    work = tempfile.mkdtemp(prefix="berth-protection-")
    data = os.path.join(work, "data")
    port = free_port()
    env = dict(os.environ, BERTH_INITIAL_ROOT_PASSWORD=PASSWORD, BERTH_LOG_LEVEL="warn",
               BERTH_TOKEN_EXPIRY="1h")
    server = subprocess.Popen([a.berth, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=work)
    try:
        server.stdout.readline()
        admin = lambda *args: subprocess.run([a.berth, "admin", "--data-dir", data, *args], check=True,
                                             capture_output=True, text=True, cwd=work).stdout.strip()
        admin("project", "create", "bench/prot", "--parents")
        pat = admin("token", "create", "--user", "root", "--name", "bench", "--scopes", "api")
        repo = "bench/prot/img"
        basic = base64.b64encode(f"root:{PASSWORD}".encode()).decode()
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("GET", "/jwt/auth?service=container_registry&scope=" +
                  urllib.parse.quote(f"repository:{repo}:pull,push"), headers={"Authorization": "Basic " + basic})
        token = json.loads(c.getresponse().read())["token"]
        auth = {"Authorization": "Bearer " + token}

        def blob(body):
            d = "sha256:" + hashlib.sha256(body).hexdigest()
            c.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body=body, headers=auth)
            r = c.getresponse(); r.read(); assert r.status == 201, r.status
            return d
        cfg = b'{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z"}'
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MEDIA,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(cfg), "size": len(cfg)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(b"layer"), "size": 5}]}).encode()
        c.request("PUT", f"/v2/{repo}/manifests/latest", body=manifest, headers={**auth, "Content-Type": MEDIA})
        r = c.getresponse(); r.read(); assert r.status == 201

        def api(method, path, body=None):
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request(method, "/api/v4" + path, body=json.dumps(body) if body else None,
                         headers={"PRIVATE-TOKEN": pat, "Content-Type": "application/json"})
            r = conn.getresponse(); text = r.read()
            assert r.status < 300, (r.status, text)
            return json.loads(text) if text else None
        pid = api("GET", "/projects/bench%2Fprot")["id"]
        rules = []

        def rule(kind, body):
            rules.append((kind, api("POST", f"/projects/{pid}/registry/protection/{kind}/rules", body)["id"]))

        def push_phase(prefix):
            def push(start, stop):
                conn = http.client.HTTPConnection("127.0.0.1", port)
                for i in range(start, stop):
                    conn.request("PUT", f"/v2/{repo}/manifests/{prefix}{i:06d}", body=manifest,
                                 headers={**auth, "Content-Type": MEDIA})
                    r = conn.getresponse(); r.read(); assert r.status == 201, r.status
            t0 = time.time()
            step = (a.tags + 3) // 4
            ts = [threading.Thread(target=push, args=(k * step, min(a.tags, (k + 1) * step))) for k in range(4)]
            for t in ts: t.start()
            for t in ts: t.join()
            return a.tags / (time.time() - t0)

        def get_phase():
            out = subprocess.run(["wrk", "-t2", "-c10", f"-d{a.seconds}s", "--latency",
                                  "-H", f"Accept: {MEDIA}", "-H", f"Authorization: Bearer {token}",
                                  f"http://127.0.0.1:{port}/v2/{repo}/manifests/latest"],
                                 check=True, capture_output=True, text=True).stdout
            assert "Non-2xx" not in out, out
            return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

        results = []
        def phase(name, prefix):
            put = push_phase(prefix)
            get = get_phase()
            results.append((name, put, get))
            print(f"{name}: {put:.0f} tag PUTs/s, {get:.0f} manifest GETs/s", file=sys.stderr)

        phase("no rules", "a")
        rule("repository", {"repository_path_pattern": "bench/prot/other*", "minimum_access_level_for_push": "owner"})
        for p in ["release-.*", "v[0-9]+(\\.[0-9]+)*", "stable", "prod-.*"]:
            rule("tag", {"tag_name_pattern": p, "minimum_access_level_for_push": "maintainer", "minimum_access_level_for_delete": "maintainer"})
        rule("tag", {"tag_name_pattern": "frozen-.*", "immutable": True})
        phase("6 rules, none matching", "b")
        api("DELETE", f"/projects/{pid}/registry/protection/tag/rules/{rules.pop()[1]}")
        rule("tag", {"tag_name_pattern": "c.*", "minimum_access_level_for_push": "maintainer", "minimum_access_level_for_delete": "maintainer"})
        phase("6 rules, one matching every tag (role looked up)", "c")
        for kind, rid in rules:
            api("DELETE", f"/projects/{pid}/registry/protection/{kind}/rules/{rid}")
        phase("rules deleted", "d")
        print("| phase | tag PUT/s | manifest GET req/s |")
        print("|---|---|---|")
        for name, put, get in results:
            print(f"| {name} | {put:.0f} | {get:.0f} |")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
