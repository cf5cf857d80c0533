/*
 * Helpers shared by the two-process test programs (pingpong.c,
 * rpc_tree.c): whole-buffer socket transfers and fatal result checks.
 * Define PROG (the program name for messages) before including.
 */
#ifndef BLKKIN_TESTS_SOCKET_IO_H
#define BLKKIN_TESTS_SOCKET_IO_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Sends (sending != 0) or receives exactly len bytes; -1 on EOF or error. */
static int xfer(int fd, void *buf, size_t len, int sending)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = sending ? write(fd, (char *)buf + done, len - done)
				    : read(fd, (char *)buf + done, len - done);
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

/* Exits with a message unless rc is 0. */
static void check(int rc, const char *what)
{
	if (rc != 0) {
		fprintf(stderr, PROG ": %s failed: %d\n", what, rc);
		exit(1);
	}
}

/* Forks a server process running serve() on one end of a socket pair and
 * returns the other end (*pid: the server). Call blkin_init() first: the
 * child must get rings of its own. */
static int fork_server(void (*serve)(int fd), pid_t *pid)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		check(-1, "socketpair");
	*pid = fork();
	if (*pid == 0) {
		close(sv[0]);
		serve(sv[1]);
		_exit(0);
	}
	close(sv[1]);
	return sv[0];
}

/* Closes the client end and reaps the server: 0 if it exited with 0. */
static int finish_server(int fd, pid_t pid)
{
	int status;
	close(fd);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

#endif
