/*
 * mhd.h - libmicrohttpd, loaded by the process that serves HTTP.
 *
 * Only the supervisor serves HTTP.  Linked into the binary, libmicrohttpd
 * would be loaded by every worker too, and its start-up sets up GnuTLS
 * there (0.9 MiB of RSS per worker; walua serves plain HTTP and its
 * client speaks OpenSSL).  Files that use libmicrohttpd include this
 * header; its macros turn each MHD_* call into a call through the table
 * mhd_load() fills.
 */
#ifndef MHD_H
#define MHD_H

#include <stddef.h>

#include <microhttpd.h>

#define MHD_FUNCS(X) \
	X(MHD_add_response_header) X(MHD_create_response_from_buffer) \
	X(MHD_destroy_response) X(MHD_get_connection_info) \
	X(MHD_get_connection_values) X(MHD_get_daemon_info) \
	X(MHD_http_unescape) X(MHD_lookup_connection_value) \
	X(MHD_queue_response) X(MHD_quiesce_daemon) \
	X(MHD_run_wait) X(MHD_start_daemon) X(MHD_stop_daemon)

struct mhd_api {
#define MHD_MEMBER(f)	__typeof__(f) *f;
	MHD_FUNCS(MHD_MEMBER)
#undef MHD_MEMBER
};

extern struct mhd_api	mhd_api;

int	mhd_load(char *err, size_t errlen);

#ifndef MHD_LOADER
#define MHD_add_response_header		(mhd_api.MHD_add_response_header)
#define MHD_create_response_from_buffer	(mhd_api.MHD_create_response_from_buffer)
#define MHD_destroy_response		(mhd_api.MHD_destroy_response)
#define MHD_get_connection_info		(mhd_api.MHD_get_connection_info)
#define MHD_get_connection_values	(mhd_api.MHD_get_connection_values)
#define MHD_get_daemon_info		(mhd_api.MHD_get_daemon_info)
#define MHD_http_unescape		(mhd_api.MHD_http_unescape)
#define MHD_lookup_connection_value	(mhd_api.MHD_lookup_connection_value)
#define MHD_queue_response		(mhd_api.MHD_queue_response)
#define MHD_quiesce_daemon		(mhd_api.MHD_quiesce_daemon)
#define MHD_run_wait			(mhd_api.MHD_run_wait)
#define MHD_start_daemon		(mhd_api.MHD_start_daemon)
#define MHD_stop_daemon			(mhd_api.MHD_stop_daemon)
#endif

#endif
