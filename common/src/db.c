/*
 * db.c — SQLite helpers: open with WAL, statement cache, migrations, error
 * translation, moving a damaged database aside (see db.h).
 */
#include "perch/db.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "perch/alloc.h"
#include "perch/log.h"

#define LOG_MOD "db"

struct cached {
	const char *sql;    /* the caller's static text: the key */
	sqlite3_stmt *stmt; /* prepared once, finalised at close */
};

struct perch_db {
	sqlite3 *conn;
	struct cached *cache; /* ncache entries, unordered */
	size_t ncache, capcache;
};

perch_err perch_db_err(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE: return PERCH_OK;
	case SQLITE_FULL: return PERCH_ENOSPC;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB: return PERCH_ECORRUPT;
	case SQLITE_BUSY:
	case SQLITE_LOCKED: return PERCH_EBUSY;
	case SQLITE_NOMEM: return PERCH_ENOMEM;
	case SQLITE_CONSTRAINT: return PERCH_EEXIST;
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
	case SQLITE_AUTH:
	case SQLITE_READONLY: return PERCH_EPERM;
	case SQLITE_IOERR: return PERCH_EIO;
	default: return PERCH_EDB;
	}
}

/* conn_err translates the connection's last error, seeing through an I/O
 * error caused by a full disk. */
static perch_err conn_err(sqlite3 *conn, int rc)
{
	if ((rc & 0xff) == SQLITE_IOERR && sqlite3_system_errno(conn) == ENOSPC)
		return PERCH_ENOSPC;
	return perch_db_err(rc);
}

sqlite3 *perch_db_handle(perch_db *db)
{
	return db->conn;
}

perch_err perch_db_exec(perch_db *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db->conn, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		perch_err err = conn_err(db->conn, rc);
		PERCH_ERROR(LOG_MOD, "%s: %.60s%s", msg ? msg : sqlite3_errstr(rc), sql,
		            strlen(sql) > 60 ? "..." : "");
		sqlite3_free(msg);
		return err;
	}
	return PERCH_OK;
}

static const char *sync_pragma(perch_db_sync s)
{
	switch (s) {
	case PERCH_DB_SYNC_NORMAL: return "PRAGMA synchronous=NORMAL";
	case PERCH_DB_SYNC_OFF: return "PRAGMA synchronous=OFF";
	case PERCH_DB_SYNC_FULL: break;
	}
	return "PRAGMA synchronous=FULL";
}

perch_err perch_db_open(const char *path, const perch_db_options *opt, perch_db **out)
{
	static const perch_db_options defaults = {0};
	if (opt == NULL)
		opt = &defaults;
	*out = NULL;
	perch_db *db = perch_calloc(1, sizeof *db);
	if (db == NULL)
		return PERCH_ENOMEM;
	int flags =
	        opt->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	int rc = sqlite3_open_v2(path, &db->conn, flags | SQLITE_OPEN_NOMUTEX, NULL);
	perch_err err;
	if (rc != SQLITE_OK) {
		err = db->conn ? conn_err(db->conn, rc) : PERCH_ENOMEM;
		PERCH_ERROR(LOG_MOD, "cannot open %s: %s", path,
		            db->conn ? sqlite3_errmsg(db->conn) : "out of memory");
		goto close;
	}
	sqlite3_extended_result_codes(db->conn, 1);
	sqlite3_busy_timeout(db->conn, opt->busy_timeout_ms > 0 ? opt->busy_timeout_ms : 5000);
	/* The first statement reads the header: a file that is not a database
	 * fails here with SQLITE_NOTADB. */
	err = perch_db_exec(db, "PRAGMA foreign_keys=ON");
	if (err == PERCH_OK && !opt->read_only)
		err = perch_db_exec(db, "PRAGMA journal_mode=WAL");
	if (err == PERCH_OK)
		err = perch_db_exec(db, sync_pragma(opt->sync));
	if (err == PERCH_OK && opt->max_pages > 0) {
		char pragma[64];
		snprintf(pragma, sizeof pragma, "PRAGMA max_page_count=%lld",
		         (long long)opt->max_pages);
		err = perch_db_exec(db, pragma);
	}
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "cannot set up %s: %s", path, perch_strerror(err));
		goto close;
	}
	*out = db;
	return PERCH_OK;
close:
	perch_db_close(db);
	return err;
}

