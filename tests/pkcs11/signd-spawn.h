/*
 * smartcert-signd started and stopped for a test deployment, the same way
 * for test-module.c and bench-sign.c.  Header-only (static inline): each
 * of the two programs is built from its one source file.
 */
#ifndef SIGND_SPAWN_H
#define SIGND_SPAWN_H

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* 1 when a service accepts connections on `sock`. */
static inline int signd_answers(const char *sock)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	if (fd < 0 || strlen(sock) >= sizeof(sa.sun_path)) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, sock, strlen(sock));
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/* smartcert-signd `bin` on configuration `conf`, its stderr appended to
 * `log`: the child's pid, or -1 when fork failed (errno set). */
static inline pid_t signd_spawn(const char *bin, const char *conf, const char *log)
{
	pid_t pid;
	int fd;

	fflush(NULL);
	pid = fork();
	if (pid != 0)
		return pid;
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd >= 0)
		dup2(fd, 2);
	execl(bin, bin, "--config", conf, (char *)NULL);
	_exit(127);
}

/* Polls for up to 10 s until the service answers on `sock`: 1, or 0. */
static inline int signd_wait(const char *sock)
{
	int i;

	for (i = 0; i < 400; i++) {
		if (signd_answers(sock))
			return 1;
		usleep(25000);
	}
	return 0;
}

/* Asks the service to stop (SIGTERM) and waits: its wait status. */
static inline int signd_reap(pid_t pid)
{
	int st = 0;

	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
	return st;
}

#endif
