/* walvfs.h - SQLite's unix VFS, each commit's WAL appends in one write. */
#ifndef WALVFS_H
#define WALVFS_H

#define WALVFS_NAME	"walua"

int	walvfs_register(void);

#endif
