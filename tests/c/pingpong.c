/*
 * Two processes exchanging packed trace info over a socket, like a client
 * and a server of a storage stack. Built against include/zipkin_c.h and
 * linked with -lblkin by tests/c_abi.rs.
 *
 * usage: pingpong N
 * With PINGPONG_PAUSE_US set, the client sleeps that long after each request
 * (so a test can act while it is still recording).
 * For each request prints "<trace> <client span> <server span> <client pid> <server pid>" (hex ids).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zipkin_c.h>

#define PROG "pingpong"
#include "socket_io.h"

static void server(int fd)
{
	struct blkin_endpoint ep;
	check(blkin_init_endpoint(&ep, "10.0.0.2", 6800, "server"), "server endpoint");
	struct blkin_trace_info_packed packed;
	int i = 0;
	while (xfer(fd, &packed, sizeof(packed), 0) == 0) {
		struct blkin_trace_info info;
		struct blkin_trace span;
		char object[32];
		check(blkin_unpack_trace_info(&packed, &info), "unpack");
		check(blkin_init_child_info(&span, &info, &ep, "server_op"), "child_info");
		BLKIN_TIMESTAMP(&span, &ep, SERVER_RECV);
		snprintf(object, sizeof(object), "obj_%d", i);
		BLKIN_KEYVAL_STRING(&span, &ep, "object", object);
		BLKIN_KEYVAL_INTEGER(&span, &ep, "bytes", (int64_t)4096 * i);
		BLKIN_TIMESTAMP(&span, &ep, SERVER_SEND);
		check(blkin_pack_trace_info(&span.info, &packed), "pack reply");
		if (xfer(fd, &packed, sizeof(packed), 1) != 0)
			exit(1);
		i++;
	}
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10;
	const char *pause = getenv("PINGPONG_PAUSE_US");
	useconds_t pause_us = pause ? (useconds_t)atoi(pause) : 0;
	/* Initialise before forking: the child must get rings of its own. */
	check(blkin_init(), "blkin_init");
	pid_t child;
	int fd = fork_server(server, &child);
	struct blkin_endpoint ep;
	check(blkin_init_endpoint(&ep, "10.0.0.1", 5000, "client"), "client endpoint");
	for (int i = 0; i < n; i++) {
		struct blkin_trace t;
		struct blkin_trace_info_packed packed;
		struct blkin_trace_info reply;
		check(blkin_init_new_trace(&t, "client_op", &ep), "new_trace");
		BLKIN_TIMESTAMP(&t, NULL, CLIENT_SEND);
		check(blkin_pack_trace_info(&t.info, &packed), "pack");
		if (xfer(fd, &packed, sizeof(packed), 1) || xfer(fd, &packed, sizeof(packed), 0))
			return 1;
		BLKIN_TIMESTAMP(&t, NULL, CLIENT_RECV);
		check(blkin_unpack_trace_info(&packed, &reply), "unpack reply");
		printf("%016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %d %d\n", (uint64_t)t.info.trace_id,
		       (uint64_t)t.info.span_id, (uint64_t)reply.span_id, (int)getpid(), (int)child);
		if (pause_us)
			usleep(pause_us);
	}
	return finish_server(fd, child);
}
