// ztracer's key/value at the parent's endpoint inside a child span (as
// ceph/blkin allows): the client times "write" (cs/cr); the child "osd_op"
// is timed at the OSD (sr/ss), and the client records "seq" inside it at
// its own endpoint. Zipkin's v1 converter makes that a span of its own for
// the client endpoint; it has no beginning or end.
//
// usage: ztracer_keyval N. Prints "<trace> <root span> <child span>" (hex)
// per request.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

#include <ztracer.hpp>

int main(int argc, char **argv)
{
	int n = argc > 1 ? std::atoi(argv[1]) : 1;
	if (n <= 0 || ZTracer::ztrace_init() != 0)
		return 2;
	ZTracer::Endpoint client("127.0.0.1", 6800, "kv_client");
	ZTracer::Endpoint osd("127.0.0.2", 6801, "kv_osd");
	for (int i = 0; i < n; i++) {
		ZTracer::Trace root("write", &client);
		root.event(ZTracer::CLIENT_SEND);
		ZTracer::Trace child("osd_op", &osd, &root);
		child.event(ZTracer::SERVER_RECV);
		child.keyval("seq", (int64_t)i, &client);
		child.event(ZTracer::SERVER_SEND);
		root.event(ZTracer::CLIENT_RECV);
		const blkin_trace_info *r = root.get_info(), *c = child.get_info();
		std::printf("%016" PRIx64 " %016" PRIx64 " %016" PRIx64 "\n", (uint64_t)r->trace_id,
			    (uint64_t)r->span_id, (uint64_t)c->span_id);
	}
	return 0;
}
