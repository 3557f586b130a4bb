/*
 * log.c - walua's logs: one JSON object per line, at least "ts" (ISO 8601
 * UTC), "level" and "msg".
 *
 * Every line goes to file descriptor 2 with a single write(2), so lines from
 * the HTTP threads, the supervisor and the worker processes (which inherit
 * fd 2) do not interleave.  log_open() points fd 2 at the configured
 * log_file instead (opened O_APPEND), which also catches anything a library
 * prints.  Callers never pass secrets: this module cannot tell them apart.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

static atomic_int	log_level = LOG_INFO;
static const char	*names[] = { "debug", "info", "warn", "error" };

/*
 * Point standard error at path (appending), or leave it alone when path is
 * NULL.  Returns 0 or -1 with errno set.
 */
int
log_open(const char *path)
{
	int	fd;

	if (path == NULL)
		return 0;
	if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	    0640)) == -1)
		return -1;
	if (dup2(fd, 2) == -1) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	close(fd);
	return 0;
}

void
log_set_level(int level)
{
	atomic_store(&log_level, level);
}

int
log_enabled(int level)
{
	return level >= atomic_load(&log_level);
}

int
log_level_parse(const char *s)
{
	int	i;

	for (i = LOG_DEBUG; i <= LOG_ERROR; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	return -1;
}

const char *
log_level_name(int level)
{
	return (level >= LOG_DEBUG && level <= LOG_ERROR) ? names[level] : "?";
}

/* "2026-11-21T16:21:00.123Z" into out (at least 25 bytes). */
void
log_time(char *out, int size)
{
	struct timespec	 ts;
	struct tm	 tm;
	char		 day[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, (size_t)size, "%s.%03ldZ", day, ts.tv_nsec / 1000000);
}

/*
 * Write one line.  fields is a JSON fragment of members ("k":v,"k2":v2)
 * without braces, or NULL.
 */
void
log_line(int level, const char *msg, const char *fields)
{
	struct buf	 b = { 0 };
	char		 ts[40];
	ssize_t		 n;
	size_t		 off;

	if (!log_enabled(level))
		return;
	log_time(ts, sizeof(ts));
	if (buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts,
	    log_level_name(level)) == -1 ||
	    buf_json_string(&b, msg, strlen(msg)) == -1 ||
	    (fields != NULL && *fields != '\0' &&
	    (buf_puts(&b, ",") == -1 || buf_puts(&b, fields) == -1)) ||
	    buf_puts(&b, "}\n") == -1) {
		buf_free(&b);
		return;
	}
	off = 0;
	while (off < b.len) {
		n = write(2, b.data + off, b.len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	buf_free(&b);
}

void
log_msg(int level, const char *fmt, ...)
{
	char	 msg[2048];
	va_list	 ap;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_line(level, msg, NULL);
}

/*
 * log_kv(LOG_INFO, "reload ok", "#generation", "3", NULL): fields as
 * key/value string pairs, ended by NULL.  A key starting with '#' marks a
 * value that is a number (written unquoted; the caller formats it).  A NULL
 * value skips its pair; the key "" also ends the list.
 */
void
log_kv(int level, const char *msg, ...)
{
	struct buf	 f = { 0 };
	const char	*k, *v;
	va_list		 ap;
	int		 first = 1;

	if (!log_enabled(level))
		return;
	va_start(ap, msg);
	while ((k = va_arg(ap, const char *)) != NULL && *k != '\0') {
		v = va_arg(ap, const char *);
		if (v == NULL)
			continue;
		if (!first)
			buf_puts(&f, ",");
		first = 0;
		if (k[0] == '#') {		/* a number, written bare */
			buf_json_string(&f, k + 1, strlen(k + 1));
			buf_puts(&f, ":");
			buf_puts(&f, v);
			continue;
		}
		buf_json_string(&f, k, strlen(k));
		buf_puts(&f, ":");
		buf_json_string(&f, v, strlen(v));
	}
	va_end(ap);
	log_line(level, msg, f.data);
	buf_free(&f);
}
