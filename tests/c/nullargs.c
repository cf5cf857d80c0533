/* Every function of zipkin_c.h with NULL or invalid arguments returns
 * -EINVAL and does not crash. Exit status 0 when all checks pass. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <zipkin_c.h>

static int failures;
#define EXPECT_EINVAL(call)                                                      \
	do {                                                                     \
		int rc_ = (call);                                                \
		if (rc_ != -EINVAL) {                                            \
			fprintf(stderr, "FAIL %s: got %d, want %d\n", #call, rc_, -EINVAL); \
			failures++;                                              \
		}                                                                \
	} while (0)

int main(void)
{
	struct blkin_endpoint ep, noname;
	struct blkin_trace t, child;
	struct blkin_trace_info info;
	struct blkin_trace_info_packed packed;
	struct blkin_annotation a;

	blkin_init_endpoint(&ep, "127.0.0.1", 1, "svc");
	blkin_init_endpoint(&noname, "127.0.0.1", 1, NULL);
	blkin_init_new_trace_forced(&t, "span", &ep);
	memset(&info, 0, sizeof(info));

	EXPECT_EINVAL(blkin_init_new_trace(NULL, "x", &ep));
	EXPECT_EINVAL(blkin_init_new_trace_forced(NULL, "x", &ep));
	blkin_init_trace_info(NULL); /* void: must simply not crash */
	EXPECT_EINVAL(blkin_init_child(&child, NULL, &ep, "c"));
	EXPECT_EINVAL(blkin_init_child(NULL, &t, &ep, "c"));
	EXPECT_EINVAL(blkin_init_child_info(NULL, &info, &ep, "c"));
	EXPECT_EINVAL(blkin_init_child_info(&child, NULL, &ep, "c"));
	EXPECT_EINVAL(blkin_init_child_info(&child, &info, NULL, "c"));
	EXPECT_EINVAL(blkin_init_endpoint(NULL, "1.2.3.4", 1, "x"));
	EXPECT_EINVAL(blkin_init_string_annotation(NULL, "k", "v", &ep));
	EXPECT_EINVAL(blkin_init_string_annotation(&a, NULL, "v", &ep));
	EXPECT_EINVAL(blkin_init_string_annotation(&a, "k", NULL, &ep));
	EXPECT_EINVAL(blkin_init_integer_annotation(NULL, "k", 1, &ep));
	EXPECT_EINVAL(blkin_init_integer_annotation(&a, NULL, 1, &ep));
	EXPECT_EINVAL(blkin_init_timestamp_annotation(NULL, "e", &ep));
	EXPECT_EINVAL(blkin_init_timestamp_annotation(&a, NULL, &ep));
	EXPECT_EINVAL(blkin_get_trace_info(NULL, &info));
	EXPECT_EINVAL(blkin_get_trace_info(&t, NULL));
	EXPECT_EINVAL(blkin_set_trace_info(NULL, &info));
	EXPECT_EINVAL(blkin_set_trace_info(&t, NULL));
	EXPECT_EINVAL(blkin_set_trace_properties(NULL, &info, "n", &ep));
	EXPECT_EINVAL(blkin_set_trace_properties(&t, NULL, "n", &ep));
	EXPECT_EINVAL(blkin_set_trace_properties(&t, &info, NULL, &ep));
	EXPECT_EINVAL(blkin_set_trace_properties(&t, &info, "n", NULL));
	EXPECT_EINVAL(blkin_pack_trace_info(NULL, &packed));
	EXPECT_EINVAL(blkin_pack_trace_info(&info, NULL));
	EXPECT_EINVAL(blkin_unpack_trace_info(NULL, &info));
	EXPECT_EINVAL(blkin_unpack_trace_info(&packed, NULL));

	/* blkin_record: NULL trace/annotation, missing endpoint or names, bad type. */
	blkin_init_timestamp_annotation(&a, "ev", NULL);
	EXPECT_EINVAL(blkin_record(NULL, &a));
	EXPECT_EINVAL(blkin_record(&t, NULL));
	struct blkin_trace no_ep = t;
	no_ep.endpoint = NULL;
	EXPECT_EINVAL(blkin_record(&no_ep, &a)); /* neither annotation nor trace endpoint */
	struct blkin_trace no_name = t;
	no_name.name = NULL;
	EXPECT_EINVAL(blkin_record(&no_name, &a));
	blkin_init_timestamp_annotation(&a, "ev", &noname);
	EXPECT_EINVAL(blkin_record(&t, &a)); /* endpoint without a service name */
	blkin_init_timestamp_annotation(&a, "ev", &ep);
	a.val_str = NULL;
	EXPECT_EINVAL(blkin_record(&t, &a));
	blkin_init_string_annotation(&a, "k", "v", &ep);
	a.key = NULL;
	EXPECT_EINVAL(blkin_record(&t, &a));
	blkin_init_string_annotation(&a, "k", "v", &ep);
	a.type = (blkin_annotation_type)42;
	EXPECT_EINVAL(blkin_record(&t, &a));

	/* The fused entry points the BLKIN_* macros use. */
	EXPECT_EINVAL(blkin_record_event(NULL, &ep, "e"));
	EXPECT_EINVAL(blkin_record_event(&t, &ep, NULL));
	EXPECT_EINVAL(blkin_record_event(&no_ep, NULL, "e"));
	EXPECT_EINVAL(blkin_record_event(&t, &noname, "e"));
	EXPECT_EINVAL(blkin_record_string(&t, &ep, NULL, "v"));
	EXPECT_EINVAL(blkin_record_string(&t, &ep, "k", NULL));
	EXPECT_EINVAL(blkin_record_string(NULL, &ep, "k", "v"));
	EXPECT_EINVAL(blkin_record_integer(&t, &ep, NULL, 1));
	EXPECT_EINVAL(blkin_record_integer(&no_name, &ep, "k", 1));
	BLKIN_TIMESTAMP(&t, &ep, NULL); /* the macro form must not crash either */

	/* Oversized strings are dropped with -EMSGSIZE (and counted), not cut. */
	static char long_key[301], long_val[5001];
	memset(long_key, 'k', 300);
	memset(long_val, 'v', 5000);
	if (blkin_record_string(&t, &ep, long_key, "v") != -EMSGSIZE ||
	    blkin_record_string(&t, &ep, "k", long_val) != -EMSGSIZE) {
		fprintf(stderr, "FAIL oversized strings not rejected with -EMSGSIZE\n");
		failures++;
	}

	/* Valid calls still work afterwards; an untraced trace records nothing. */
	blkin_init_timestamp_annotation(&a, "ok", &ep);
	if (blkin_record(&t, &a) != 0) {
		fprintf(stderr, "FAIL valid record\n");
		failures++;
	}
	struct blkin_trace untraced = t;
	untraced.info.trace_id = 0;
	untraced.name = NULL; /* not even looked at */
	if (blkin_record(&untraced, &a) != 0) {
		fprintf(stderr, "FAIL untraced record\n");
		failures++;
	}
	printf("%d failures\n", failures);
	return failures != 0;
}
