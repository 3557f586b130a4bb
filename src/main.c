/*
 * main.c - walua's commands: serve, check, run, version, help; and the
 * hidden `__worker` a supervisor starts for each handler process.
 *
 * Startup order for serve: config, log, queue, handler workers (a broken
 * handler stops startup before anything is acknowledged), then HTTP.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "event.h"
#include "httpd.h"
#include "lb.h"
#include "inbox.h"
#include "lhost.h"
#include "log.h"
#include "luasrc.h"
#include "metrics.h"
#include "oauth.h"
#include "pool.h"
#include "queue.h"
#include "run.h"
#include "sdnotify.h"
#include "upgrade.h"
#include "worker.h"

#ifndef WALUA_VERSION
#define WALUA_VERSION "unknown"
#endif

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: walua serve [-c FILE]        run the daemon\n"
	    "       walua check [-c FILE]        check the config and compile "
	    "every handler\n"
	    "       walua run SCRIPT [ARGS...]   run an admin script\n"
	    "       walua version | --help\n"
	    "\n"
	    "FILE defaults to ./%s when present, else the built-in demo.\n"
	    "serve: SIGHUP reloads the handlers and config; SIGTERM or SIGINT\n"
	    "stops after finishing queued events; SIGUSR1 reopens log_file;\n"
	    "SIGUSR2 starts the binary again and hands the listening sockets\n"
	    "and the database over to it (an upgrade that refuses nothing).\n"
	    "Sockets passed by systemd (LISTEN_FDS) are served instead of\n"
	    "binding listen (the first) and admin_listen (a second).\n",
	    config_default_file());
}

/* -c FILE, else ./walua.conf.lua when present, else NULL (the demo). */
static int
config_arg(int argc, char **argv, const char **file)
{
	int	i;

	*file = NULL;
	for (i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			*file = argv[++i];
		else {
			fprintf(stderr, "walua: unexpected argument '%s'\n",
			    argv[i]);
			usage(stderr);
			return -1;
		}
	}
	if (*file == NULL && access(config_default_file(), F_OK) == 0)
		*file = config_default_file();
	return 0;
}

/*
 * walua check: load the config and each handler script into a state built
 * exactly as a worker builds its own (worker_state).
 */
