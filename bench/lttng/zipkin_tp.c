/*
 * Instantiates the "zipkin" LTTng-UST tracepoint provider (probes and
 * event descriptions) declared in zipkin_tp.h. Linked statically into
 * bench_lttng, the same way BlkKin links its provider into libblkin.
 */
#define TRACEPOINT_CREATE_PROBES
#define TRACEPOINT_DEFINE
#include "zipkin_tp.h"
