// ZTracer (C++) usage as in ceph: built against include/ztracer.hpp, -lblkin.
// Prints "<trace> <root span> <child span>" (hex).
#include <cinttypes>
#include <cstdio>
#include <string>

#include <ztracer.hpp>

int main()
{
	ZTracer::ztrace_init();
	ZTracer::Endpoint ep("127.0.0.1", 6801, "osd");
	ZTracer::Endpoint copy(ep);
	copy.copy_name(std::string("osd.copy"));

	ZTracer::Trace invalid;
	invalid.event("never recorded"); // invalid trace: no-op
	if (invalid.valid())
		return 1;

	ZTracer::Trace root("osd_op", &ep);
	root.event(ZTracer::SERVER_RECV);
	root.keyval("object", "rbd_data.1");

	ZTracer::Trace child("journal_write", NULL, &root); // inherits root's endpoint
	child.keyval("bytes", (int64_t)8192);
	child.event("journaled", &copy);

	ZTracer::Trace same(child); // copies share ids
	if (same.get_info()->span_id != child.get_info()->span_id)
		return 1;
	root.event(ZTracer::SERVER_SEND);

	const blkin_trace_info *r = root.get_info(), *c = child.get_info();
	std::printf("%016" PRIx64 " %016" PRIx64 " %016" PRIx64 "\n", (uint64_t)r->trace_id,
		    (uint64_t)r->span_id, (uint64_t)c->span_id);
	return 0;
}
