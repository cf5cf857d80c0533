/*
 * storage_stack.c — the sample workload of `blkkin demo`, written only
 * against the ceph/blkin C API (zipkin_c.h).
 *
 * It imitates a layered block-storage stack as four processes connected by
 * sockets, each passing the packed trace info (24 bytes) with every request,
 * the way an instrumented daemon carries it in its messages:
 *
 *   client ──▶ volume ──▶ mapper ──▶ blocker
 *
 * - client (service "client") starts one root trace per request ("read" or
 *   "write") and records Zipkin's client annotations cs/cr;
 * - volume (service "volume") joins that span on the server side (same span
 *   id, Zipkin v1 style: sr/ss), tags it with the volume and the offset, and
 *   calls the mapper inside a child span "map" (cs/cr);
 * - mapper (service "mapper") joins "map" as its server (sr/ss) and calls the
 *   blocker inside a child span "block_io";
 * - blocker (service "blocker") records its own child span "disk_io" the way
 *   ceph-style code does, with generic "start"/"end" events and key/values.
 *
 * Every 10th request is slow in the blocker (tens of milliseconds) and every
 * 25th fails there with EIO: the failure travels back and each layer tags
 * its span with "error". Every request is traced (forced sampling) unless
 * BLKIN_RATE is set, in which case the usual 1-in-N sampling applies.
 *
 * Built into the `blkkin` binary (entry point blkkin_demo_stack) by the root
 * package's build.rs; with -DBLKKIN_DEMO_STANDALONE it is a program of its
 * own: cc -DBLKKIN_DEMO_STANDALONE storage_stack.c -lblkin.
 *
 * usage: storage_stack [-n REQUESTS] [-s SECONDS] [-r RATE_PER_SECOND]
 * Stops after REQUESTS requests or SECONDS seconds, whichever comes first
 * (0 = no limit on that axis), or on SIGINT/SIGTERM. Prints one line:
 *   requests=N ok=N failed=N slow=N
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zipkin_c.h>

/* What travels down the stack. */
struct request {
	struct blkin_trace_info_packed trace;
	uint32_t seq;
	uint32_t write;
	uint64_t offset;
	uint32_t len;
	uint32_t pad;
};

/* What travels back up. */
struct reply {
	int32_t status; /* 0 or a negative errno */
	uint32_t pad;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static int xfer(int fd, void *buf, size_t len, int sending)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = sending ? write(fd, (char *)buf + done, len - done)
				    : read(fd, (char *)buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stopping)
		;
}

/* A server-side layer: joins the caller's span (sr/ss) under `call_name`
 * (NULL: the request's "read"/"write") and optionally calls the next layer
 * inside a child span (cs/cr). `down` is -1 for the last layer, which does
 * the "disk" work. */
static void layer(const char *service, const char *ip, int16_t port,
		  const char *call_name, int up, int down)
{
	struct blkin_endpoint ep;
	struct request req;
	char text[64];
	const char *call_name_now;

	blkin_init_endpoint(&ep, ip, port, service);
	while (xfer(up, &req, sizeof(req), 0) == 0) {
		struct blkin_trace_info info;
		struct blkin_trace span;
		struct reply rep = { 0, 0 };

		blkin_unpack_trace_info(&req.trace, &info);
		/* Join the caller's span: same ids, our endpoint (the volume
		 * serves the client's "read"/"write" under the same name). */
		if (!call_name)
			call_name_now = req.write ? "write" : "read";
		else
			call_name_now = call_name;
		blkin_set_trace_properties(&span, &info, call_name_now, &ep);
		BLKIN_TIMESTAMP(&span, &ep, SERVER_RECV);

		if (down >= 0) {
			struct blkin_trace child;
			struct request sub = req;
			const char *child_name = strcmp(service, "volume") == 0 ? "map" : "block_io";

			snprintf(text, sizeof(text), "vol-%u", req.seq % 4);
			if (strcmp(service, "volume") == 0) {
				BLKIN_KEYVAL_STRING(&span, &ep, "volume", text);
				BLKIN_KEYVAL_INTEGER(&span, &ep, "offset", (int64_t)req.offset);
			} else {
				BLKIN_KEYVAL_INTEGER(&span, &ep, "extent", (int64_t)(req.offset >> 22));
			}
			blkin_init_child(&child, &span, &ep, child_name);
			BLKIN_TIMESTAMP(&child, &ep, CLIENT_SEND);
			blkin_pack_trace_info(&child.info, &sub.trace);
			if (xfer(down, &sub, sizeof(sub), 1) || xfer(down, &rep, sizeof(rep), 0))
				break;
			BLKIN_TIMESTAMP(&child, &ep, CLIENT_RECV);
			if (rep.status != 0)
				BLKIN_KEYVAL_STRING(&child, &ep, "error", strerror(-rep.status));
		} else {
			/* The last layer: a ceph-style span of its own with generic
			 * start/end events. */
			struct blkin_trace io;

			blkin_init_child(&io, &span, &ep, "disk_io");
			BLKIN_TIMESTAMP(&io, &ep, "start");
			BLKIN_KEYVAL_INTEGER(&io, &ep, "bytes", (int64_t)req.len);
			BLKIN_KEYVAL_STRING(&io, &ep, "op", req.write ? "write" : "read");
			if (req.seq % 10 == 9) {
				BLKIN_TIMESTAMP(&io, &ep, "slow_path");
				sleep_us(20000 + (long)(req.seq % 3) * 10000);
			} else {
				sleep_us(200 + (long)(req.seq % 7) * 100);
			}
			if (req.seq % 25 == 24) {
				rep.status = -EIO;
				BLKIN_KEYVAL_STRING(&io, &ep, "error", strerror(EIO));
			}
			BLKIN_TIMESTAMP(&io, &ep, "end");
		}
		if (rep.status != 0)
			BLKIN_KEYVAL_STRING(&span, &ep, "error", strerror(-rep.status));
		BLKIN_TIMESTAMP(&span, &ep, SERVER_SEND);
		if (xfer(up, &rep, sizeof(rep), 1))
			break;
	}
	close(up);
	if (down >= 0)
		close(down);
}

