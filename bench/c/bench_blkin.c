/*
 * The blkkin record path through the C ABI (zipkin_c.h, -lblkin), measured
 * the same way as bench/lttng/bench_lttng.c measures LTTng-UST, with the same
 * values, so the two are comparable line by line.
 *
 * usage: bench_blkin [-n CALLS_PER_ROUND] [-r ROUNDS]
 *
 * Each bench: a warm-up, then ROUNDS rounds of N calls, each round timed with
 * CLOCK_MONOTONIC; the median ns per call is printed as one JSON line:
 *   {"bench":"blkin_timestamp","median_ns":12.3}
 * Rounds of the single-threaded benches are interleaved so the slow phases
 * of a noisy VM hit them alike. Run with BLKIN_RING_MODE=overwrite (there is
 * no consumer draining the rings; discard mode would measure the cheaper
 * "ring full" path).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zipkin_c.h>

static const char *const TRACE_NAME = "osd_op";
static const char *const SERVICE = "osd.0";
static const int PORT = 6800;
static const char *const IP = "10.0.0.1";
static const char *const EVENT = "sr";
static const char *const KEY = "object";
static const char *const VAL = "rbd_data.1234.0000000000000001";

static long n_calls = 200000;
static int n_rounds = 31;

static struct blkin_endpoint ep;
static struct blkin_trace sampled, unsampled;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* On this kind of VM a vCPU that was idle runs markedly slower for a while
 * (see bench/lttng/README.md): spin before measuring, as every harness here
 * does, so all of them start from the same state. */
static void spin_ms(int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ULL;
	while (now_ns() < end)
		__builtin_ia32_pause();
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

/* (a) one timestamp annotation */
static void loop_timestamp(long n)
{
	for (long i = 0; i < n; i++)
		BLKIN_TIMESTAMP(&sampled, &ep, EVENT);
}

/* (b) one string key/value annotation */
static void loop_keyval_string(long n)
{
	for (long i = 0; i < n; i++)
		BLKIN_KEYVAL_STRING(&sampled, &ep, KEY, VAL);
}

/* a child span through the C ABI: new ids + two timestamp annotations */
static void loop_child_span(long n)
{
	for (long i = 0; i < n; i++) {
		struct blkin_trace child;
		blkin_init_child(&child, &sampled, NULL, "journal");
		BLKIN_TIMESTAMP(&child, NULL, "start");
		BLKIN_TIMESTAMP(&child, NULL, "end");
	}
}

/* (d) the unsampled path: a trace with trace id 0. Eight annotations per
 * loop iteration (the loop's own overhead is of the order of the branch
 * measured); the barrier makes each one reload the trace id. */
#define UNSAMPLED_ONE()                                  \
	do {                                             \
		BLKIN_TIMESTAMP(&unsampled, &ep, EVENT); \
		__asm__ __volatile__("" ::: "memory");   \
	} while (0)
static void loop_unsampled(long n)
{
	for (long i = 0; i < n; i += 8) {
		UNSAMPLED_ONE();
		UNSAMPLED_ONE();
		UNSAMPLED_ONE();
		UNSAMPLED_ONE();
		UNSAMPLED_ONE();
		UNSAMPLED_ONE();
		UNSAMPLED_ONE();
		UNSAMPLED_ONE();
	}
}

typedef void (*loop_fn)(long);

static double time_round(loop_fn f)
{
	uint64_t t0 = now_ns();
	f(n_calls);
	return (double)(now_ns() - t0) / (double)n_calls;
}

struct thread_arg {
	pthread_barrier_t *barrier;
	double ns[256];
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;
	struct blkin_trace t;
	blkin_init_new_trace_forced(&t, TRACE_NAME, &ep);
	for (int r = 0; r < n_rounds; r++) {
		pthread_barrier_wait(a->barrier);
		uint64_t t0 = now_ns();
		for (long i = 0; i < n_calls; i++)
			BLKIN_TIMESTAMP(&t, &ep, EVENT);
		a->ns[r] = (double)(now_ns() - t0) / (double)n_calls;
	}
	return NULL;
}

/* (e) per-thread cost of timestamp annotations from `threads` threads at once */
static double threads_median(int threads)
{
	pthread_barrier_t barrier;
	pthread_t tid[2];
	static struct thread_arg args[2];
	double all[512];
	pthread_barrier_init(&barrier, NULL, (unsigned)threads);
	for (int t = 0; t < threads; t++) {
		args[t].barrier = &barrier;
		pthread_create(&tid[t], NULL, thread_main, &args[t]);
	}
	for (int t = 0; t < threads; t++)
		pthread_join(tid[t], NULL);
	int k = 0;
	for (int t = 0; t < threads; t++)
		for (int r = 0; r < n_rounds; r++)
			all[k++] = args[t].ns[r];
	pthread_barrier_destroy(&barrier);
	return median(all, k);
}

int main(int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "n:r:")) != -1) {
		if (opt == 'n')
			n_calls = atol(optarg);
		else if (opt == 'r')
			n_rounds = atoi(optarg);
		else {
			fprintf(stderr, "usage: %s [-n calls] [-r rounds]\n", argv[0]);
			return 2;
		}
	}
	n_calls = (n_calls + 7) / 8 * 8; /* loop_unsampled runs in steps of 8 */
	if (n_rounds < 1 || n_rounds > 256 || n_calls < 1) {
		fprintf(stderr, "bench_blkin: bad -n/-r\n");
		return 2;
	}
	int rc = blkin_init();
	if (rc != 0) {
		fprintf(stderr, "bench_blkin: blkin_init failed: %s\n", strerror(-rc));
		return 1;
	}
	blkin_init_endpoint(&ep, IP, PORT, SERVICE);
	blkin_init_new_trace_forced(&sampled, TRACE_NAME, &ep);
	unsampled = sampled;
	unsampled.info.trace_id = 0;

	/* Check the path records for real (0 = recorded). */
	struct blkin_annotation a;
	blkin_init_timestamp_annotation(&a, EVENT, &ep);
	if ((rc = blkin_record(&sampled, &a)) != 0) {
		fprintf(stderr, "bench_blkin: blkin_record returned %d\n", rc);
		return 1;
	}

	const char *names[] = { "blkin_timestamp", "blkin_keyval_string", "blkin_child_span", "blkin_unsampled" };
	loop_fn fns[] = { loop_timestamp, loop_keyval_string, loop_child_span, loop_unsampled };
	enum { NB = 4 };
	static double samples[NB][256];
	spin_ms(1500);
	for (int b = 0; b < NB; b++)
		fns[b](n_calls); /* warm-up: page in the rings, train predictors */
	for (int r = 0; r < n_rounds; r++)
		for (int b = 0; b < NB; b++)
			samples[b][r] = time_round(fns[b]);
	for (int b = 0; b < NB; b++)
		printf("{\"bench\":\"%s\",\"median_ns\":%.2f}\n", names[b], median(samples[b], n_rounds));
	printf("{\"bench\":\"blkin_timestamp_1thread\",\"median_ns\":%.2f}\n", threads_median(1));
	printf("{\"bench\":\"blkin_timestamp_2threads\",\"median_ns\":%.2f}\n", threads_median(2));
	return 0;
}
