/* A traced process whose main thread exits first (pthread_exit) while
 * another thread keeps recording: the thread-group leader is then a zombie,
 * yet the process is alive. Prints "ready" once it has recorded, then keeps
 * the worker alive until stdin is closed. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include <zipkin_c.h>

static void *worker(void *arg)
{
	(void)arg;
	struct blkin_endpoint ep;
	struct blkin_trace t;
	char c;
	blkin_init_endpoint(&ep, "127.0.0.1", 1, "zombie");
	blkin_init_new_trace_forced(&t, "leader_gone", &ep);
	BLKIN_TIMESTAMP(&t, &ep, "before");
	printf("ready\n");
	fflush(stdout);
	while (read(0, &c, 1) > 0)
		BLKIN_TIMESTAMP(&t, &ep, "tick");
	return NULL;
}

int main(void)
{
	pthread_t th;
	blkin_init();
	pthread_create(&th, NULL, worker, NULL);
	pthread_exit(NULL);
}
