#!/usr/bin/env python3
"""Where the time of a chunked upload goes when every 8 MiB PATCH is its own `curl`
process (hence its own connection), and how two Berth binaries compare on it.

Starts each binary given with --bin on its own data dir, then, interleaved in one run
(so machine load hits both alike), for each run:

  * per-process chunked upload of --size MiB into each binary (`curl -T` per chunk of
    the blob cut by `split`, as `regbench.py`'s `chunked_upload_per_process`),
    recording per chunk the wall time around the process and curl's own phases (connect, first response
    byte, total);
  * the same client against a sink that reads and discards each body (the client's
    own floor: process starts, curl reading its chunk, loopback);
  * a synced copy of the blob on the same disk (`dd conv=fsync`), the ceiling.

Prints medians per binary and the raw figures, with the server's CPU time per MiB
uploaded and how busy all cores were during each upload (from /proc; Linux only), which
tell a server that is short of CPU from one that waits. Python standard library only.

    python3 bench/chunk_probe.py --bin before=/tmp/berth-a --bin after=target/release/berth

With `--client target/release/patch-client` each PATCH is sent by `bench/patch-client`
(sendfile) instead of `curl -T`, as `regbench.py`'s second per-process row does; curl's
phase timings are then not available, only the rates.
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import regbench  # noqa: E402

MIB = 1024 * 1024
CHUNK = 8 * MIB
PASSWORD = "chunk-probe-Password-1"


class PatchSink:
    """Reads each request's body and answers 202 with a Location, one at a time."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        buf = bytearray(1 << 20)
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    d = c.recv(65536)
                    if not d:
                        break
                    head += d
                head, rest = head.split(b"\r\n\r\n", 1)
                clen = 0
                for ln in head.decode("latin-1").split("\r\n")[1:]:
                    k, _, v = ln.partition(":")
                    if k.strip().lower() == "content-length":
                        clen = int(v)
                left = clen - len(rest)
                while left > 0:
                    n = c.recv_into(buf)
                    if not n:
                        break
                    left -= n
                c.sendall(b"HTTP/1.1 202 Accepted\r\nLocation: /sink\r\n"
                          b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            except (OSError, ValueError):
                pass
            finally:
                c.close()


def patch_chunks(url_of, path, size, auth_headers):
    """PATCH `path` in 8 MiB chunks, one `curl -T` per chunk from the files
    `regbench.split_chunks` made. Returns per-chunk (wall, connect, first_byte, total)
    seconds and the final Location."""
    parts = regbench.chunk_files(path)
    loc = None
    off = 0
    rows = []
    while off < size:
        n = min(CHUNK, size - off)
        url = url_of(loc)
        t0 = time.perf_counter()
        p = subprocess.run(
            regbench.curl_patch_cmd(
                url, parts[off // CHUNK], off, n, auth_headers, 600,
                extra=["-w", "\n@@ %{http_code} %{time_connect} %{time_pretransfer} "
                             "%{time_starttransfer} %{time_total}\n"]),
            capture_output=True, text=True)
        wall = time.perf_counter() - t0
        m = re.search(r"^@@ (\d+) (\S+) (\S+) (\S+) (\S+)", p.stdout, re.M)
        if p.returncode != 0 or not m or m.group(1) != "202":
            raise regbench.BenchError(f"PATCH at {off}: {p.stdout[:300]} {p.stderr[:300]}")
        connect, pre, first, total = (float(m.group(i)) for i in range(2, 6))
        rows.append((wall, connect, pre, first, total))
        new = re.search(r"^location:\s*(\S+)", p.stdout, re.M | re.I)
        loc = new.group(1) if new else loc
        off += n
    return rows, loc


class Server:
    def __init__(self, label, binary, work):
        self.label = label
        self.binary = os.path.abspath(binary)
        self.data = os.path.join(work, f"data-{label}")
        os.makedirs(self.data)
        port = regbench.free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, BERTH_LOG_LEVEL="warn", BERTH_INITIAL_ROOT_PASSWORD=PASSWORD,
                   BERTH_TOKEN_EXPIRY="1h")
        self.log = open(os.path.join(work, f"{label}.log"), "w")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", self.data],
            cwd=work, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.reg = regbench.Registry(self.url, auth=regbench.Auth("root", PASSWORD))
        deadline = time.time() + 60
        while True:
            try:
                if self.reg.ping() == 200:
                    break
            except Exception:  # noqa: BLE001 - not up yet
                self.reg.close()
            if time.time() > deadline or self.proc.poll() is not None:
                raise regbench.BenchError(f"{label} did not start; see {self.log.name}")
            time.sleep(0.1)
        subprocess.run([self.binary, "admin", "--log-level", "warn", "--data-dir", self.data,
                        "project", "create", "probe/p", "--parents"], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)

    def upload(self, path, client="curl"):
        digest, size = regbench.refresh_blob(path)
        if client == "curl":
            regbench.split_chunks(path)
        os.sync()
        reg = self.reg
        cpu0, busy0 = process_cpu(self.proc.pid), machine_cpu()
        t0 = time.perf_counter()
        loc, _ = reg.start_upload("probe/p/chunked")
        auth = reg.bearer_header(reg.path_of(loc))
        reg.close()
        first = loc

        def url_of(new):
            return reg.abs_url(new, reg.path_of(first)) if new else first
        if client == "curl":
            rows, loc = patch_chunks(url_of, path, size, auth)
        else:
            rows = []
            loc = regbench.patch_per_process(url_of, path, size, auth, client, 600)
        reg.expect(201, "PUT", reg.path_of(regbench.with_query(url_of(loc), "digest", digest)),
                   what="final PUT")
        dt = time.perf_counter() - t0
        cpu = process_cpu(self.proc.pid) - cpu0
        busy = (machine_cpu() - busy0) / (os.cpu_count() * dt)
        self.drop_blobs()
        return size / MIB / dt, rows, 1000 * cpu / (size / MIB), busy

    def drop_blobs(self):
        """Delete the blob files uploads left, behind the server's back (each run
        uploads a new digest, so the metadata left pointing at them is never read).
        Left in place, they fill the page cache, or on tmpfs memory the virtual
        machine has never touched, and later runs write slower than earlier ones."""
        root = os.path.join(self.data, "storage", "blobs")
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                os.unlink(os.path.join(dirpath, name))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def process_cpu(pid):
    """Seconds of CPU (user + system) process `pid` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu():
    """Seconds of CPU all cores have spent on anything but idling or waiting for I/O."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", action="append", required=True, metavar="LABEL=PATH")
    ap.add_argument("--size", type=int, default=256, help="MiB (default 256)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="on the disk to measure (default: ./)")
    ap.add_argument("--client", default="curl",
                    help="curl (default) or the path of bench/patch-client")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="chunk-probe.", dir=a.workdir or os.getcwd())
    servers = []
    try:
        blob = os.path.join(work, "blob.bin")
        with open(blob, "wb") as f:
            f.write(os.urandom(a.size * MIB))
        size = a.size * MIB
        for spec in a.bin:
            label, _, path = spec.partition("=")
            servers.append(Server(label, path, work))
        sink = PatchSink()
        results = {s.label: [] for s in servers}
        phases = {s.label: [] for s in servers}
        cpu = {s.label: [] for s in servers}
        busy = {s.label: [] for s in servers}
        floors, copies = [], []
        for run in range(a.runs):
            order = servers if run % 2 == 0 else list(reversed(servers))
            for s in order:
                rate, rows, ms_per_mib, cores = s.upload(blob, a.client)
                results[s.label].append(rate)
                phases[s.label].extend(rows)
                cpu[s.label].append(ms_per_mib)
                busy[s.label].append(cores)
                print(f"run {run + 1} {s.label}: {rate:.1f} MiB/s; server {ms_per_mib:.2f} ms "
                      f"CPU per MiB; all cores {100 * cores:.0f} % busy", flush=True)
            if a.client == "curl":
                regbench.split_chunks(blob)
            t0 = time.perf_counter()
            sink_url = f"http://127.0.0.1:{sink.port}/sink"
            if a.client == "curl":
                patch_chunks(lambda _loc: sink_url, blob, size, {})
            else:
                regbench.patch_per_process(lambda _loc: sink_url, blob, size, {}, a.client, 600)
            floors.append(size / MIB / (time.perf_counter() - t0))
            copies.append(regbench.synced_copy_rate(blob, work))
            print(f"run {run + 1} client floor (sink): {floors[-1]:.1f} MiB/s; "
                  f"synced copy {copies[-1]:.1f} MiB/s", flush=True)
        print()
        print(f"synced copy median {med(copies):.1f} MiB/s (runs "
              f"{' / '.join(f'{c:.0f}' for c in copies)}); client floor median "
              f"{med(floors):.1f} MiB/s (runs {' / '.join(f'{c:.0f}' for c in floors)})")
        for s in servers:
            print(f"{s.label}: server CPU median {med(cpu[s.label]):.2f} ms per MiB; all "
                  f"cores busy {100 * med(busy[s.label]):.0f} % of the upload's time (median)")
        for s in servers:
            r = results[s.label]
            rows = phases[s.label]
            if not rows:
                print(f"{s.label}: median {med(r):.1f} MiB/s (runs "
                      f"{' / '.join(f'{x:.1f}' for x in r)}), "
                      f"{100 * med(r) / med(copies):.0f} % of synced copy")
                continue
            print(f"{s.label}: median {med(r):.1f} MiB/s (runs "
                  f"{' / '.join(f'{x:.1f}' for x in r)}), {100 * med(r) / med(copies):.0f} % "
                  f"of synced copy; per chunk median ms: wall {1000 * med([x[0] for x in rows]):.1f}, "
                  f"curl total {1000 * med([x[4] for x in rows]):.1f}, "
                  f"connect {1000 * med([x[1] for x in rows]):.2f}, "
                  f"sent-to-answer {1000 * med([x[4] - x[2] for x in rows]):.1f}, "
                  f"outside curl {1000 * med([x[0] - x[4] for x in rows]):.1f}")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
