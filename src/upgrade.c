/*
 * upgrade.c - listening sockets handed over by systemd or by the walua
 * before, the lock that keeps one writer on a database, and the binary
 * upgrade on SIGUSR2 (nginx's convention).
 *
 * Sockets: systemd's convention (sd_listen_fds(3)): LISTEN_PID is our pid
 * and LISTEN_FDS the count, the first at fd 3.  The first serves
 * `listen`, a second `admin_listen`.  The variables are removed once
 * read, so the worker processes do not take them for theirs.
 *
 * Upgrade: the running walua (the old) starts its binary again (the path
 * it was started from, so a file replaced there is the new one) with its
 * listening sockets as fds 3 and 4 and the write end of a pipe named by
 * WALUA_UPGRADE_FD.  The new one loads its config and its handler
 * workers, writes "ready" on the pipe, then waits for the database lock.
 * The old one, on "ready", stops as on SIGTERM: it stops accepting (the
 * sockets stay open in the new process, so the kernel queues new
 * connections instead of refusing them), answers what it has, finishes
 * its queued events and exits, which releases the lock.  The new one then
 * opens the inbox (what the old one left pending is handled now) and
 * accepts.  A new binary that fails or says nothing within UPGRADE_MS is
 * ended and the old one goes on serving.
 *
 * One writer: a process that serves a database holds an exclusive
 * flock(2) on "<database>.lock" (holding its pid) for its whole life.
 */
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db_pg.h"
#include "log.h"
#include "queue.h"

#define UPGRADE_MS	30000	/* a new binary must say ready within this */

static int	 listen_fds[2] = { -1, -1 };
static int	 notify_fd = -1;	/* the new one: WALUA_UPGRADE_FD */
static char	 exe[PATH_MAX];
static char	**args;
static int	 lock_fd = -1;

static pid_t	 child = -1;		/* the old one: the new binary */
static int	 child_fd = -1;		/* ... and the read end of its pipe */
static int64_t	 child_deadline;

static int
env_int(const char *name)
{
	const char	*s = getenv(name);
	char		*end;
	long		 v;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > INT_MAX)
		return -1;
	return (int)v;
}

void
upgrade_init(char **argv)
{
	ssize_t	n;
	int	nfds, i, fd;

	args = argv;
	if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) == -1)
		exe[0] = '\0';
	else
		exe[n] = '\0';
	if (env_int("LISTEN_PID") == (int)getpid() &&
	    (nfds = env_int("LISTEN_FDS")) > 0) {
		for (i = 0; i < nfds && i < 2; i++) {
			fd = 3 + i;
			if (fcntl(fd, F_SETFD, FD_CLOEXEC) == -1)
				continue;
			listen_fds[i] = fd;
		}
		for (i = 2; i < nfds; i++)	/* not ours to keep */
			close(3 + i);
	}
	if ((fd = env_int("WALUA_UPGRADE_FD")) > 2 &&
	    fcntl(fd, F_SETFD, FD_CLOEXEC) != -1)
		notify_fd = fd;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	unsetenv("WALUA_UPGRADE_FD");
}

int
upgrade_listen_fd(int which)
{
	return which >= 0 && which < 2 ? listen_fds[which] : -1;
}

int
upgrade_is_new(void)
{
	return notify_fd != -1;
}

void
upgrade_say_ready(void)
{
	if (notify_fd == -1)
		return;
	(void)!write(notify_fd, "ready\n", 6);
	close(notify_fd);
	notify_fd = -1;
}

/* The pid in the lock file, for the message of a second walua. */
static long
lock_holder(int fd)
{
	char	buf[32];
	ssize_t	n;

	if ((n = pread(fd, buf, sizeof(buf) - 1, 0)) <= 0)
		return 0;
	buf[n] = '\0';
	return strtol(buf, NULL, 10);
}