static int
cmd_check(const char *file)
{
	struct config	*cfg;
	struct lhost	*h;
	struct buf	 src = { 0 };
	char		 err[8192];
	int		 i, bad = 0;

	if ((cfg = config_load(file, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if ((h = worker_state(cfg, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return 1;
	}
	for (i = 0; i < cfg->nhandlers; i++) {
		if (luasrc_read(cfg->handlers[i], &src, err, sizeof(err)) == -1 ||
		    lhost_load(h, cfg->handlers[i], src.data, src.len,
		    cfg->limits.handler_timeout_ms, err,
		    sizeof(err)) != 0) {
			fprintf(stderr, "%s\n", err);
			bad = 1;
		}
	}
	buf_free(&src);
	lhost_free(h);
	lb_store_close();
	if (!bad && cfg->warnings != NULL && cfg->warnings[0] != '\0')
		fprintf(stderr, "%s\n", cfg->warnings);
	config_free(cfg);
	if (bad)
		return 1;
	printf("configuration ok\n");
	return 0;
}

/* Serve until stopped; free everything.  The pool and inbox are up. */
static int
serve_http(struct config *cfg)
{
	char	err[1024];
	int	rc;

	if (httpd_start(cfg, err, sizeof(err)) == -1) {
		log_kv(LOG_ERROR, "cannot start the HTTP server", "error", err,
		    NULL);
		config_put(cfg);
		rc = 1;
		kill(getpid(), SIGTERM);
		pool_run(NULL);
	} else {
		log_kv(LOG_INFO, "listening", "listen", cfg->listen,
		    "admin_listen", cfg->admin_listen, NULL);
		sd_notify_msg("READY=1");
		config_put(cfg);
		rc = pool_run(httpd_stop);
	}
	event_shutdown();
	oauth_shutdown();
	inbox_close();		/* writes the last outcomes */
	pool_free();
	config_set_current(NULL);
	queue_free();
	metrics_free();
	return rc;
}

/*
 * The new binary of an upgrade (upgrade.c): workers first, then "ready",
 * then the database once the walua before has let it go (it finishes its
 * queued events first: bounded by its limits.shutdown_timeout_ms), then
 * the inherited sockets.  Until then the kernel queues new connections.
 */
static int
serve_upgraded(const char *file, struct config *cfg, const char *pid)
{
	char	err[1024];
	int	wait_ms = cfg->limits.shutdown_timeout_ms + 30000;

	log_kv(LOG_INFO, "starting (upgrade)", "version", WALUA_VERSION,
	    "config", file ? file : "built-in demo", "listen", cfg->listen,
	    "#pid", pid, NULL);
	cfg->refs++;		/* the pool's generation keeps one */
	if (pool_start(file, cfg) == -1) {
		config_put(cfg);
		pool_free();
		queue_free();
		return 1;
	}
	upgrade_say_ready();
	if (upgrade_lock(cfg->database, wait_ms, err, sizeof(err)) == -1 ||
	    inbox_open(cfg, err, sizeof(err)) == -1) {
		log_kv(LOG_ERROR, "cannot open the inbox", "error", err, NULL);
		config_put(cfg);
		kill(getpid(), SIGTERM);
		pool_run(NULL);
		pool_free();
		queue_free();
		return 1;
	}
	return serve_http(cfg);
}

/*
 * Every event passes from thread to thread and process to process (HTTP
 * thread, inbox writer, supervisor, handler worker, writer again), each
 * waking the next.  Under the default policy a thread woken that way
 * preempts the one that woke it, which has not finished its turn: on a
 * busy core the hand-offs then go one event at a time, each a context
 * switch.  SCHED_BATCH lets the running thread finish and the next one
 * take a batch (on one core, 3.5 times fewer wake-ups of the supervisor
 * and 5 to 6 us less CPU per event: tests/bench/RESULTS.md).
 * Set before any thread or worker starts, which inherit it; a policy the
 * operator chose (chrt, systemd's CPUSchedulingPolicy=) is kept.
 * Returns the policy walua runs under, for the log.
 */
static const char *
batch_scheduling(void)
{
	struct sched_param	sp = { 0 };

	switch (sched_getscheduler(0)) {
	case SCHED_OTHER:
		if (sched_setscheduler(0, SCHED_BATCH, &sp) == 0)
			return "batch";
		log_msg(LOG_WARN, "cannot set SCHED_BATCH: %s",
		    strerror(errno));
		return "other";
	case SCHED_BATCH:
		return "batch";
	case SCHED_IDLE:
		return "idle";
	case SCHED_FIFO:
		return "fifo";
	case SCHED_RR:
		return "rr";
	default:
		return "other";
	}
}

static int
cmd_serve(const char *file)
{
	struct config	*cfg;
	char		 err[8192], pid[16];
	const char	*sched;

	if ((cfg = config_load(file, err, sizeof(err))) == NULL) {
		log_kv(LOG_ERROR, "cannot load configuration", "error", err,
		    NULL);
		return 1;
	}
	log_set_level(cfg->log_level);
	if (cfg->log_file != NULL && log_open(cfg->log_file) == -1) {
		fprintf(stderr, "walua: cannot open log file '%s': %s\n",
		    cfg->log_file, strerror(errno));
		config_free(cfg);
		return 1;
	}
	sched = batch_scheduling();
	if (queue_init() == -1) {
		log_msg(LOG_ERROR, "cannot create the queue: %s",
		    strerror(errno));
		config_free(cfg);
		return 1;
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	/*
	 * Started by an upgrade: load the handlers first, say ready, then
	 * wait for the walua before to finish and release the database.
	 */
	if (upgrade_is_new())
		return serve_upgraded(file, cfg, pid);
	if (upgrade_lock(cfg->database, 0, err, sizeof(err)) == -1 ||
	    inbox_open(cfg, err, sizeof(err)) == -1) {
		log_kv(LOG_ERROR, "cannot open the inbox", "error", err, NULL);
		queue_free();
		config_free(cfg);
		return 1;
	}
	log_kv(LOG_INFO, "starting", "version", WALUA_VERSION, "config",
	    file ? file : "built-in demo", "listen", cfg->listen, "#pid", pid,
	    "scheduling", sched, NULL);
	cfg->refs++;		/* the pool's generation keeps one */
	if (pool_start(file, cfg) == -1) {
		config_put(cfg);
		pool_free();
		inbox_close();
		queue_free();
		return 1;
	}
	return serve_http(cfg);
}

int
main(int argc, char **argv)
{
	const char	*file;

	upgrade_init(argv);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "__worker") == 0)
		return worker_main();
	if (strcmp(argv[1], "version") == 0 ||
	    strcmp(argv[1], "--version") == 0) {
		printf("walua %s\n", WALUA_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "serve") == 0) {
		if (config_arg(argc, argv, &file) == -1)
			return 2;
		return cmd_serve(file);
	}
	if (strcmp(argv[1], "check") == 0) {
		if (config_arg(argc, argv, &file) == -1)
			return 2;
		return cmd_check(file);
	}
	if (strcmp(argv[1], "run") == 0)
		return run_main(argc - 1, argv + 1);
	fprintf(stderr, "walua: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
