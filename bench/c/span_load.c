/*
 * Span load for the collector benchmark (bench/collector.py), against the
 * C ABI (include/zipkin_c.h).
 *
 *   span_load closed RATE SECONDS SAMPLE
 *       RATE spans/s for SECONDS: traces of two local spans each (root
 *       "load_op": start, tag bytes, end; child "load_step": start, end),
 *       all force-sampled. Every SAMPLE-th trace prints
 *       "<trace id hex> <unix µs of its last record>" (flushed at once).
 *   span_load keyval RATE SECONDS SAMPLE
 *       As closed, in ztracer's pattern of a key/value at the parent's
 *       endpoint inside a child span: root "load_op" (cs, cr) at
 *       "loadgen"; child "load_step" (sr, ss) at "loadstore", with "seq"
 *       recorded at "loadgen" between them. Three Zipkin v2 spans per
 *       trace (the child's "loadgen" side has no beginning or end).
 *   span_load open RATE SECONDS
 *       RATE spans/s that never close (only "start" and one tag): the
 *       collector holds each until its idle timeout or evicts it.
 *
 * Pacing: the spans due so far are recorded, then the loop sleeps 1 ms.
 * Prints "done <spans>" at the end.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zipkin_c.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t unix_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
	if (argc < 4 || (strcmp(argv[1], "closed") != 0 && strcmp(argv[1], "keyval") != 0 &&
			 strcmp(argv[1], "open") != 0)) {
		fprintf(stderr, "usage: span_load closed|keyval RATE SECONDS SAMPLE | open RATE SECONDS\n");
		return 2;
	}
	int open = strcmp(argv[1], "open") == 0;
	int keyval = strcmp(argv[1], "keyval") == 0;
	double rate = atof(argv[2]), seconds = atof(argv[3]);
	long sample = argc > 4 ? atol(argv[4]) : 0;
	if (rate <= 0 || seconds <= 0 || blkin_init() != 0) {
		fprintf(stderr, "span_load: bad arguments or blkin_init failed\n");
		return 2;
	}
	struct blkin_endpoint ep, store;
	blkin_init_endpoint(&ep, "10.0.0.1", 7000, "loadgen");
	blkin_init_endpoint(&store, "10.0.0.2", 7001, "loadstore");
	uint64_t spans = 0, traces = 0;
	double t0 = now_s();
	for (;;) {
		double elapsed = now_s() - t0;
		if (elapsed >= seconds)
			break;
		uint64_t due = (uint64_t)(elapsed * rate);
		while (spans < due) {
			struct blkin_trace root, child;
			blkin_init_new_trace_forced(&root, "load_op", &ep);
			if (keyval) {
				BLKIN_TIMESTAMP(&root, &ep, "cs");
				blkin_init_child(&child, &root, &store, "load_step");
				BLKIN_TIMESTAMP(&child, &store, "sr");
				BLKIN_KEYVAL_INTEGER(&child, &ep, "seq", (int64_t)traces);
				BLKIN_TIMESTAMP(&child, &store, "ss");
				BLKIN_TIMESTAMP(&root, &ep, "cr");
				spans += 3;
			} else {
				BLKIN_TIMESTAMP(&root, &ep, "start");
				BLKIN_KEYVAL_INTEGER(&root, &ep, "bytes", 4096);
				if (open) {
					spans++;
					continue;
				}
				blkin_init_child(&child, &root, &ep, "load_step");
				BLKIN_TIMESTAMP(&child, &ep, "start");
				BLKIN_TIMESTAMP(&child, &ep, "end");
				BLKIN_TIMESTAMP(&root, &ep, "end");
				spans += 2;
			}
			if (sample > 0 && traces % sample == 0) {
				printf("%016" PRIx64 " %" PRIu64 "\n", (uint64_t)root.info.trace_id, unix_us());
				fflush(stdout);
			}
			traces++;
		}
		usleep(1000);
	}
	printf("done %" PRIu64 "\n", spans);
	return 0;
}
