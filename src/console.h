/*
 * console.h - the operator's console: a route of the admin listener (or
 * of listen, when there is no admin listener).  httpd.c asks
 * console_serves() on a request's first call, then hands each later call
 * to console_request(); console_end() frees what the request held.
 */
#ifndef CONSOLE_H
#define CONSOLE_H

#include <stddef.h>

#include "mhd.h"

struct config;

int		 console_serves(const struct config *, const char *url,
		    int admin);
int		 console_begin(void **state);
enum MHD_Result	 console_request(struct MHD_Connection *, const char *url,
		    const char *method, const char *upload,
		    size_t *upload_size, void **state);
void		 console_end(void **state);
void		 console_free(void);

#endif
