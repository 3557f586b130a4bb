/*
 * walvfs.c - a SQLite VFS that writes each commit's WAL frames at once.
 *
 * SQLite appends a WAL frame with two writes, its 24-byte header and then
 * its page, so a group commit of a dozen events costs a few dozen
 * pwrite(2)s, and on a busy inbox those system calls were the largest
 * part of the writer's kernel time.  This VFS is the default one ("unix")
 * with the WAL file's appends gathered: appends that follow one another
 * are kept in a buffer and written as one when the commit is complete.
 *
 * What stays as it was: other connections read only frames the wal-index
 * says are committed, and SQLite updates it after the commit frame's
 * writes return, by which time the buffer is written (an error then fails
 * the commit as a failed pwrite would).  Writes below the end of what was
 * written (a frame a transaction overwrites, the checksums SQLite then
 * rewrites after the commit frame) go to the file at once.  Anything that
 * looks at the file (a read, a sync, its size, a truncation, a file
 * control, the close) writes the buffer first, so SQLite never sees the
 * file other than as its writes left it.
 */
#include "walvfs.h"

#include <stdint.h>
#include <string.h>

#include <sqlite3.h>

#define WAL_FRAME_HDR	24
/*
 * The buffer, allocated at a connection's first write to its WAL: 23
 * frames of 4 KiB pages, more than a group commit of the inbox writes.
 * The unix VFS writes at most 128 KiB in one call (it masks the length),
 * so a flush stays below.
 */
#define WAL_BUF		(96 * 1024)

struct walfile {
	sqlite3_file	 base;		/* our methods */
	sqlite3_file	*real;		/* the unix VFS's file, after us */
	unsigned char	*buf;		/* appends not yet made */
	sqlite3_int64	 off;		/* the file offset of buf[0] */
	size_t		 len;
	sqlite3_int64	 high;		/* the end of what was written */
	sqlite3_int64	 commit_end;	/* the end of a commit frame, or 0 */
	unsigned	 page;		/* the page size, from the WAL header */
};

static sqlite3_vfs	 walvfs;
static sqlite3_vfs	*unixvfs;

static int
flush(struct walfile *f)
{
	int	rc;

	if (f->len == 0)
		return SQLITE_OK;
	rc = f->real->pMethods->xWrite(f->real, f->buf, (int)f->len, f->off);
	f->len = 0;
	return rc;
}

static int
w_close(sqlite3_file *p)
{
	struct walfile	*f = (struct walfile *)p;
	int		 rc = flush(f), rc2;

	rc2 = f->real->pMethods->xClose(f->real);
	sqlite3_free(f->buf);
	f->buf = NULL;
	return rc != SQLITE_OK ? rc : rc2;
}

static int
w_read(sqlite3_file *p, void *out, int amt, sqlite3_int64 off)
{
	struct walfile	*f = (struct walfile *)p;
	int		 rc;

	if (f->len > 0 && off < f->off + (sqlite3_int64)f->len &&
	    off + amt > f->off && (rc = flush(f)) != SQLITE_OK)
		return rc;
	return f->real->pMethods->xRead(f->real, out, amt, off);
}

static unsigned
get32(const unsigned char *p)
{
	return (unsigned)p[0] << 24 | (unsigned)p[1] << 16 |
	    (unsigned)p[2] << 8 | p[3];
}

static int
pass(struct walfile *f, const void *data, int amt, sqlite3_int64 off)
{
	int	rc = flush(f);

	return rc != SQLITE_OK ? rc : f->real->pMethods->xWrite(f->real, data,
	    amt, off);
}

/*
 * A commit frame's header (its "database size" is not zero): note where
 * the frame ends.  That takes the page size, from the WAL header; should
 * it be unreadable, the next write is taken as the frame's end.
 */
static void
note_commit(struct walfile *f, const unsigned char *h, sqlite3_int64 off)
{
	unsigned char	hdr[12];
	unsigned	page;

	if ((h[4] | h[5] | h[6] | h[7]) == 0)
		return;
	if (f->page == 0 && f->real->pMethods->xRead(f->real, hdr,
	    sizeof(hdr), 0) == SQLITE_OK && (page = get32(hdr + 8)) >= 512)
		f->page = page;		/* a WAL this connection did not start */
	f->commit_end = off + WAL_FRAME_HDR + (f->page ? f->page : 1);
}

