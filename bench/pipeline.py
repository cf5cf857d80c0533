#!/usr/bin/env python3
"""Pipeline benchmarks of issue 3: rings → blkkin-consumerd → blkkin-relayd → disk / live reader.

Runs the real daemons (release builds) on loopback and writes one JSON file that
bench/report.py renders into docs/BENCHMARKS.md. Scenarios:

  throughput  prefilled drain: generators fill large rings with N records and exit,
              then the consumer starts; time until the relay holds all N.
  concurrent  generators paced at the target rate into ordinary-size rings while the
              consumer drains; zero loss = the pipeline kept up.
  latency     one generator paced at 100 k records/s; a live reader (Start::Newest)
              measures now − record time (raw timestamp converted with the stream's
              calibration, as `blkkin tail` does).
  idle        100 traced processes that wrote a few records and sleep; CPU of both
              daemons over a quiet window.
  tls         the prefilled drain and the live latency again, each run with plain TCP
              and with mutual TLS (relay certificate, producer and reader client
              certificates, as in docs/SECURITY.md) alternately in the same run; the
              drain also with the relay's data on tmpfs, and the disk's own write
              bandwidth, so a disk that caps both shows as such.

CPU per daemon is utime+stime from /proc/<pid>/stat (all threads) over the measured
window. Zero loss is checked by counts: what the generators' ring headers say was
written and lost, what the relay's store holds after it stopped (every entry
CRC-checked by `blkkin-pipeline-bench verify`), position breaks, and the loss
counters the consumer forwarded.

usage: bench/pipeline.py --bin DIR --out FILE [--quick] [--only NAME ...]
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
RECORD_BYTES = 80  # a timestamp annotation with these values (bench/run.sh: record_bytes_timestamp)


def log(*a):
    print("[pipeline]", *a, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def system_busy():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Window:
    """CPU of the daemons and of the whole machine between start() and stop()."""

    def __init__(self, procs):
        self.procs = procs

    def start(self):
        self.t0 = time.time_ns()
        self.cpu0 = {k: cpu_seconds(p.pid) for k, p in self.procs.items()}
        self.sys0 = system_busy()
        self.load0 = loadavg()
        return self

    def stop(self, t1=None):
        now = time.time_ns()
        cpu1 = {k: cpu_seconds(p.pid) for k, p in self.procs.items()}
        sys1 = system_busy()
        self.t1 = t1 or now
        secs = (self.t1 - self.t0) / 1e9
        wall = (now - self.t0) / 1e9
        busy = sys1[0] - self.sys0[0]
        total = sys1[1] - self.sys0[1]
        return {
            "seconds": secs,
            "cpu_s": {k: cpu1[k] - self.cpu0[k] for k in cpu1},
            "cpu_pct": {k: 100 * (cpu1[k] - self.cpu0[k]) / wall for k in cpu1},
            "machine_busy_pct": 100 * busy / total if total else None,
            "loadavg": [self.load0, loadavg()],
        }


class Bench:
    def __init__(self, bindir, workdir):
        self.bin = bindir
        self.work = workdir
        self.children = []
        self.tls = None  # directory of the certificates while a TLS run goes

    def tls_args(self, who):
        """Flags of the relay ("server") or of a client ("producer", "reader") in a TLS run."""
        if not self.tls:
            return []
        d = self.tls
        if who == "server":
            return ["--tls-cert", f"{d}/server.pem", "--tls-key", f"{d}/server.key",
                    "--tls-client-ca", f"{d}/ca.pem"]
        return ["--tls-ca", f"{d}/ca.pem", "--tls-cert", f"{d}/{who}-bench.pem",
                "--tls-key", f"{d}/{who}-bench.key"]

    def exe(self, name):
        return os.path.join(self.bin, name)

    def spawn(self, args, log_name, env=None, stdout=None):
        errf = open(os.path.join(self.work, log_name + ".log"), "w")
        p = subprocess.Popen(args, stdout=stdout or errf, stderr=errf, env=env)
        p.log_path = errf.name
        self.children.append(p)
        return p

    def relay(self, data_dir, extra=()):
        p = self.spawn(
            [self.exe("blkkin-relayd"), "--listen", "127.0.0.1:0", "--data-dir", data_dir, *extra,
             *self.tls_args("server")],
            "relayd",
            env=dict(os.environ, BLKKIN_LOG="info"),
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(r"listening addr=(\S+)", open(p.log_path).read())
            if m:
                return p, m.group(1)
            if p.poll() is not None:
                raise RuntimeError(f"relay exited: {open(p.log_path).read()}")
            time.sleep(0.02)
        raise RuntimeError("relay did not start")

    def consumer(self, ring_dir, addr):
        return self.spawn(
            [self.exe("blkkin-consumerd"), "--relay", addr, "--dir", ring_dir, "--node", "bench",
             *self.tls_args("producer")],
            "consumerd",
        )

    def tool(self, *args, env=None):
        if args[0] in ("watch", "latency"):
            args = (*args, *self.tls_args("reader"))
        r = subprocess.run([self.exe("blkkin-pipeline-bench"), *args], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"blkkin-pipeline-bench {args[0]} failed: {r.stderr}")
        return json.loads(r.stdout)

    def tool_bg(self, *args, env=None, name="tool"):
        return self.spawn(
            [self.exe("blkkin-pipeline-bench"), *args], name, env=env, stdout=subprocess.PIPE
        )

    def stop(self, p, sig=signal.SIGTERM, timeout=30):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cleanup(self):
        for p in self.children:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.children = []


def ring_env(ring_dir, ring_size):
    env = dict(os.environ, BLKIN_SHM_DIR=ring_dir)
    env.pop("BLKIN_RATE", None)
    env.pop("RATE", None)
    if ring_size:
        env["BLKIN_RING_SIZE"] = ring_size
    return env


def read_json(p):
    out = p.stdout.readline()
    return json.loads(out)


def pow2_size(nbytes):
    n = 64 << 10
    while n < nbytes:
        n *= 2
    return n


def fmt_size(n):
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def loss_check(gens, verify, total):
    written = sum(g["written"] for g in gens)
    lost = sum(g["lost"] for g in gens)
    return {
        "written": written,
        "writer_lost": lost,
        "persisted": verify["records"],
        "position_breaks": verify["position_breaks"],
        "relay_lost_gap": verify["relay_lost_gap"],
        "forwarded_lost": verify["meta_writer_lost"] + verify["meta_reader_torn"]
        + verify["meta_reader_corrupt"] + verify["meta_reader_gap"],
        "zero_loss": written == total and lost == 0 and verify["records"] == total
        and verify["position_breaks"] == 0 and verify["relay_lost_gap"] == 0
        and verify["meta_writer_lost"] == 0 and verify["meta_reader_torn"] == 0
        and verify["meta_reader_corrupt"] == 0 and verify["meta_reader_gap"] == 0,
    }


def dirs(b, name):
    ring = tempfile.mkdtemp(prefix=f"blkkin-bench-{name}-", dir="/dev/shm")
    data = tempfile.mkdtemp(prefix=f"blkkin-bench-{name}-", dir=b.data_root)
    os.chmod(ring, 0o700)
    return ring, data


def finish(b, relay, consumer, data, ring):
    b.stop(consumer)
    b.stop(relay)
    v = b.tool("verify", "--data-dir", data)
    b.cleanup()
    shutil.rmtree(ring, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    return v


def throughput(b, records, procs):
    """Prefilled drain: rings filled first, then consumer started."""
    ring, data = dirs(b, "drain")
    per = records // procs
    total = per * procs
    size = fmt_size(pow2_size(int(per * RECORD_BYTES * 1.25)))
    env = ring_env(ring, size)
    relay, addr = b.relay(data)
    log(f"throughput: {procs} generators × {per} records into {size} rings")
    gens_p = [b.tool_bg("gen", "--records", str(per), env=env, name=f"gen{i}") for i in range(procs)]
    gens = [read_json(p) for p in gens_p]
    for p in gens_p:
        p.wait()
    gen_rate = total / ((max(g["end_unix_ns"] for g in gens) - min(g["start_unix_ns"] for g in gens)) / 1e9)
    w = Window({"relay": relay})
    w.start()
    consumer = b.consumer(ring, addr)
    w.procs["consumer"] = consumer
    w.cpu0["consumer"] = 0.0  # counted from its start
    watch = b.tool("watch", "--relay", addr, "--expect", str(total), "--interval-ms", "5")
    m = w.stop(watch["done_unix_ns"])
    v = finish(b, relay, consumer, data, ring)
    secs = m["seconds"]
    return {
        "records": total, "generators": procs, "ring_size": size, "generator_rate": gen_rate,
        "reached": watch["reached"], "streams": watch["streams"],
        "seconds": secs, "records_per_s": total / secs,
        "mb_per_s": total * RECORD_BYTES / secs / 1e6,
        "disk_mb_per_s": v["disk_bytes"] / secs / 1e6,
        "window": m, "loss": loss_check(gens, v, total), "verify": v,
    }


def concurrent(b, rate, seconds, procs, ring_size):
    """Generators paced at `rate` in total while the consumer drains."""
    ring, data = dirs(b, "conc")
    per = int(rate * seconds / procs)
    total = per * procs
    env = ring_env(ring, ring_size)
    relay, addr = b.relay(data)
    consumer = b.consumer(ring, addr)
    time.sleep(0.5)
    log(f"concurrent: {procs} generators × {rate / procs:.0f} records/s for {seconds} s, {ring_size} rings")
    w = Window({"relay": relay, "consumer": consumer}).start()
    gens_p = [b.tool_bg("gen", "--records", str(per), "--rate", str(rate / procs), env=env, name=f"gen{i}")
              for i in range(procs)]
    gens = [read_json(p) for p in gens_p]
    for p in gens_p:
        p.wait()
    # Wait for what was written (records the rings dropped are counted as loss below).
    written = sum(g["written"] for g in gens)
    watch = b.tool("watch", "--relay", addr, "--expect", str(written), "--interval-ms", "5",
                   "--timeout", str(seconds * 4 + 30))
    m = w.stop(watch["done_unix_ns"])
    v = finish(b, relay, consumer, data, ring)
    start = min(g["start_unix_ns"] for g in gens)
    gen_end = max(g["end_unix_ns"] for g in gens)
    done = watch["done_unix_ns"]
    return {
        "records": total, "generators": procs, "ring_size": ring_size, "offered_rate": rate,
        "generated_rate": total / ((gen_end - start) / 1e9),
        "delivered_rate": v["records"] / ((done - start) / 1e9),
        "mb_per_s": v["records"] * RECORD_BYTES / ((done - start) / 1e9) / 1e6,
        "lag_after_last_record_s": (done - gen_end) / 1e9,
        "reached": watch["reached"],
        "window": m, "loss": loss_check(gens, v, total), "verify": v,
    }


def latency(b, rate, seconds, warmup):
    ring, data = dirs(b, "lat")
    env = ring_env(ring, None)
    relay, addr = b.relay(data)
    consumer = b.consumer(ring, addr)
    time.sleep(0.3)
    lead = 1.5  # let the stream exist (and its clock calibration settle) before subscribing
    total = int(rate * (lead + warmup + seconds + 1.5))
    log(f"latency: 1 generator at {rate:.0f} records/s, reader for {warmup}+{seconds} s")
    gen = b.tool_bg("gen", "--records", str(total), "--rate", str(rate), env=env, name="gen")
    time.sleep(lead)
    w = Window({"relay": relay, "consumer": consumer}).start()
    lat = b.tool("latency", "--relay", addr, "--warmup", str(warmup), "--seconds", str(seconds))
    m = w.stop()
    g = read_json(gen)
    gen.wait()
    watch = b.tool("watch", "--relay", addr, "--expect", str(total), "--timeout", "30")
    v = finish(b, relay, consumer, data, ring)
    return {"rate": rate, "generated_rate": g["rate"], "latency": lat, "window": m,
            "reached": watch["reached"], "loss": loss_check([g], v, total)}


def idle(b, procs, seconds, per_proc=10):
    ring, data = dirs(b, "idle")
    env = ring_env(ring, None)
    relay, addr = b.relay(data)
    consumer = b.consumer(ring, addr)
    log(f"idle: {procs} traced processes, {per_proc} records each, then asleep; measuring {seconds} s")
    gens = [b.tool_bg("gen", "--records", str(per_proc), "--hold", env=env, name=f"idle{i}")
            for i in range(procs)]
    for p in gens:
        read_json(p)
    watch = b.tool("watch", "--relay", addr, "--expect", str(procs * per_proc), "--timeout", "60")
    rings = len([f for f in os.listdir(ring) if f.endswith(".ring")])
    time.sleep(3)  # the consumer's poll interval backs off to its idle maximum
    w = Window({"relay": relay, "consumer": consumer}).start()
    time.sleep(seconds)
    m = w.stop()
    alive = sum(1 for p in gens if p.poll() is None)
    for p in gens:
        b.stop(p, signal.SIGKILL)
    finish(b, relay, consumer, data, ring)
    return {"processes": procs, "alive_at_end": alive, "rings": rings, "streams": watch["streams"],
            "reached": watch["reached"], "window": m}


def disk_write_mb_per_s(root, mib=1024):
    """Sequential write bandwidth of the file system under `root` (1 MiB writes, one fdatasync
    at the end, like `dd conv=fdatasync`): what caps a relay writing there."""
    path = os.path.join(root, f"blkkin-bench-disk-{os.getpid()}")
    block = os.urandom(1 << 20)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(mib):
            os.write(fd, block)
        os.fdatasync(fd)
    finally:
        os.close(fd)
        os.unlink(path)
    return mib * (1 << 20) / (time.perf_counter() - t0) / 1e6


def tls(b, records, procs, rounds, rate, seconds, warmup, tmpfs_rounds):
    """Drain and live latency with plain TCP and with mutual TLS, alternately; the drain also
    with the relay's data on tmpfs, where the disk does not cap both."""
    certs = os.path.join(b.work, "pki")
    shutil.rmtree(certs, ignore_errors=True)
    b.tool("certs", "--out", certs)
    disk_root = b.data_root
    runs = {m: {"throughput": [], "throughput_tmpfs": [], "latency": []} for m in ("plain", "tls")}
    runs["disk_write_mb_per_s"] = disk_write_mb_per_s(disk_root)
    log(f"tls: the disk under {disk_root} writes {runs['disk_write_mb_per_s']:.0f} MB/s")
    order = ["plain", "tls"]
    try:
        for where, n in (("throughput", rounds), ("throughput_tmpfs", tmpfs_rounds)):
            b.data_root = "/dev/shm" if where == "throughput_tmpfs" else disk_root
            for i in range(n):
                for mode in order if i % 2 == 0 else order[::-1]:
                    b.tls = certs if mode == "tls" else None
                    log(f"tls: drain into {b.data_root}, {mode}, round {i + 1}/{n}")
                    runs[mode][where].append(throughput(b, records, procs))
        b.data_root = disk_root
        for mode in order:
            b.tls = certs if mode == "tls" else None
            log(f"tls: live latency, {mode}")
            runs[mode]["latency"].append(latency(b, rate, seconds, warmup))
    finally:
        b.tls = None
        b.data_root = disk_root
    return runs


