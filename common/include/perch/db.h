/*
 * db.h — small SQLite helpers shared by the daemons' stores.
 *
 * perch_db wraps one sqlite3 connection opened the way every Perch store
 * wants it: WAL journal, synchronous FULL by default (a commit is on disk
 * when it returns), foreign keys on, a busy timeout, and a cache of prepared
 * statements so that each SQL text is compiled once per connection (the
 * mosquitto/SQLite habit). Schemas are versioned with PRAGMA user_version and
 * moved forward by an ordered list of migrations, each applied in its own
 * transaction; a database written by a newer Perch is refused, not damaged.
 *
 * SQLite result codes are translated to perch_err once, here:
 * SQLITE_FULL -> PERCH_ENOSPC, SQLITE_CORRUPT/NOTADB -> PERCH_ECORRUPT,
 * SQLITE_BUSY/LOCKED -> PERCH_EBUSY, SQLITE_NOMEM -> PERCH_ENOMEM,
 * SQLITE_CONSTRAINT -> PERCH_EEXIST, SQLITE_CANTOPEN/PERM/READONLY ->
 * PERCH_EPERM, SQLITE_IOERR -> PERCH_EIO (PERCH_ENOSPC when the OS said
 * ENOSPC), anything else -> PERCH_EDB.
 *
 * A perch_db is used by one thread at a time (the daemon's loop thread).
 */
#ifndef PERCH_DB_H
#define PERCH_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "perch/err.h"

typedef struct perch_db perch_db;

typedef enum perch_db_sync {
	PERCH_DB_SYNC_FULL = 0, /* default: durable at commit */
	PERCH_DB_SYNC_NORMAL,   /* WAL NORMAL: durable at checkpoint, consistent always */
	PERCH_DB_SYNC_OFF,      /* tests and benchmarks only */
} perch_db_sync;

typedef struct perch_db_options {
	perch_db_sync sync;
	int busy_timeout_ms; /* 0: 5000 */
	int64_t max_pages;   /* 0: no limit; else PRAGMA max_page_count */
	bool read_only;
} perch_db_options;

typedef struct perch_db_migration {
	int version;     /* user_version after this step: 1, 2, 3, ... in order */
	const char *sql; /* one or more statements */
} perch_db_migration;

/*
 * perch_db_open opens (creating if needed, unless read_only) the database at
 * path with opt (NULL for the defaults) and stores a new handle in *out,
 * which the caller closes with perch_db_close. Runs a quick integrity check
 * of the header: a file that is not a database gives PERCH_ECORRUPT.
 * Returns PERCH_OK, PERCH_ENOMEM, PERCH_EPERM, PERCH_ECORRUPT, PERCH_EIO,
 * PERCH_EBUSY or PERCH_EDB; the reason is logged.
 */
PERCH_MUST_USE perch_err perch_db_open(const char *path, const perch_db_options *opt,
                                       perch_db **out);

/* perch_db_close finalises cached statements and closes; NULL is fine. */
void perch_db_close(perch_db *db);

/* perch_db_handle returns the underlying connection (borrowed). */
sqlite3 *perch_db_handle(perch_db *db);

/*
 * perch_db_stmt returns in *out the prepared statement for sql from the
 * cache (compiling it on first use), reset and with its bindings cleared.
 * sql should be a string with static storage (a literal or an embedded .sql
 * file): the cache keys on the pointer and checks the text. The statement is
 * borrowed: do not finalize it, and sqlite3_reset it when done with its rows
 * (a statement left mid-rows holds a read transaction open). Returns PERCH_OK, PERCH_ENOMEM or PERCH_EDB
 * (logged, with SQLite's message).
 */
PERCH_MUST_USE perch_err perch_db_stmt(perch_db *db, const char *sql, sqlite3_stmt **out);

/* perch_db_exec runs one or more statements that return no rows. */
PERCH_MUST_USE perch_err perch_db_exec(perch_db *db, const char *sql);

/* Transactions: BEGIN IMMEDIATE, COMMIT, ROLLBACK (rollback never fails
 * loudly; it is for error paths). */
PERCH_MUST_USE perch_err perch_db_begin(perch_db *db);
PERCH_MUST_USE perch_err perch_db_commit(perch_db *db);
void perch_db_rollback(perch_db *db);

/*
 * perch_db_migrate brings the schema to the last version in steps[0..n-1]
 * (versions must be 1..n in order). Each pending step runs with the version
 * bump in one transaction. A database whose user_version is above n gives
 * PERCH_EUNSUPPORTED (written by a newer Perch). *applied (optional) gets the
 * number of steps run.
 */
PERCH_MUST_USE perch_err perch_db_migrate(perch_db *db, const perch_db_migration *steps, size_t n,
                                          int *applied);

/* perch_db_user_version reads PRAGMA user_version into *version. */
PERCH_MUST_USE perch_err perch_db_user_version(perch_db *db, int *version);

/* perch_db_err translates a SQLite result code (see the header comment). */
perch_err perch_db_err(int rc);

/*
 * perch_db_move_aside renames a damaged database and its -wal and -shm files
 * to "<path>.corrupt-<unix time>" (and -wal/-shm beside it), so a daemon can
 * start clean and the operator keeps the evidence. Writes the new name into
 * moved (cap bytes) if not NULL.
 */
PERCH_MUST_USE perch_err perch_db_move_aside(const char *path, char *moved, size_t cap);

#endif /* PERCH_DB_H */
