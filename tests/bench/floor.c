/*
 * floor.c - the benchmark's floor: the least an HTTP server built on
 * libmicrohttpd can do for a webhook.  It reads the whole body (and throws
 * it away) and answers 200 with a short JSON body: no auth, no parsing, no
 * storage.  walua is built on the same library, so the gap between the two
 * is what walua's own work costs.
 *
 *	floor PORT [THREADS]
 *
 * Binds 127.0.0.1:PORT.  THREADS 1 (the default) is MHD's internal
 * polling thread with epoll; more gives a pool of that many epoll threads.
 * Runs until SIGTERM or SIGINT.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if MHD_VERSION < 0x00097002
typedef int mhd_result;
#else
typedef enum MHD_Result mhd_result;
#endif

static const char OK_BODY[] = "{\"ok\":true,\"events\":1,\"duplicates\":0}";
static struct MHD_Response *ok_response;
static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static mhd_result
on_request(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_size, void **state)
{
	static int	 started;

	(void)cls; (void)url; (void)method; (void)version; (void)upload_data;
	if (*state == NULL) {
		/* first call: headers only; ask for the body */
		*state = &started;
		return MHD_YES;
	}
	if (*upload_size != 0) {
		/* a piece of the body: consume it, look at nothing */
		*upload_size = 0;
		return MHD_YES;
	}
	return MHD_queue_response(c, MHD_HTTP_OK, ok_response);
}

int
main(int argc, char **argv)
{
	struct MHD_Daemon	*d;
	struct sockaddr_in	 sa;
	unsigned int		 threads = 1;
	unsigned int		 flags;
	int			 port;

	if (argc < 2 || (port = atoi(argv[1])) <= 0 || port > 65535) {
		fprintf(stderr, "usage: floor PORT [THREADS]\n");
		return 2;
	}
	if (argc > 2 && atoi(argv[2]) > 0)
		threads = (unsigned int)atoi(argv[2]);

	ok_response = MHD_create_response_from_buffer(sizeof(OK_BODY) - 1,
	    (void *)OK_BODY, MHD_RESPMEM_PERSISTENT);
	if (ok_response == NULL ||
	    MHD_add_response_header(ok_response, "Content-Type",
	    "application/json") != MHD_YES)
		return 1;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
	d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
	    MHD_OPTION_THREAD_POOL_SIZE, threads > 1 ? threads : 0,
	    MHD_OPTION_CONNECTION_LIMIT, 1024,
	    MHD_OPTION_CONNECTION_TIMEOUT, 30,
	    MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024,
	    MHD_OPTION_END);
	if (d == NULL) {
		fprintf(stderr, "floor: cannot listen on 127.0.0.1:%d\n", port);
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	fprintf(stderr, "floor: listening on 127.0.0.1:%d (%u thread%s)\n",
	    port, threads, threads > 1 ? "s" : "");
	while (!stop)
		pause();
	MHD_stop_daemon(d);
	MHD_destroy_response(ok_response);
	return 0;
}
