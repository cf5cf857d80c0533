#!/usr/bin/env python3
"""Collector benchmarks of issue 4, with the real daemons (release builds) on loopback.

  throughput  collector/benches/throughput.rs: annotations → assembled spans →
              encoded bytes (JSON v2, Thrift v1), one thread; its RESULT line is
              passed in with --throughput.
  visibility  record → queryable: bench/c/span_load.c records 10 k spans/s (traces
              of two local spans) into rings; blkkin-consumerd → blkkin-relayd →
              blkkin-collector --store; every SAMPLE-th trace is polled (one poller, GET
              /api/v2/traceMany of the pending traces every 20 ms) until both spans
              answer; latency = that moment − the wall-clock time of the trace's
              last record. Run twice: "closed" (two local spans per
              trace) and "keyval" (ztracer's key/value at the parent's
              endpoint inside a child span: three v2 spans per trace, one
              of them a side with no beginning or end).
  memory      spans that never close (span_load open) at OPEN_RATE spans/s for
              OPEN_SECONDS into a collector with its default limits; its RSS
              (/proc/<pid>/status VmRSS) sampled every 0.5 s must stay under the
              bound docs/ARCHITECTURE.md states ("Memory bound").

usage: bench/collector.py --bin DIR --lib DIR --load FILE --throughput FILE --out FILE --work DIR [--quick]
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Defaults of blkkin-collector (collector/src/service.rs) and the per-item
# sizes the bound is stated with (docs/ARCHITECTURE.md, "Memory bound").
MAX_OPEN = 100_000
QUEUE_SPANS = 100_000
OPEN_SPAN_BYTES = 1536
QUEUED_SPAN_BYTES = 2048
BASE_BYTES = 64 << 20
BOUND_BYTES = BASE_BYTES + MAX_OPEN * OPEN_SPAN_BYTES + QUEUE_SPANS * QUEUED_SPAN_BYTES


def log(*a):
    print("[collector]", *a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pct(sorted_v, p):
    if not sorted_v:
        return None
    return sorted_v[min(len(sorted_v) - 1, int(round(p / 100 * (len(sorted_v) - 1))))]


class Stack:
    """relayd + consumerd + collector (store) on fresh directories."""

    def __init__(self, bins, work, name, collector_args=()):
        self.dir = os.path.join(work, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.rings = os.path.join(self.dir, "rings")
        os.makedirs(self.rings, mode=0o700)
        self.procs = []
        relay_port, self.http = free_port(), free_port()
        relay = f"127.0.0.1:{relay_port}"
        self._start([os.path.join(bins, "blkkin-relayd"), "--listen", relay,
                     "--data-dir", os.path.join(self.dir, "relay")], "relayd.log")
        self._start([os.path.join(bins, "blkkin-consumerd"), "--relay", relay,
                     "--node", "bench", "--dir", self.rings], "consumerd.log")
        self.collector = self._start(
            [os.path.join(bins, "blkkin-collector"), "--relay", relay,
             "--store", os.path.join(self.dir, "spans.db"),
             "--listen", f"127.0.0.1:{self.http}", "--stats-interval", "1", *collector_args],
            "collector.log")
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http}/health", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() > deadline:
                    raise SystemExit(f"collector did not come up; see {self.dir}/collector.log")
                time.sleep(0.2)

    def _start(self, cmd, logname):
        out = open(os.path.join(self.dir, logname), "w")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, "BLKIN_SHM_DIR": self.rings})
        self.procs.append(p)
        return p

    def load(self, load, lib, args):
        env = {**os.environ, "BLKIN_SHM_DIR": self.rings, "LD_LIBRARY_PATH": lib}
        return subprocess.Popen([load, *args], stdout=subprocess.PIPE, text=True, env=env)

    def stop(self):
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# Spans per trace of each span_load pattern, as the store answers them.
PATTERN_SPANS = {"closed": 2, "keyval": 3}


def visibility(args, pattern):
    rate, seconds, sample = 10_000, (10 if args.quick else 30), 25
    want = PATTERN_SPANS[pattern]
    log(f"record → queryable ({pattern}: {want} spans per trace) at {rate} spans/s for {seconds} s")
    st = Stack(args.bin, args.work, f"visibility-{pattern}")
    lat, missing = [], []
    pending = {}  # trace id → wall-clock µs of its last record
    lock = threading.Lock()
    done = threading.Event()

    def poll():
        # One poller for every sampled trace: GET /api/v2/traceMany of the
        # pending ones every 20 ms (a poller per trace would load the
        # collector's HTTP server, and this 2-vCPU machine, more than the
        # spans do).
        while True:
            with lock:
                ids = list(pending)
            if not ids and done.is_set():
                return
            now = time.time()
            for i in range(0, len(ids), 200):
                chunk = ids[i:i + 200]
                url = f"http://127.0.0.1:{st.http}/api/v2/traceMany?traceIds={','.join(chunk)}"
                try:
                    traces = json.load(urllib.request.urlopen(url, timeout=5))
                except (urllib.error.URLError, OSError):
                    continue
                seen = time.time()
                with lock:
                    for spans in traces:
                        if len(spans) >= want and spans[0]["traceId"] in pending:
                            recorded = pending.pop(spans[0]["traceId"])
                            lat.append(seen - recorded / 1e6)
                    for t in chunk:
                        # Given up on after 30 s.
                        if t in pending and seen - pending[t] / 1e6 > 30:
                            missing.append(pending.pop(t))
            time.sleep(max(0.0, 0.02 - (time.time() - now)))

    cpu0 = cpu_seconds(st.collector.pid)
    t0 = time.time()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    gen = st.load(args.load, args.lib, [pattern, str(rate), str(seconds), str(sample)])
    spans, sampled = 0, 0
    for line in gen.stdout:
        parts = line.split()
        if parts[0] == "done":
            spans = int(parts[1])
            break
        with lock:
            pending[parts[0]] = int(parts[1])
        sampled += 1
    gen.wait()
    done.set()
    poller.join()
    wall = time.time() - t0
    cpu = cpu_seconds(st.collector.pid) - cpu0
    st.stop()
    lat.sort()
    r = {
        "pattern": pattern, "spans_per_trace": want,
        "rate_spans_per_s": rate, "seconds": seconds, "spans": spans,
        "sampled_traces": sampled, "missing": len(missing),
        "p50_s": pct(lat, 50), "p99_s": pct(lat, 99), "max_s": lat[-1] if lat else None,
        "collector_cpu_percent": 100 * cpu / wall,
        "target_p99_s": 2.0,
    }
    r["met"] = bool(lat) and not missing and r["p99_s"] <= 2.0
    log(json.dumps(r))
    return r


def memory(args):
    rate, seconds = 20_000, (20 if args.quick else 60)
    log(f"memory: {rate} never-closing spans/s for {seconds} s, default limits")
    st = Stack(args.bin, args.work, "memory")
    gen = st.load(args.load, args.lib, ["open", str(rate), str(seconds)])
    samples, t0 = [], time.time()
    while gen.poll() is None:
        samples.append((round(time.time() - t0, 1), rss_bytes(st.collector.pid)))
        time.sleep(0.5)
    out = gen.stdout.read().split()
    # Keep sampling while the idle timeout (30 s) drains what is open.
    end = time.time() + (10 if args.quick else 35)
    while time.time() < end:
        samples.append((round(time.time() - t0, 1), rss_bytes(st.collector.pid)))
        time.sleep(0.5)
    st.stop()
    with open(os.path.join(st.dir, "collector.log")) as f:
        clog = f.read()
    # The final totals, else (a collector killed at the stop timeout) the
    # last periodic counters.
    totals = [l for l in clog.splitlines() if "collector totals" in l] or \
        [l for l in clog.splitlines() if "collector counters" in l]
    peak = max(b for _, b in samples)
    r = {
        "rate_spans_per_s": rate, "seconds": seconds,
        "spans": int(out[1]) if len(out) > 1 else None,
        "max_open": MAX_OPEN, "queue_spans": QUEUE_SPANS,
        "bound_bytes": BOUND_BYTES, "peak_rss_bytes": peak,
        "samples": samples[:: max(1, len(samples) // 60)],
        "collector_totals": totals[-1] if totals else None,
    }
    r["met"] = peak <= BOUND_BYTES
    log(json.dumps({k: v for k, v in r.items() if k != "samples"}))
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--throughput", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    tp = None
    with open(args.throughput) as f:
        for line in f:
            if line.startswith("RESULT "):
                tp = json.loads(line[len("RESULT "):])
    if tp is None:
        raise SystemExit(f"no RESULT line in {args.throughput}")
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
        "machine": f"{os.cpu_count()} vCPU " + subprocess.run(
            "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True,
            capture_output=True, text=True).stdout.strip(),
        "profile": os.environ.get("PROFILE", "bench-fast"),
        "throughput": tp,
        "target_spans_per_s_per_core": 200_000,
        "visibility": visibility(args, "closed"),
        "visibility_keyval": visibility(args, "keyval"),
        "memory": memory(args),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
