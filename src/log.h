/* log.h - JSON log lines on standard error (or the config's log_file). */
#ifndef LOG_H
#define LOG_H

enum {
	LOG_DEBUG,
	LOG_INFO,
	LOG_WARN,
	LOG_ERROR
};

int		 log_open(const char *path);
void		 log_set_level(int);
int		 log_enabled(int);
int		 log_level_parse(const char *);
const char	*log_level_name(int);
void		 log_line(int level, const char *msg, const char *fields);
void		 log_msg(int level, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));
void		 log_kv(int level, const char *msg, ...);
void		 log_time(char *out, int size);

#endif