static int
w_write(sqlite3_file *p, const void *data, int amt, sqlite3_int64 off)
{
	struct walfile	*f = (struct walfile *)p;
	int		 rc;

	if (off == 0) {
		/* a WAL header: the log starts again from its first frame */
		if ((rc = flush(f)) != SQLITE_OK)
			return rc;
		f->high = 0;
		f->page = amt >= 12 ? get32((const unsigned char *)data + 8) :
		    0;
	}
	if (off < f->high)
		return pass(f, data, amt, off);
	if (amt == WAL_FRAME_HDR)
		note_commit(f, data, off);
	if (f->len > 0 && (off != f->off + (sqlite3_int64)f->len ||
	    f->len + (size_t)amt > WAL_BUF) && (rc = flush(f)) != SQLITE_OK)
		return rc;
	if ((size_t)amt > WAL_BUF || (f->buf == NULL &&
	    (f->buf = sqlite3_malloc(WAL_BUF)) == NULL)) {
		/* bigger than the buffer, or no memory for it */
		f->high = off + amt;
		if (f->high >= f->commit_end)
			f->commit_end = 0;
		return pass(f, data, amt, off);
	}
	if (f->len == 0)
		f->off = off;
	memcpy(f->buf + f->len, data, (size_t)amt);
	f->len += (size_t)amt;
	f->high = off + amt;
	if (f->commit_end > 0 && f->high >= f->commit_end) {
		f->commit_end = 0;
		return flush(f);
	}
	return SQLITE_OK;
}

static int
w_truncate(sqlite3_file *p, sqlite3_int64 size)
{
	struct walfile	*f = (struct walfile *)p;
	int		 rc = flush(f);

	if (size < f->high)
		f->high = size;
	return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real,
	    size);
}

static int
w_sync(sqlite3_file *p, int flags)
{
	struct walfile	*f = (struct walfile *)p;
	int		 rc = flush(f);

	return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int
w_size(sqlite3_file *p, sqlite3_int64 *size)
{
	struct walfile	*f = (struct walfile *)p;
	int		 rc = flush(f);

	return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real,
	    size);
}

static int
w_lock(sqlite3_file *p, int level)
{
	struct walfile	*f = (struct walfile *)p;

	return f->real->pMethods->xLock(f->real, level);
}

static int
w_unlock(sqlite3_file *p, int level)
{
	struct walfile	*f = (struct walfile *)p;

	return f->real->pMethods->xUnlock(f->real, level);
}

static int
w_reserved(sqlite3_file *p, int *out)
{
	struct walfile	*f = (struct walfile *)p;

	return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int
w_control(sqlite3_file *p, int op, void *arg)
{
	struct walfile	*f = (struct walfile *)p;
	int		 rc = flush(f);

	return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real,
	    op, arg);
}

static int
w_sector(sqlite3_file *p)
{
	struct walfile	*f = (struct walfile *)p;

	return f->real->pMethods->xSectorSize(f->real);
}

static int
w_device(sqlite3_file *p)
{
	struct walfile	*f = (struct walfile *)p;

	return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/*
 * Version 1 methods: SQLite maps no shared memory and no pages through a
 * WAL file, only through the database file, which stays unix's own.
 */
static const sqlite3_io_methods walfile_methods = {
	1, w_close, w_read, w_write, w_truncate, w_sync, w_size, w_lock,
	w_unlock, w_reserved, w_control, w_sector, w_device,
	NULL, NULL, NULL, NULL, NULL, NULL
};

static int
v_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *p, int flags,
    int *out_flags)
{
	struct walfile	*f = (struct walfile *)p;
	int		 rc;

	(void)vfs;
	if (!(flags & SQLITE_OPEN_WAL))
		return unixvfs->xOpen(unixvfs, name, p, flags, out_flags);
	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	rc = unixvfs->xOpen(unixvfs, name, f->real, flags, out_flags);
	if (rc == SQLITE_OK && f->real->pMethods != NULL)
		f->base.pMethods = &walfile_methods;
	else if (f->real->pMethods != NULL) {
		f->real->pMethods->xClose(f->real);
		f->real->pMethods = NULL;
	}
	return rc;
}

/*
 * Register the VFS under WALVFS_NAME (not as the default).  Returns
 * SQLITE_OK, or SQLite's error when there is no unix VFS to wrap.
 */
int
walvfs_register(void)
{
	if ((unixvfs = sqlite3_vfs_find("unix")) == NULL)
		return SQLITE_ERROR;
	walvfs = *unixvfs;
	walvfs.zName = WALVFS_NAME;
	walvfs.pNext = NULL;
	walvfs.szOsFile = (int)sizeof(struct walfile) + unixvfs->szOsFile;
	walvfs.xOpen = v_open;
	return sqlite3_vfs_register(&walvfs, 0);
}
