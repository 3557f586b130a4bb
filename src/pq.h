/*
 * pq.h - libpq, loaded only when a database URL asks for PostgreSQL.
 *
 * walua on SQLite (the default) never maps libpq and the Kerberos and
 * LDAP libraries it pulls in: about 0.35 MiB of RSS in each process.
 * Files that use libpq include this header; its macros turn each PQ*
 * call into a call through the table pq_load() fills.
 */
#ifndef PQ_H
#define PQ_H

#include <stddef.h>

#include <libpq-fe.h>

#define PQ_FUNCS(X) \
	X(PQbackendPID) X(PQclear) X(PQcmdTuples) X(PQconnectdbParams) \
	X(PQconninfoFree) X(PQconninfoParse) X(PQconsumeInput) \
	X(PQerrorMessage) X(PQexec) X(PQexecParams) X(PQexecPrepared) \
	X(PQfinish) X(PQfname) X(PQfreemem) X(PQftype) X(PQgetisnull) \
	X(PQgetvalue) X(PQnfields) X(PQnotifies) X(PQntuples) X(PQprepare) \
	X(PQresultStatus) X(PQsocket) X(PQstatus) X(PQunescapeBytea)

struct pq_api {
#define PQ_MEMBER(f)	__typeof__(f) *f;
	PQ_FUNCS(PQ_MEMBER)
#undef PQ_MEMBER
};

extern struct pq_api	pq_api;

int	pq_load(char *err, size_t errlen);

#ifndef PQ_LOADER
#define PQbackendPID		(pq_api.PQbackendPID)
#define PQclear			(pq_api.PQclear)
#define PQcmdTuples		(pq_api.PQcmdTuples)
#define PQconnectdbParams	(pq_api.PQconnectdbParams)
#define PQconninfoFree		(pq_api.PQconninfoFree)
#define PQconninfoParse		(pq_api.PQconninfoParse)
#define PQconsumeInput		(pq_api.PQconsumeInput)
#define PQerrorMessage		(pq_api.PQerrorMessage)
#define PQexec			(pq_api.PQexec)
#define PQexecParams		(pq_api.PQexecParams)
#define PQexecPrepared		(pq_api.PQexecPrepared)
#define PQfinish		(pq_api.PQfinish)
#define PQfname			(pq_api.PQfname)
#define PQfreemem		(pq_api.PQfreemem)
#define PQftype			(pq_api.PQftype)
#define PQgetisnull		(pq_api.PQgetisnull)
#define PQgetvalue		(pq_api.PQgetvalue)
#define PQnfields		(pq_api.PQnfields)
#define PQnotifies		(pq_api.PQnotifies)
#define PQntuples		(pq_api.PQntuples)
#define PQprepare		(pq_api.PQprepare)
#define PQresultStatus		(pq_api.PQresultStatus)
#define PQsocket		(pq_api.PQsocket)
#define PQstatus		(pq_api.PQstatus)
#define PQunescapeBytea		(pq_api.PQunescapeBytea)
#endif

#endif