static int client(int down, long requests, long seconds, long rate)
{
	struct blkin_endpoint ep;
	long ok = 0, failed = 0, slow = 0, n = 0;
	uint64_t start = now_ms();
	long gap_us = rate > 0 ? 1000000 / rate : 0;

	blkin_init_endpoint(&ep, "10.0.0.1", 0, "client");
	for (n = 0; !stopping; n++) {
		struct blkin_trace t;
		struct request req;
		struct reply rep;
		const char *op;
		int rc;

		if (requests > 0 && n >= requests)
			break;
		if (seconds > 0 && now_ms() - start >= (uint64_t)seconds * 1000)
			break;
		op = n % 3 == 0 ? "write" : "read";
		if (getenv("BLKIN_RATE") || getenv("RATE"))
			rc = blkin_init_new_trace(&t, op, &ep);
		else
			rc = blkin_init_new_trace_forced(&t, op, &ep);
		if (rc != 0) {
			fprintf(stderr, "storage_stack: blkin_init_new_trace: %s\n", strerror(-rc));
			return 1;
		}
		memset(&req, 0, sizeof(req));
		req.seq = (uint32_t)n;
		req.write = n % 3 == 0;
		req.offset = (uint64_t)(n * 7919 % 1024) << 22;
		req.len = 4096u << (n % 4);
		BLKIN_TIMESTAMP(&t, &ep, CLIENT_SEND);
		BLKIN_KEYVAL_INTEGER(&t, &ep, "request", (int64_t)n);
		blkin_pack_trace_info(&t.info, &req.trace);
		if (xfer(down, &req, sizeof(req), 1) || xfer(down, &rep, sizeof(rep), 0)) {
			fprintf(stderr, "storage_stack: the volume layer went away\n");
			return 1;
		}
		if (rep.status != 0) {
			BLKIN_KEYVAL_STRING(&t, &ep, "error", strerror(-rep.status));
			failed++;
		} else {
			ok++;
		}
		if (n % 10 == 9)
			slow++;
		BLKIN_TIMESTAMP(&t, &ep, CLIENT_RECV);
		if (gap_us > 0)
			sleep_us(gap_us);
	}
	printf("requests=%ld ok=%ld failed=%ld slow=%ld\n", n, ok, failed, slow);
	fflush(stdout);
	return 0;
}

/* Entry point (the `blkkin demo` workload); argv as for main. */
int blkkin_demo_stack(int argc, char **argv)
{
	static const struct {
		const char *service, *ip, *call;
		int16_t port;
	} layers[] = {
		{ "volume", "10.0.0.2", NULL, 3260 },
		{ "mapper", "10.0.0.3", "map", 6789 },
		{ "blocker", "10.0.0.4", "block_io", 6800 },
	};
	long requests = 200, seconds = 0, rate = 0;
	int fds[3][2], opt, status, rc, failed = 0;
	pid_t pids[3];
	struct sigaction sa;

	optind = 1;
	while ((opt = getopt(argc, argv, "n:s:r:h")) != -1) {
		switch (opt) {
		case 'n': requests = atol(optarg); break;
		case 's': seconds = atol(optarg); break;
		case 'r': rate = atol(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n REQUESTS] [-s SECONDS] [-r RATE_PER_SECOND]\n",
				argv[0]);
			return opt == 'h' ? 0 : 2;
		}
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	for (int i = 0; i < 3; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds[i]) != 0) {
			perror("storage_stack: socketpair");
			return 1;
		}
	}
	/* fds[i][0]: the caller's end, fds[i][1]: layer i's end. */
	for (int i = 0; i < 3; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("storage_stack: fork");
			return 1;
		}
		if (pids[i] == 0) {
			for (int j = 0; j < 3; j++) {
				if (j != i)
					close(fds[j][1]);
				if (j != i + 1)
					close(fds[j][0]);
			}
			layer(layers[i].service, layers[i].ip, layers[i].port, layers[i].call,
			      fds[i][1], i + 1 < 3 ? fds[i + 1][0] : -1);
			_exit(0);
		}
	}
	for (int j = 0; j < 3; j++) {
		close(fds[j][1]);
		if (j != 0)
			close(fds[j][0]);
	}
	rc = client(fds[0][0], requests, seconds, rate);
	close(fds[0][0]); /* the layers see EOF one after the other */
	for (int i = 0; i < 3; i++) {
		if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			failed = 1;
	}
	return rc != 0 ? rc : failed;
}

#ifdef BLKKIN_DEMO_STANDALONE
int main(int argc, char **argv)
{
	return blkkin_demo_stack(argc, argv);
}
#endif
