/*
 * zipkin_c.h — the blkin C API, served by blkkin (libblkin.so / libblkin.a).
 *
 * Source-compatible with ceph/blkin's header of the same name: the same
 * structs, functions, macros and constants with the same meaning, so daemons
 * instrumented against ceph/blkin rebuild unchanged and link with -lblkin.
 * Annotations are recorded into per-CPU shared-memory rings (no LTTng).
 *
 * Conventions: functions return 0 on success or a negative errno (-EINVAL on
 * NULL or invalid arguments). A trace whose trace_id is 0 is not traced:
 * recording into it does nothing and returns 0. Strings passed in are only
 * read during the call. All functions are thread-safe.
 *
 * Environment: BLKIN_RATE (or RATE) samples 1 root trace in N;
 * BLKIN_SHM_DIR, BLKIN_RING_SIZE, BLKIN_RING_MODE, ... see docs/C_API.md.
 */
#ifndef ZIPKIN_C_H_
#define ZIPKIN_C_H_

#include <stdint.h>
#include <asm/byteorder.h> /* __be64, as in ceph/blkin */

/* Record a timestamp / key-string / key-integer annotation in one statement.
 * A trace that is not sampled (trace_id 0) is skipped inline, without a call.
 * (The trailing semicolon matches ceph/blkin, so existing call sites compile
 * the same way.) */
#define BLKIN_TIMESTAMP(trace, endp, event)                                  \
	do {                                                                 \
		if (blkin_not_traced_(trace))                                \
			break;                                               \
		blkin_record_event(trace, endp, event);                      \
	} while (0);

#define BLKIN_KEYVAL_STRING(trace, endp, key, val)                           \
	do {                                                                 \
		if (blkin_not_traced_(trace))                                \
			break;                                               \
		blkin_record_string(trace, endp, key, val);                  \
	} while (0);

#define BLKIN_KEYVAL_INTEGER(trace, endp, key, val)                           \
	do {                                                                  \
		if (blkin_not_traced_(trace))                                 \
			break;                                                \
		blkin_record_integer(trace, endp, key, val);                  \
	} while (0);

