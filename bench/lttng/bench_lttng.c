/*
 * Baseline benchmark of the original BlkKin record path: one LTTng-UST
 * tracepoint call per annotation, with BlkKin's exact zipkin:* event
 * layout (see zipkin_tp.h).
 *
 * Usage:
 *   bench_lttng --mode=active  [-n N] [-r ROUNDS] [-w WARMUP] [-d DRAIN_MS]
 *                              [-p PRIME_PER_CPU] [-v]
 *   bench_lttng --mode=dormant [-n N] [-r ROUNDS] [-w WARMUP]
 *
 * active  : expects an LTTng session with zipkin:* enabled; waits until the
 *           tracepoints are really enabled in this process (fails otherwise)
 *           and runs lttng_timestamp, lttng_keyval_string, lttng_child_span,
 *           lttng_timestamp_2threads.
 * dormant : expects NO session; runs lttng_dormant_timestamp (the cost of a
 *           disabled tracepoint: one load + branch).
 *
 * Each bench: WARMUP calls, then ROUNDS rounds of N calls, each round timed
 * with clock_gettime(CLOCK_MONOTONIC); reports the median ns per call as
 * one JSON line on stdout. Everything else goes to stderr. The rounds of
 * the three single-threaded benches are interleaved (so slow phases of a
 * noisy VM hit them alike); the 2-thread bench runs after them and reports
 * the median over all per-thread, per-round ns/op samples.
 * Between rounds the process spins DRAIN_MS (untimed) so the consumer
 * daemon can drain the ring buffers, which keeps discarded events (and so
 * the cheaper "buffer full" path) out of the measurement as far as possible.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zipkin_tp.h"

/* Realistic values, as a Ceph OSD would trace an op. */
static const char *const TRACE_NAME = "osd_op";
static const char *const SERVICE = "osd.0";
static const int PORT = 6800;
static const char *const IP = "10.0.0.1";
static const char *const EVENT = "sr";
static const char *const KEY = "object";
static const char *const VAL = "rbd_data.1234.0000000000000001";

#define NIDS 1024 /* power of two */
static long ids[NIDS];

static long n_calls = 200000;
static int n_rounds = 11;
static long n_warmup = 200000;
static int drain_ms = 30;
static int verbose;
static long n_prime = 600000; /* events per CPU before measuring */
static unsigned long long total_calls; /* tracepoint calls made (all benches) */

