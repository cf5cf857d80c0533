/*
 * Many writers at once: PROCS processes of THREADS threads each, every thread
 * recording RECORDS key/integer annotations ("seq" = 0, 1, ...) into a trace
 * of its own, as fast as it can. Built against include/zipkin_c.h and linked
 * with -lblkin by tests/stress.rs, which drains the rings concurrently.
 *
 * usage: stress PROCS THREADS RECORDS [KILL]
 *
 * The parent only forks and waits. Each child prints one line per thread,
 * "<pid> <span id, 16 hex digits> <attempted> <dropped>", where dropped
 * counts the blkin_record calls that did not return 0, and exits 0.
 *
 * Environment: STRESS_PIN_CPU=N pins every writer thread to CPU N (they
 * then preempt one another in the middle of reservations); STRESS_SIGNALS=1
 * adds a thread that interrupts the writers with SIGUSR1 as fast as it can,
 * and each writer's signal handler records into a second trace of that
 * thread ("seq" = 0, 1, ... in handler order), printed as a second line
 * "<pid> <span id> <handled> <dropped>" after the thread's own.
 *
 * With KILL (a number K) the children print their thread lines before
 * writing (attempted = dropped = -1) and, once every thread has recorded K
 * annotations, thread 0 sends SIGKILL to its own process while the others
 * keep writing: kill -9 in the middle of a burst. The parent then exits 0
 * whatever happened to its children. After its children are gone the parent
 * prints "child <pid> exit <status>" or "child <pid> signal <signal>".
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zipkin_c.h>

static struct blkin_endpoint ep;

struct writer {
	struct blkin_trace trace;
	int64_t dropped;
	int index;
	/* STRESS_SIGNALS: what the signal handler records on this thread */
	struct blkin_trace sig_trace;
	volatile int64_t sig_handled, sig_dropped;
};

static int pin_cpu = -1;	 /* STRESS_PIN_CPU */
static int with_signals;	 /* STRESS_SIGNALS */
static atomic_int writers_done;
static __thread struct writer *self; /* for the signal handler */

static void on_sigusr1(int sig)
{
	(void)sig;
	struct writer *w = self;
	if (!w)
		return;
	struct blkin_annotation a;
	blkin_init_integer_annotation(&a, "seq", (int64_t)w->sig_handled, &ep);
	if (blkin_record(&w->sig_trace, &a) != 0)
		w->sig_dropped++;
	w->sig_handled++;
}

static int nthreads;
static long records;
static long kill_after = -1; /* -1: no KILL argument */
static pthread_barrier_t traces_ready, go;
static atomic_int reached_kill_point;

static void die(const char *what, int rc)
{
	fprintf(stderr, "stress: %s failed: %d\n", what, rc);
	exit(2);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	int rc = blkin_init_new_trace_forced(&w->trace, "stress", &ep);
	if (rc != 0)
		die("blkin_init_new_trace_forced", rc);
	rc = blkin_init_new_trace_forced(&w->sig_trace, "stress-signal", &ep);
	if (rc != 0)
		die("blkin_init_new_trace_forced", rc);
	if (pin_cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(pin_cpu, &set);
		rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
		if (rc != 0)
			die("pthread_setaffinity_np", rc);
	}
	self = w;
	pthread_barrier_wait(&traces_ready);
	pthread_barrier_wait(&go);
	for (long i = 0; i < records; i++) {
		struct blkin_annotation a;
		rc = blkin_init_integer_annotation(&a, "seq", (int64_t)i, &ep);
		if (rc != 0)
			die("blkin_init_integer_annotation", rc);
		if (blkin_record(&w->trace, &a) != 0)
			w->dropped++;
		if (kill_after < 0)
			continue;
		if (i + 1 == kill_after)
			atomic_fetch_add(&reached_kill_point, 1);
		if (w->index == 0 && i + 1 >= kill_after &&
		    atomic_load_explicit(&reached_kill_point, memory_order_relaxed) == nthreads)
			kill(getpid(), SIGKILL); /* the others are mid-burst */
	}
	atomic_fetch_add(&writers_done, 1);
	return NULL;
}

/* STRESS_SIGNALS: interrupt the writers, round robin, until they are done. */
static void *signaller_main(void *arg)
{
	pthread_t *tids = arg;
	for (unsigned long n = 0; atomic_load(&writers_done) < nthreads; n++)
		pthread_kill(tids[n % (unsigned long)nthreads], SIGUSR1);
	return NULL;
}