def machine():
    def sh(c):
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
    fs = sh("df -T /var/tmp | tail -1 | awk '{print $2}'")
    return f"{os.cpu_count()} vCPU {model}; relay data on {fs} (/var/tmp), rings on tmpfs (/dev/shm)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory holding the release binaries")
    ap.add_argument("--out", required=True, help="JSON results file to write")
    ap.add_argument("--work", default=None, help="directory for daemon logs")
    ap.add_argument("--data-root", default="/var/tmp", help="where relay data directories are created")
    ap.add_argument("--quick", action="store_true", help="short runs (development)")
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["throughput", "concurrent", "latency", "idle", "tls"])
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="blkkin-pipeline-")
    os.makedirs(work, exist_ok=True)
    b = Bench(a.bin, work)
    b.data_root = a.data_root
    q = a.quick
    params = {
        "throughput": {"records": 2_000_000 if q else 20_000_000, "procs": 4},
        "concurrent": {"rate": 3_100_000, "seconds": 2 if q else 10, "procs": 4, "ring_size": "16M"},
        "latency": {"rate": 100_000, "seconds": 3 if q else 15, "warmup": 1},
        "idle": {"procs": 100, "seconds": 5 if q else 30},
        "tls": {"records": 2_000_000 if q else 20_000_000, "procs": 4, "rounds": 1 if q else 3,
                "tmpfs_rounds": 1 if q else 2, "rate": 100_000, "seconds": 3 if q else 15, "warmup": 1},
    }
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine(), "quick": q, "params": params, "results": {}}
    fns = {"throughput": throughput, "concurrent": concurrent, "latency": latency, "idle": idle, "tls": tls}
    try:
        for name, fn in fns.items():
            if a.only and name not in a.only:
                continue
            res["results"][name] = fn(b, **params[name])
            log(name, json.dumps(res["results"][name], default=str)[:600])
    finally:
        b.cleanup()
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"wrote {a.out}; daemon logs in {work}")


if __name__ == "__main__":
    main()
