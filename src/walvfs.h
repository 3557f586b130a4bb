/*
 * walvfs.h - SQLite's unix VFS, with a commit's WAL appends and a
 * checkpoint's page copies gathered into few writes.
 */
#ifndef WALVFS_H
#define WALVFS_H

#define WALVFS_NAME	"walua"

int	walvfs_register(void);

#endif
