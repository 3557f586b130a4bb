/*
 * test_walvfs.c - the VFS that writes a commit's WAL frames at once:
 * fewer write calls than SQLite's own unix VFS, every commit readable by
 * another connection as soon as it returns, and a copy of the files
 * taken then (a kill -9) recovers every commit, including transactions
 * that spilled frames and rewrote them (SQLite rewrites their checksums
 * after the commit frame).
 */
#include "walvfs.h"

#include <stdlib.h>
#include <unistd.h>

#include <sqlite3.h>

#include "unit.h"

static char	dir[] = "/tmp/walua-walvfs-XXXXXX";

static sqlite3 *
open_db(const char *name, const char *vfs)
{
	char	 path[256];
	sqlite3	*h = NULL;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE, vfs) != SQLITE_OK) {
		sqlite3_close(h);
		return NULL;
	}
	sqlite3_busy_timeout(h, 2000);
	if (sqlite3_exec(h, "PRAGMA journal_mode = WAL;"
	    "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;",
	    NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_close(h);
		return NULL;
	}
	return h;
}

static long long
count(sqlite3 *h, const char *sql)
{
	sqlite3_stmt	*st;
	long long	 n = -1;

	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

/* The write system calls this process has made (-1: not counted here). */
static long long
write_calls(void)
{
	FILE		*f = fopen("/proc/self/io", "r");
	char		 line[128];
	long long	 n = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "syscw: %lld", &n) == 1)
			break;
	fclose(f);
	return n;
}

/* Commit one transaction of n rows of size bytes each into h. */
static int
insert(sqlite3 *h, int n, int size)
{
	char	sql[256];

	snprintf(sql, sizeof(sql), "WITH RECURSIVE c(i) AS (SELECT 1 UNION"
	    " ALL SELECT i + 1 FROM c WHERE i < %d) INSERT INTO t(v)"
	    " SELECT randomblob(%d) FROM c", n, size);
	return sqlite3_exec(h, sql, NULL, NULL, NULL);
}

/* Copy file name to name.copy, as a kill -9 would leave it on disk. */
static int
copy(const char *name, const char *to)
{
	char	 a[256], b[256], buf[65536];
	FILE	*in, *out;
	size_t	 n;
	int	 rc = 0;

	snprintf(a, sizeof(a), "%s/%s", dir, name);
	snprintf(b, sizeof(b), "%s/%s", dir, to);
	if ((in = fopen(a, "rb")) == NULL)
		return -1;
	if ((out = fopen(b, "wb")) == NULL) {
		fclose(in);
		return -1;
	}
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		if (fwrite(buf, 1, n, out) != n)
			rc = -1;
	fclose(in);
	if (fclose(out) != 0)
		rc = -1;
	return rc;
}

/* Remove the copies a crash left, its index of the WAL (-shm) with them. */
static void
cleanup_crash(void)
{
	const char	*names[] = { "crash-w.db", "crash-w.db-wal",
	    "crash-w.db-shm" };
	char		 path[256];
	size_t		 i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		(void)unlink(path);
	}
}

/* The rows a copy of the files taken now holds, after its recovery. */
static long long
rows_after_crash(const char *name)
{
	char		 db[64], wal[64], from_wal[64];
	sqlite3		*h;
	long long	 n = -1;

	snprintf(db, sizeof(db), "crash-%s", name);
	snprintf(wal, sizeof(wal), "crash-%s-wal", name);
	snprintf(from_wal, sizeof(from_wal), "%s-wal", name);
	cleanup_crash();
	if (copy(name, db) == -1 || copy(from_wal, wal) == -1)
		return -1;
	if ((h = open_db(db, "unix")) != NULL) {
		if (count(h, "SELECT count(*) FROM pragma_integrity_check"
		    " WHERE integrity_check = 'ok'") == 1)
			n = count(h, "SELECT count(*) FROM t");
		sqlite3_close(h);
	}
	return n;
}

static void
cleanup(void)
{
	const char	*names[] = { "w.db", "w.db-wal", "w.db-shm", "u.db",
	    "u.db-wal", "u.db-shm" };
	char		 path[256];
	size_t		 i;

	cleanup_crash();
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		(void)unlink(path);
	}
	(void)rmdir(dir);
}

