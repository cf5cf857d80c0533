/*
 * A client and a server process sharing RPC spans, Zipkin v1 style, for the
 * collector's Zipkin tests (tests/zipkin.rs). Per request:
 *
 *   client  "rbd_read"   root, local: start .. end, tag result=ok
 *   client  "osd_op"     child of the root: cs .. cr            } one span id
 *   server  "osd_op"     joins that span: sr, journaled, ss,    }
 *                        tags object=obj_<i>, bytes=-4096*i
 *   server  "journal"    child of osd_op, local: start .. end, tag len=<i>
 *
 * Request 0 is a forced (always sampled) trace. Built against include/zipkin_c.h.
 * usage: rpc_tree N
 * prints per request: "<trace> <root span> <rpc span> <journal span>" (hex)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <zipkin_c.h>

#define PROG "rpc_tree"
#include "socket_io.h"

static void server(int fd)
{
	struct blkin_endpoint ep;
	check(blkin_init_endpoint(&ep, "10.0.0.2", 6800, "osd"), "server endpoint");
	struct blkin_trace_info_packed packed;
	int i = 0;
	while (xfer(fd, &packed, sizeof(packed), 0) == 0) {
		struct blkin_trace_info info;
		struct blkin_trace rpc, journal;
		char object[32];
		check(blkin_unpack_trace_info(&packed, &info), "unpack");
		check(blkin_set_trace_properties(&rpc, &info, "osd_op", &ep), "join");
		BLKIN_TIMESTAMP(&rpc, &ep, SERVER_RECV);
		snprintf(object, sizeof(object), "obj_%d", i);
		BLKIN_KEYVAL_STRING(&rpc, &ep, "object", object);
		BLKIN_KEYVAL_INTEGER(&rpc, &ep, "bytes", (int64_t)-4096 * i);
		check(blkin_init_child(&journal, &rpc, &ep, "journal"), "journal child");
		BLKIN_TIMESTAMP(&journal, &ep, "start");
		BLKIN_KEYVAL_INTEGER(&journal, &ep, "len", i);
		usleep(200);
		BLKIN_TIMESTAMP(&journal, &ep, "end");
		BLKIN_TIMESTAMP(&rpc, &ep, "journaled");
		BLKIN_TIMESTAMP(&rpc, &ep, SERVER_SEND);
		struct blkin_trace_info_packed reply;
		check(blkin_pack_trace_info(&journal.info, &reply), "pack reply");
		if (xfer(fd, &reply, sizeof(reply), 1) != 0)
			exit(1);
		i++;
	}
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10;
	/* Initialise before forking: the child must get rings of its own. */
	check(blkin_init(), "blkin_init");
	pid_t child;
	int fd = fork_server(server, &child);
	struct blkin_endpoint ep;
	check(blkin_init_endpoint(&ep, "10.0.0.1", 5000, "client"), "client endpoint");
	for (int i = 0; i < n; i++) {
		struct blkin_trace root, rpc;
		struct blkin_trace_info_packed packed, reply;
		struct blkin_trace_info journal;
		if (i == 0)
			check(blkin_init_new_trace_forced(&root, "rbd_read", &ep), "forced trace");
		else
			check(blkin_init_new_trace(&root, "rbd_read", &ep), "new trace");
		BLKIN_TIMESTAMP(&root, &ep, "start");
		check(blkin_init_child(&rpc, &root, &ep, "osd_op"), "rpc child");
		BLKIN_TIMESTAMP(&rpc, &ep, CLIENT_SEND);
		check(blkin_pack_trace_info(&rpc.info, &packed), "pack");
		if (xfer(fd, &packed, sizeof(packed), 1) || xfer(fd, &reply, sizeof(reply), 0))
			return 1;
		BLKIN_TIMESTAMP(&rpc, &ep, CLIENT_RECV);
		BLKIN_KEYVAL_STRING(&root, &ep, "result", "ok");
		BLKIN_TIMESTAMP(&root, &ep, "end");
		check(blkin_unpack_trace_info(&reply, &journal), "unpack reply");
		printf("%016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 "\n",
		       (uint64_t)root.info.trace_id, (uint64_t)root.info.span_id,
		       (uint64_t)rpc.info.span_id, (uint64_t)journal.span_id);
	}
	return finish_server(fd, child);
}