static void fill_ids(void)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL ^ (uint64_t)time(NULL);
	for (int i = 0; i < NIDS; i++) {
		/* xorshift64*: random-ish 63-bit positive ids like random_big() */
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		ids[i] = (long)((x * 2685821657736338717ULL) >> 1);
		if (ids[i] == 0)
			ids[i] = 1;
	}
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(int ms)
{
	if (ms <= 0)
		return;
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/*
 * Pause between rounds by spinning, not sleeping: on the (virtualised)
 * test machine a vCPU that idles for a few ms comes back markedly slower
 * (+40-50 % on a pure ALU loop, for seconds at a time), which made the
 * per-round numbers bimodal. The other core stays free for lttng-consumerd.
 */
static void spin_ms(int ms)
{
	if (ms <= 0)
		return;
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ULL;
	while (now_ns() < end)
		cpu_relax();
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return (n & 1) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- the measured operations ------------------------------------------ */

/* (a) one timestamp annotation, as blkin_record() does for ANNOT_TIMESTAMP */
static void loop_timestamp(long n, long base)
{
	for (long i = 0; i < n; i++) {
		long k = base + i;
		tracepoint(zipkin, timestamp, TRACE_NAME, SERVICE, PORT, IP,
			   ids[k & (NIDS - 1)], ids[(k + 1) & (NIDS - 1)],
			   ids[(k + 2) & (NIDS - 1)], EVENT);
	}
}

/* (b) one string key/value annotation (ANNOT_STRING) */
static void loop_keyval_string(long n, long base)
{
	for (long i = 0; i < n; i++) {
		long k = base + i;
		tracepoint(zipkin, keyval_string, TRACE_NAME, SERVICE, PORT, IP,
			   ids[k & (NIDS - 1)], ids[(k + 1) & (NIDS - 1)],
			   ids[(k + 2) & (NIDS - 1)], KEY, VAL);
	}
}

/* (c) a child span: new span id under a parent, "cs" + "cr" timestamps */
static void loop_child_span(long n, long base)
{
	for (long i = 0; i < n; i++) {
		long k = base + i;
		long trace = ids[k & (NIDS - 1)];
		long parent = ids[(k + 1) & (NIDS - 1)];
		long span = ids[(k + 2) & (NIDS - 1)];
		tracepoint(zipkin, timestamp, TRACE_NAME, SERVICE, PORT, IP,
			   trace, span, parent, "cs");
		tracepoint(zipkin, timestamp, TRACE_NAME, SERVICE, PORT, IP,
			   trace, span, parent, "cr");
	}
}

typedef void (*loop_fn)(long n, long base);

struct bench {
	const char *name;
	loop_fn fn;
	int events_per_call;
	double *ns; /* per-round ns per call */
};

static void report(const char *name, double *ns, int n, const char *what)
{
	double mn = ns[0], mx = ns[0];
	for (int i = 1; i < n; i++) {
		if (ns[i] < mn) mn = ns[i];
		if (ns[i] > mx) mx = ns[i];
	}
	double med = median(ns, n);
	fprintf(stderr, "bench_lttng: %-26s median %8.1f ns/op%s (min %.1f, max %.1f, %d samples x %ld calls)\n",
		name, med, what, mn, mx, n, n_calls);
	printf("{\"bench\":\"%s\",\"median_ns\":%.1f}\n", name, med);
	fflush(stdout);
}

/*
 * Runs the given single-threaded benches with their rounds interleaved
 * (round r of bench 0, of bench 1, ..., then round r+1), so that slow
 * phases of the machine (VM noise) hit all of them alike.
 */
static void run_benches(struct bench *b, int nb)
{
	for (int i = 0; i < nb; i++) {
		b[i].ns = calloc((size_t)n_rounds, sizeof(double));
		if (!b[i].ns) {
			perror("calloc");
			exit(1);
		}
		b[i].fn(n_warmup, 0);
		total_calls += (unsigned long long)n_warmup * b[i].events_per_call;
		spin_ms(drain_ms);
	}
	for (int r = 0; r < n_rounds; r++) {
		for (int i = 0; i < nb; i++) {
			uint64_t t0 = now_ns();
			b[i].fn(n_calls, (long)r * 7);
			uint64_t t1 = now_ns();
			b[i].ns[r] = (double)(t1 - t0) / (double)n_calls;
			total_calls += (unsigned long long)n_calls * b[i].events_per_call;
			spin_ms(drain_ms);
		}
	}
	for (int i = 0; i < nb; i++) {
		if (verbose) {
			fprintf(stderr, "bench_lttng: %s rounds:", b[i].name);
			for (int r = 0; r < n_rounds; r++)
				fprintf(stderr, " %.1f", b[i].ns[r]);
			fprintf(stderr, "\n");
		}
		report(b[i].name, b[i].ns, n_rounds, "");
		free(b[i].ns);
	}
}

/* (e) two threads calling the timestamp tracepoint concurrently */
#define NTHREADS 2
static double *thread_ns; /* [NTHREADS * n_rounds] */
static atomic_int bar_count, bar_gen;

/* Spinning barrier for the worker threads (no futex sleep, see spin_ms). */
static void spin_barrier(void)
{
	int gen = atomic_load(&bar_gen);
	if (atomic_fetch_add(&bar_count, 1) == NTHREADS - 1) {
		atomic_store(&bar_count, 0);
		atomic_fetch_add(&bar_gen, 1);
	} else {
		while (atomic_load(&bar_gen) == gen)
			cpu_relax();
	}
}

static void *thread_main(void *arg)
{
	long t = (long)arg;
	loop_timestamp(n_warmup, t * 131);
	for (int r = 0; r < n_rounds; r++) {
		/* thread 0 spins the drain pause (after the warmup, then
		 * between rounds) while thread 1 waits at the barrier */
		if (t == 0)
			spin_ms(drain_ms);
		spin_barrier();
		uint64_t t0 = now_ns();
		loop_timestamp(n_calls, t * 131 + r);
		uint64_t t1 = now_ns();
		thread_ns[t * n_rounds + r] = (double)(t1 - t0) / (double)n_calls;
	}
	return NULL;
}

static void run_bench_threads(const char *name)
{
	pthread_t th[NTHREADS];
	int n = NTHREADS * n_rounds;
	thread_ns = calloc((size_t)n, sizeof(double));
	if (!thread_ns) {
		perror("calloc");
		exit(1);
	}
	atomic_store(&bar_count, 0);
	atomic_store(&bar_gen, 0);
	for (long t = 0; t < NTHREADS; t++) {
		if (pthread_create(&th[t], NULL, thread_main, (void *)t) != 0) {
			perror("pthread_create");
			exit(1);
		}
	}
	for (int t = 0; t < NTHREADS; t++)
		pthread_join(th[t], NULL);
	total_calls += (unsigned long long)NTHREADS * (n_warmup + (long)n_rounds * n_calls);
	if (verbose) {
		for (int t = 0; t < NTHREADS; t++) {
			fprintf(stderr, "bench_lttng: %s thread %d rounds:", name, t);
			for (int r = 0; r < n_rounds; r++)
				fprintf(stderr, " %.1f", thread_ns[t * n_rounds + r]);
			fprintf(stderr, "\n");
		}
	}
	report(name, thread_ns, n, " per thread");
	free(thread_ns);
}

/*
 * Steady state: LTTng's per-CPU ring buffers live in shared memory whose
 * pages are faulted in on first write. A long-running traced daemon has
 * long since touched them, so before measuring, write n_prime events from
 * each CPU we may run on (enough to wrap a 8 x 4 MiB buffer of ~65-byte
 * events), then restore the original affinity.
 */
static void prime_buffers(void)
{
	cpu_set_t orig, one;
	if (n_prime <= 0)
		return;
	if (sched_getaffinity(0, sizeof(orig), &orig) != 0) {
		perror("sched_getaffinity");
		return;
	}
	int ncpu = 0;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &orig))
			continue;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		if (sched_setaffinity(0, sizeof(one), &one) != 0)
			continue;
		loop_timestamp(n_prime, cpu);
		total_calls += (unsigned long long)n_prime;
		ncpu++;
		spin_ms(drain_ms * 3);
	}
	if (sched_setaffinity(0, sizeof(orig), &orig) != 0)
		perror("sched_setaffinity (restore)");
	fprintf(stderr, "bench_lttng: primed ring buffers with %ld events on each of %d CPUs\n", n_prime, ncpu);
}