int
main(void)
{
	sqlite3		*w, *r, *u;
	long long	 before, ours, theirs;
	int		 i;

	if (mkdtemp(dir) == NULL) {
		printf("FAIL: mkdtemp\n");
		return 1;
	}
	CHECK(walvfs_register() == SQLITE_OK);
	CHECK((w = open_db("w.db", WALVFS_NAME)) != NULL);
	CHECK((u = open_db("u.db", "unix")) != NULL);
	if (w == NULL || u == NULL)
		return UNIT_DONE();
	CHECK(sqlite3_exec(w, "CREATE TABLE t (id INTEGER PRIMARY KEY,"
	    " v BLOB); CREATE INDEX t_v ON t(v)", NULL, NULL, NULL) ==
	    SQLITE_OK);
	CHECK(sqlite3_exec(u, "CREATE TABLE t (id INTEGER PRIMARY KEY,"
	    " v BLOB); CREATE INDEX t_v ON t(v)", NULL, NULL, NULL) ==
	    SQLITE_OK);

	/*
	 * A group commit's worth of rows: fewer than two write calls a
	 * commit (the -shm file's growth is written too), where unix makes
	 * two a frame.
	 */
	before = write_calls();
	for (i = 0; i < 20; i++)
		CHECK(insert(w, 12, 600) == SQLITE_OK);
	ours = write_calls() - before;
	before = write_calls();
	for (i = 0; i < 20; i++)
		CHECK(insert(u, 12, 600) == SQLITE_OK);
	theirs = write_calls() - before;
	if (before == -1)
		printf("skip: no /proc/self/io, write calls not counted\n");
	else {
		printf("write calls for 20 commits: %lld, unix VFS %lld\n",
		    ours, theirs);
		CHECK(ours < 2 * 20 && ours * 3 < theirs);
	}

	/* another connection sees each commit as soon as it returns */
	CHECK((r = open_db("w.db", "unix")) != NULL);
	for (i = 1; r != NULL && i <= 5; i++) {
		CHECK(insert(w, 3, 300) == SQLITE_OK);
		CHECK(count(r, "SELECT count(*) FROM t") == 240 + 3 * i);
	}
	CHECK(rows_after_crash("w.db") == 255);

	/*
	 * A transaction bigger than the page cache spills frames before its
	 * commit and then writes some of those pages again: SQLite
	 * overwrites their frames and rewrites the checksums after the
	 * commit frame, which must reach the file before the commit returns.
	 */
	CHECK(sqlite3_exec(w, "PRAGMA cache_size = 8; BEGIN", NULL, NULL,
	    NULL) == SQLITE_OK);
	CHECK(insert(w, 400, 500) == SQLITE_OK);
	CHECK(sqlite3_exec(w, "UPDATE t SET v = randomblob(400) WHERE id %"
	    " 7 = 0; COMMIT", NULL, NULL, NULL) == SQLITE_OK);
	CHECK(count(r, "SELECT count(*) FROM t") == 655);
	CHECK(rows_after_crash("w.db") == 655);

	/* a WAL this connection did not start: it reads the page size */
	CHECK(sqlite3_close(w) == SQLITE_OK);
	CHECK((w = open_db("w.db", WALVFS_NAME)) != NULL);
	CHECK(w != NULL && insert(w, 5, 700) == SQLITE_OK);
	CHECK(count(r, "SELECT count(*) FROM t") == 660);
	CHECK(rows_after_crash("w.db") == 660);

	/* after a checkpoint the log starts again from its header */
	CHECK(sqlite3_exec(w, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL,
	    NULL) == SQLITE_OK);
	CHECK(insert(w, 5, 700) == SQLITE_OK);
	CHECK(count(r, "SELECT count(*) FROM t") == 665);
	CHECK(rows_after_crash("w.db") == 665);

	sqlite3_close(r);
	sqlite3_close(w);
	sqlite3_close(u);
	cleanup();
	return UNIT_DONE();
}