int
upgrade_lock(const char *database, int wait_ms, char *err, size_t errlen)
{
	char		 path[PATH_MAX], pid[32];
	int64_t		 end = queue_now_ms() + wait_ms;
	int		 len;

	if (database == NULL || database[0] == '\0' ||
	    strcmp(database, ":memory:") == 0 || db_is_pg(database))
		return 0;
	if (snprintf(path, sizeof(path), "%s.lock", database) >=
	    (int)sizeof(path)) {
		snprintf(err, errlen, "database path too long");
		return -1;
	}
	if ((lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1) {
		snprintf(err, errlen, "cannot open the lock file '%s': %s",
		    path, strerror(errno));
		return -1;
	}
	while (flock(lock_fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno != EWOULDBLOCK || queue_now_ms() >= end) {
			snprintf(err, errlen, "the database is in use: '%s' is "
			    "locked by pid %ld (one walua serves a database; "
			    "SIGUSR2 upgrades it in place)", path,
			    lock_holder(lock_fd));
			close(lock_fd);
			lock_fd = -1;
			return -1;
		}
		usleep(10000);
	}
	len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(lock_fd, 0) == -1 ||
	    pwrite(lock_fd, pid, (size_t)len, 0) != len)
		log_msg(LOG_WARN, "cannot write the pid into '%s': %s", path,
		    strerror(errno));
	return 0;
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void
exec_new(int fd0, int fd1, int pw)
{
	char	 v[3][32];

	if (fd0 != -1 && dup2(fd0, 3) == -1)
		_exit(127);
	if (fd1 != -1 && dup2(fd1, 4) == -1)
		_exit(127);
	/* dup2 onto itself keeps close-on-exec: clear it */
	if (fd0 != -1)
		fcntl(3, F_SETFD, 0);
	if (fd1 != -1)
		fcntl(4, F_SETFD, 0);
	if (pw != 5 && dup2(pw, 5) == -1)
		_exit(127);
	fcntl(5, F_SETFD, 0);
	snprintf(v[0], sizeof(v[0]), "%ld", (long)getpid());
	snprintf(v[1], sizeof(v[1]), "%d", fd1 != -1 ? 2 : 1);
	setenv("LISTEN_PID", v[0], 1);
	setenv("LISTEN_FDS", v[1], 1);
	setenv("WALUA_UPGRADE_FD", "5", 1);
	execv(exe, args);
	_exit(127);
}

int
upgrade_start(int fd0, int fd1)
{
	int	p[2], pw, d0, d1;

	if (child != -1) {
		log_msg(LOG_WARN, "upgrade: one is already under way (pid %ld)",
		    (long)child);
		return -1;
	}
	if (exe[0] == '\0' || fd0 == -1) {
		log_msg(LOG_ERROR, "upgrade: no binary path or no listening "
		    "socket to hand over");
		return -1;
	}
	if (pipe2(p, O_CLOEXEC) == -1) {
		log_msg(LOG_ERROR, "upgrade: pipe: %s", strerror(errno));
		return -1;
	}
	/* above the fds the child is given, so one dup2 spoils no other */
	pw = p[1] > 5 ? p[1] : fcntl(p[1], F_DUPFD_CLOEXEC, 6);
	if (pw == -1) {
		log_msg(LOG_ERROR, "upgrade: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	/* the same for the sockets: dup2 onto 3 must not close fd 4's */
	d0 = fd0 >= 3 && fd0 <= 5 ? fcntl(fd0, F_DUPFD_CLOEXEC, 6) : fd0;
	d1 = fd1 >= 3 && fd1 <= 5 ? fcntl(fd1, F_DUPFD_CLOEXEC, 6) : fd1;
	if (d0 == -1 || (fd1 != -1 && d1 == -1))
		child = -1;
	else if ((child = fork()) == -1)
		log_msg(LOG_ERROR, "upgrade: fork: %s", strerror(errno));
	else if (child == 0)
		exec_new(d0, d1, pw);
	close(p[1]);
	if (pw != p[1])
		close(pw);
	if (d0 != fd0 && d0 != -1)
		close(d0);
	if (d1 != fd1 && d1 != -1)
		close(d1);
	if (child == -1) {
		close(p[0]);
		return -1;
	}
	child_fd = p[0];
	child_deadline = queue_now_ms() + UPGRADE_MS;
	log_msg(LOG_INFO, "upgrade: started %s as pid %ld; waiting for it to "
	    "load", exe, (long)child);
	return 0;
}

int
upgrade_child_fd(void)
{
	return child_fd;
}

/* The new binary failed: end it, keep serving. */
static void
give_up(const char *why)
{
	int	status;

	log_kv(LOG_ERROR, "upgrade failed: the new binary is stopped and this "
	    "walua keeps serving", "error", why, NULL);
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	close(child_fd);
	child_fd = -1;
	child = -1;
}

int
upgrade_poll(int readable)
{
	char	buf[16];
	ssize_t	n;
	int	status;

	if (child == -1)
		return 0;
	if (readable) {
		n = read(child_fd, buf, sizeof(buf));
		if (n >= 5 && memcmp(buf, "ready", 5) == 0) {
			log_msg(LOG_INFO, "upgrade: pid %ld is ready; this walua "
			    "stops accepting and hands the database over",
			    (long)child);
			close(child_fd);
			child_fd = -1;
			return 1;
		}
		if (n == 0 || (n == -1 && errno != EINTR && errno != EAGAIN)) {
			give_up("it exited before it was ready");
			return 0;
		}
	}
	if (waitpid(child, &status, WNOHANG) == child) {
		close(child_fd);
		child_fd = -1;
		child = -1;
		log_kv(LOG_ERROR, "upgrade failed: the new binary exited; this "
		    "walua keeps serving", "error", "exited before ready", NULL);
		return 0;
	}
	if (queue_now_ms() >= child_deadline)
		give_up("not ready within 30 s");
	return 0;
}

pid_t
upgrade_child(void)
{
	return child;
}