/* Tracepoints get enabled asynchronously once the provider registers with
 * the session daemon; wait (bounded) until all measured ones are live. */
static int wait_enabled(int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 10) {
		if (tracepoint_enabled(zipkin, timestamp) &&
		    tracepoint_enabled(zipkin, keyval_string) &&
		    tracepoint_enabled(zipkin, keyval_integer))
			return 1;
		sleep_ms(10);
	}
	return 0;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s --mode=active|dormant [-n CALLS_PER_ROUND] [-r ROUNDS] [-w WARMUP_CALLS] [-d DRAIN_MS] [-p PRIME_PER_CPU] [-v]\n",
		argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *mode = NULL;
	static const struct option opts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "calls", required_argument, NULL, 'n' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "drain-ms", required_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "prime", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "m:n:r:w:d:vp:", opts, NULL)) != -1) {
		switch (c) {
		case 'm': mode = optarg; break;
		case 'n': n_calls = atol(optarg); break;
		case 'r': n_rounds = atoi(optarg); break;
		case 'w': n_warmup = atol(optarg); break;
		case 'd': drain_ms = atoi(optarg); break;
		case 'v': verbose = 1; break;
		case 'p': n_prime = atol(optarg); break;
		default: usage(argv[0]);
		}
	}
	if (!mode || n_calls <= 0 || n_rounds <= 0 || n_warmup < 0)
		usage(argv[0]);
	fill_ids();
	/* Bring the vCPU out of its slow phase before measuring (same warm-up
	 * as bench/c/bench_blkin.c and the Rust harness). */
	spin_ms(1500);

	if (strcmp(mode, "dormant") == 0) {
		if (tracepoint_enabled(zipkin, timestamp))
			fprintf(stderr, "bench_lttng: WARNING: zipkin:timestamp is ENABLED in dormant mode "
					"(another session traces zipkin:*?) - dormant number is not a disabled-path cost\n");
		drain_ms = 0;
		struct bench d[] = { { "lttng_dormant_timestamp", loop_timestamp, 1, NULL } };
		run_benches(d, 1);
		/* calls made while disabled record nothing */
		fprintf(stderr, "bench_lttng: TOTAL_EVENTS_ATTEMPTED=0\n");
		return 0;
	}
	if (strcmp(mode, "active") != 0)
		usage(argv[0]);

	if (!wait_enabled(10000)) {
		fprintf(stderr, "bench_lttng: ERROR: zipkin:* tracepoints are not enabled in this process after 10 s; "
				"is an LTTng session with 'zipkin:*' enabled and started, and can this process reach lttng-sessiond?\n");
		return 1;
	}
	fprintf(stderr, "bench_lttng: zipkin:* tracepoints enabled; N=%ld rounds=%d warmup=%ld drain=%dms\n",
		n_calls, n_rounds, n_warmup, drain_ms);

	prime_buffers();

	/* one keyval_integer so every event type of the provider appears in the trace */
	tracepoint(zipkin, keyval_integer, TRACE_NAME, SERVICE, PORT, IP,
		   ids[0], ids[1], ids[2], "length", (int64_t)4096);
	total_calls += 1;

	struct bench b[] = {
		{ "lttng_timestamp", loop_timestamp, 1, NULL },
		{ "lttng_keyval_string", loop_keyval_string, 1, NULL },
		{ "lttng_child_span", loop_child_span, 2, NULL },
	};
	run_benches(b, 3);
	run_bench_threads("lttng_timestamp_2threads");

	fprintf(stderr, "bench_lttng: TOTAL_EVENTS_ATTEMPTED=%llu\n", total_calls);
	return 0;
}