#ifdef __cplusplus
extern "C" {
#endif

/* Zipkin's core annotations: "cs", "cr", "ss", "sr", "ws", "wr", and the
 * fragment variants "csf", "crf", "ssf", "srf". */
extern const char *const CLIENT_SEND;
extern const char *const CLIENT_RECV;
extern const char *const SERVER_SEND;
extern const char *const SERVER_RECV;
extern const char *const WIRE_SEND;
extern const char *const WIRE_RECV;
extern const char *const CLIENT_SEND_FRAGMENT;
extern const char *const CLIENT_RECV_FRAGMENT;
extern const char *const SERVER_SEND_FRAGMENT;
extern const char *const SERVER_RECV_FRAGMENT;

/* Where annotations happen: service `name` at `ip`:`port`. */
struct blkin_endpoint {
	const char *ip;
	int16_t port;
	const char *name;
};

/* The ids that link a span into its trace. trace_id 0 = not traced. */
struct blkin_trace_info {
	int64_t trace_id;
	int64_t span_id;
	int64_t parent_span_id;
};

/* blkin_trace_info for the wire: 24 bytes, each id big-endian. */
struct blkin_trace_info_packed {
	__be64 trace_id;
	__be64 span_id;
	__be64 parent_span_id;
} __attribute__((packed));

/* A span: its name, ids and default endpoint. */
struct blkin_trace {
	const char *name;
	struct blkin_trace_info info;
	const struct blkin_endpoint *endpoint;
};

/* Used by the BLKIN_* macros: a non-NULL trace with trace_id 0 is not traced. */
static inline int blkin_not_traced_(const struct blkin_trace *trace)
{
	return trace && trace->info.trace_id == 0;
}

typedef enum {
	ANNOT_STRING = 0,
	ANNOT_INTEGER,
	ANNOT_TIMESTAMP
} blkin_annotation_type;

/* A key/value pair or a timestamped event (the event is in val_str). */
struct blkin_annotation {
	blkin_annotation_type type;
	const char *key;
	union {
		const char *val_str;
		int64_t val_int;
	};
	const struct blkin_endpoint *endpoint; /* NULL: use the trace's */
};

/* Reads the environment and creates this process's rings (otherwise the
 * first record does). 0, or a negative errno if the rings cannot be created. */
int blkin_init(void);

/* A new root trace named `name`, subject to sampling (unsampled: ids 0). */
int blkin_init_new_trace(struct blkin_trace *new_trace, const char *name,
			 const struct blkin_endpoint *endpoint);

/* Ids for a new root span (subject to sampling); parent id 0. */
void blkin_init_trace_info(struct blkin_trace_info *trace_info);

/* A child span of `parent`; a NULL endpoint inherits the parent's. */
int blkin_init_child(struct blkin_trace *child,
		     const struct blkin_trace *parent,
		     const struct blkin_endpoint *endpoint,
		     const char *child_name);

/* A child span of the span described by `info` (e.g. unpacked from the
 * wire). The endpoint is required. */
int blkin_init_child_info(struct blkin_trace *child,
			  const struct blkin_trace_info *info,
			  const struct blkin_endpoint *endpoint,
			  const char *child_name);

/* Fills an endpoint; a NULL ip becomes "0.0.0.0". */
int blkin_init_endpoint(struct blkin_endpoint *endpoint,
			const char *ip, int16_t port, const char *name);

int blkin_init_string_annotation(struct blkin_annotation *annotation,
				 const char *key, const char *val,
				 const struct blkin_endpoint *endpoint);

int blkin_init_integer_annotation(struct blkin_annotation *annotation,
				  const char *key, int64_t val,
				  const struct blkin_endpoint *endpoint);

int blkin_init_timestamp_annotation(struct blkin_annotation *annot,
				    const char *event,
				    const struct blkin_endpoint *endpoint);

/* Records `annotation` in `trace`; the annotation's endpoint wins over the
 * trace's. 0 when recorded or not traced; -EINVAL on bad arguments;
 * -ENOBUFS (ring full), -EMSGSIZE (record too big), -EIO (corrupt ring)
 * or -ENODEV (no rings)
 * when dropped — every drop is counted. Never blocks. */
int blkin_record(const struct blkin_trace *trace,
		 const struct blkin_annotation *annotation);

/* Copies the trace's ids into `info`. */
int blkin_get_trace_info(const struct blkin_trace *trace,
			 struct blkin_trace_info *info);

/* Sets the trace's ids from `info`. */
int blkin_set_trace_info(struct blkin_trace *trace,
			 const struct blkin_trace_info *info);

/* Sets ids, name and endpoint at once. */
int blkin_set_trace_properties(struct blkin_trace *trace,
			       const struct blkin_trace_info *info,
			       const char *name,
			       const struct blkin_endpoint *endpoint);

/* Converts ids to and from the packed wire form. */
int blkin_pack_trace_info(const struct blkin_trace_info *info,
			  struct blkin_trace_info_packed *pinfo);
int blkin_unpack_trace_info(const struct blkin_trace_info_packed *pinfo,
			    struct blkin_trace_info *info);

/* blkkin extensions (not in ceph/blkin). */

/* Like blkin_init_new_trace, but always sampled. */
int blkin_init_new_trace_forced(struct blkin_trace *new_trace, const char *name,
				const struct blkin_endpoint *endpoint);

/* What the BLKIN_* macros call: blkin_init_*_annotation + blkin_record in
 * one call, with the same checks and results. */
int blkin_record_event(const struct blkin_trace *trace,
		       const struct blkin_endpoint *endpoint, const char *event);
int blkin_record_string(const struct blkin_trace *trace,
			const struct blkin_endpoint *endpoint, const char *key,
			const char *val);
int blkin_record_integer(const struct blkin_trace *trace,
			 const struct blkin_endpoint *endpoint, const char *key,
			 int64_t val);

/* Records dropped because this process had no rings. */
uint64_t blkin_dropped_no_ring(void);

#ifdef __cplusplus
}
#endif

#endif /* ZIPKIN_C_H_ */