void perch_db_close(perch_db *db)
{
	if (db == NULL)
		return;
	for (size_t i = 0; i < db->ncache; i++)
		sqlite3_finalize(db->cache[i].stmt);
	perch_free(db->cache);
	if (db->conn != NULL && sqlite3_close(db->conn) != SQLITE_OK)
		PERCH_ERROR(LOG_MOD, "close: %s", sqlite3_errmsg(db->conn));
	perch_free(db);
}

perch_err perch_db_stmt(perch_db *db, const char *sql, sqlite3_stmt **out)
{
	for (size_t i = 0; i < db->ncache; i++) {
		if (db->cache[i].sql == sql || strcmp(db->cache[i].sql, sql) == 0) {
			sqlite3_stmt *s = db->cache[i].stmt;
			sqlite3_reset(s);
			sqlite3_clear_bindings(s);
			*out = s;
			return PERCH_OK;
		}
	}
	struct cached *c = perch_grow(db->cache, db->ncache, &db->capcache, sizeof *c, 16);
	if (c == NULL)
		return PERCH_ENOMEM;
	db->cache = c;
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v3(db->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
	if (rc != SQLITE_OK) {
		PERCH_ERROR(LOG_MOD, "prepare: %s: %.80s", sqlite3_errmsg(db->conn), sql);
		return conn_err(db->conn, rc);
	}
	db->cache[db->ncache++] = (struct cached){sql, s};
	*out = s;
	return PERCH_OK;
}

perch_err perch_db_begin(perch_db *db)
{
	return perch_db_exec(db, "BEGIN IMMEDIATE");
}

perch_err perch_db_commit(perch_db *db)
{
	return perch_db_exec(db, "COMMIT");
}

void perch_db_rollback(perch_db *db)
{
	if (!sqlite3_get_autocommit(db->conn))
		sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
}

perch_err perch_db_user_version(perch_db *db, int *version)
{
	sqlite3_stmt *s = NULL;
	perch_err err = perch_db_stmt(db, "PRAGMA user_version", &s);
	if (err != PERCH_OK)
		return err;
	int rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		err = conn_err(db->conn, rc);
		sqlite3_reset(s);
		return err;
	}
	*version = sqlite3_column_int(s, 0);
	sqlite3_reset(s);
	return PERCH_OK;
}

perch_err perch_db_migrate(perch_db *db, const perch_db_migration *steps, size_t n, int *applied)
{
	int have = 0;
	perch_err err = perch_db_user_version(db, &have);
	if (applied != NULL)
		*applied = 0;
	if (err != PERCH_OK)
		return err;
	if (have < 0 || (size_t)have > n) {
		PERCH_ERROR(LOG_MOD, "schema version %d is newer than this program knows (%zu)",
		            have, n);
		return PERCH_EUNSUPPORTED;
	}
	for (size_t i = (size_t)have; i < n; i++) {
		if (steps[i].version != (int)i + 1)
			return PERCH_EINTERNAL;
		err = perch_db_begin(db);
		if (err != PERCH_OK)
			return err;
		err = perch_db_exec(db, steps[i].sql);
		if (err == PERCH_OK) {
			char pragma[48];
			snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d", steps[i].version);
			err = perch_db_exec(db, pragma);
		}
		if (err == PERCH_OK)
			err = perch_db_commit(db);
		if (err != PERCH_OK) {
			perch_db_rollback(db);
			PERCH_ERROR(LOG_MOD, "migration to schema version %d failed: %s",
			            steps[i].version, perch_strerror(err));
			return err;
		}
		if (applied != NULL)
			(*applied)++;
	}
	return PERCH_OK;
}

perch_err perch_db_move_aside(const char *path, char *moved, size_t cap)
{
	char dst[4096];
	int w = snprintf(dst, sizeof dst, "%s.corrupt-%lld", path, (long long)time(NULL));
	if (w < 0 || (size_t)w >= sizeof dst - 8)
		return PERCH_ETOOBIG;
	if (rename(path, dst) != 0 && errno != ENOENT)
		return perch_err_from_errno(errno);
	static const char *const sfx[] = {"-wal", "-shm"};
	for (size_t i = 0; i < 2; i++) {
		char a[4096], b[4096 + 8];
		snprintf(a, sizeof a, "%s%s", path, sfx[i]);
		snprintf(b, sizeof b, "%s%s", dst, sfx[i]);
		if (rename(a, b) != 0 && errno != ENOENT)
			return perch_err_from_errno(errno);
	}
	if (moved != NULL)
		snprintf(moved, cap, "%s", dst);
	return PERCH_OK;
}
