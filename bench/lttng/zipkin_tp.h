/*
 * LTTng-UST tracepoint provider "zipkin" for the baseline benchmark.
 *
 * The provider name, event names, argument order, field names and field
 * types mirror the record path of the original C BlkKin library
 * (ceph/blkin, blkin-lib/zipkin_trace.h), so that the events this
 * benchmark emits have the same layout and cost as BlkKin's:
 *
 *   zipkin:timestamp       trace_name service_name port_no ip
 *                          trace_id span_id parent_span_id event
 *   zipkin:keyval_string   (same first seven fields) key val(string)
 *   zipkin:keyval_integer  (same first seven fields) key val(int64_t)
 *
 * Written against the LTTng-UST 2.x "compat" API (TRACEPOINT_EVENT,
 * TP_ARGS, TP_FIELDS, ctf_*), which is what BlkKin itself uses; it still
 * builds unchanged with LTTng-UST 2.13.
 */

#undef TRACEPOINT_PROVIDER
#define TRACEPOINT_PROVIDER zipkin

#undef TRACEPOINT_INCLUDE
#define TRACEPOINT_INCLUDE "./zipkin_tp.h"

#if !defined(BENCH_ZIPKIN_TP_H) || defined(TRACEPOINT_HEADER_MULTI_READ)
#define BENCH_ZIPKIN_TP_H

#include <stdint.h>
#include <lttng/tracepoint.h>

/* An annotation that only marks a point in time ("cs", "sr", ...). */
TRACEPOINT_EVENT(
	zipkin,
	timestamp,
	TP_ARGS(
		const char *, trace_name_arg,
		const char *, service_arg,
		int, port_arg,
		const char *, ip_arg,
		long, trace_arg,
		long, span_arg,
		long, parent_span_arg,
		const char *, event_arg),
	TP_FIELDS(
		/* span name shown in the UI */
		ctf_string(trace_name, trace_name_arg)
		/* endpoint: service name, port, ip */
		ctf_string(service_name, service_arg)
		ctf_integer(int, port_no, port_arg)
		ctf_string(ip, ip_arg)
		/* trace / span / parent span identifiers */
		ctf_integer(long, trace_id, trace_arg)
		ctf_integer(long, span_id, span_arg)
		ctf_integer(long, parent_span_id, parent_span_arg)
		/* the annotation itself */
		ctf_string(event, event_arg)
	)
)
TRACEPOINT_LOGLEVEL(zipkin, timestamp, TRACE_WARNING)

/* A key/value annotation whose value is a string. */
TRACEPOINT_EVENT(
	zipkin,
	keyval_string,
	TP_ARGS(
		const char *, trace_name_arg,
		const char *, service_arg,
		int, port_arg,
		const char *, ip_arg,
		long, trace_arg,
		long, span_arg,
		long, parent_span_arg,
		const char *, key_arg,
		const char *, val_arg),
	TP_FIELDS(
		ctf_string(trace_name, trace_name_arg)
		ctf_string(service_name, service_arg)
		ctf_integer(int, port_no, port_arg)
		ctf_string(ip, ip_arg)
		ctf_integer(long, trace_id, trace_arg)
		ctf_integer(long, span_id, span_arg)
		ctf_integer(long, parent_span_id, parent_span_arg)
		ctf_string(key, key_arg)
		ctf_string(val, val_arg)
	)
)
TRACEPOINT_LOGLEVEL(zipkin, keyval_string, TRACE_WARNING)

/* A key/value annotation whose value is a 64-bit integer. */
TRACEPOINT_EVENT(
	zipkin,
	keyval_integer,
	TP_ARGS(
		const char *, trace_name_arg,
		const char *, service_arg,
		int, port_arg,
		const char *, ip_arg,
		long, trace_arg,
		long, span_arg,
		long, parent_span_arg,
		const char *, key_arg,
		int64_t, val_arg),
	TP_FIELDS(
		ctf_string(trace_name, trace_name_arg)
		ctf_string(service_name, service_arg)
		ctf_integer(int, port_no, port_arg)
		ctf_string(ip, ip_arg)
		ctf_integer(long, trace_id, trace_arg)
		ctf_integer(long, span_id, span_arg)
		ctf_integer(long, parent_span_id, parent_span_arg)
		ctf_string(key, key_arg)
		ctf_integer(int64_t, val, val_arg)
	)
)
TRACEPOINT_LOGLEVEL(zipkin, keyval_integer, TRACE_WARNING)

#endif /* BENCH_ZIPKIN_TP_H */

#include <lttng/tracepoint-event.h>