static void print_span(const struct blkin_trace *t, int64_t attempted, int64_t dropped)
{
	printf("%d %016" PRIx64 " %" PRId64 " %" PRId64 "\n", (int)getpid(),
	       (uint64_t)t->info.span_id, attempted, dropped);
}

static void print_line(const struct writer *w, int64_t attempted, int64_t dropped)
{
	print_span(&w->trace, attempted, dropped);
}

static int child_main(void)
{
	/* Create this process's rings before the threads race to record. */
	int rc = blkin_init();
	if (rc != 0)
		die("blkin_init", rc);
	rc = blkin_init_endpoint(&ep, "127.0.0.1", 7000, "stress");
	if (rc != 0)
		die("blkin_init_endpoint", rc);
	struct writer *ws = calloc((size_t)nthreads, sizeof(*ws));
	pthread_t *tids = calloc((size_t)nthreads, sizeof(*tids));
	if (!ws || !tids)
		die("calloc", -1);
	pthread_barrier_init(&traces_ready, NULL, (unsigned)nthreads + 1);
	pthread_barrier_init(&go, NULL, (unsigned)nthreads + 1);
	for (int t = 0; t < nthreads; t++) {
		ws[t].index = t;
		rc = pthread_create(&tids[t], NULL, writer_main, &ws[t]);
		if (rc != 0)
			die("pthread_create", rc);
	}
	pthread_barrier_wait(&traces_ready);
	if (kill_after >= 0) {
		/* Killed before the end: tell the span ids now. */
		for (int t = 0; t < nthreads; t++)
			print_line(&ws[t], -1, -1);
		fflush(stdout);
	}
	if (with_signals) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_sigusr1;
		sa.sa_flags = SA_RESTART;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGUSR1, &sa, NULL) != 0)
			die("sigaction", -1);
	}
	pthread_t signaller;
	if (with_signals) {
		rc = pthread_create(&signaller, NULL, signaller_main, tids);
		if (rc != 0)
			die("pthread_create", rc);
	}
	pthread_barrier_wait(&go);
	for (int t = 0; t < nthreads; t++)
		pthread_join(tids[t], NULL);
	if (with_signals)
		pthread_join(signaller, NULL);
	for (int t = 0; t < nthreads; t++) {
		print_line(&ws[t], records, ws[t].dropped);
		if (with_signals)
			print_span(&ws[t].sig_trace, ws[t].sig_handled, ws[t].sig_dropped);
	}
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: stress PROCS THREADS RECORDS [KILL]\n");
		return 2;
	}
	int procs = atoi(argv[1]);
	nthreads = atoi(argv[2]);
	records = atol(argv[3]);
	if (argc == 5)
		kill_after = atol(argv[4]);
	const char *pin = getenv("STRESS_PIN_CPU");
	if (pin && *pin)
		pin_cpu = atoi(pin);
	const char *sig = getenv("STRESS_SIGNALS");
	with_signals = sig && *sig == '1';
	if (procs < 1 || nthreads < 1 || records < 0 || (argc == 5 && kill_after < 1)) {
		fprintf(stderr, "stress: bad arguments\n");
		return 2;
	}
	pid_t *kids = calloc((size_t)procs, sizeof(*kids));
	if (!kids)
		return 2;
	fflush(stdout);
	for (int p = 0; p < procs; p++) {
		kids[p] = fork();
		if (kids[p] < 0) {
			perror("stress: fork");
			return 2;
		}
		if (kids[p] == 0)
			_exit(child_main());
	}
	int ok = 1;
	for (int p = 0; p < procs; p++) {
		int status;
		if (waitpid(kids[p], &status, 0) != kids[p]) {
			perror("stress: waitpid");
			return 2;
		}
		if (WIFEXITED(status)) {
			printf("child %d exit %d\n", (int)kids[p], WEXITSTATUS(status));
			ok &= WEXITSTATUS(status) == 0;
		} else {
			printf("child %d signal %d\n", (int)kids[p],
			       WIFSIGNALED(status) ? WTERMSIG(status) : -1);
			ok = 0;
		}
	}
	fflush(stdout);
	return ok || kill_after >= 0 ? 0 : 1;
}
