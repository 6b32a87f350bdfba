/*
 * twin_store.c — twins.db, where perch-hub keeps every identity's twin
 * (twin.h): one row per identity with both sections as compact JSON text
 * and their versions. The hub holds all twins in memory and writes a row
 * whenever one changes, before it answers or sends anything about the
 * change; reading happens once, at start. Its own database (not hub.db),
 * so that the message store's writer thread never shares a connection
 * with it. Loop thread only.
 */
#include <stdio.h>
#include <string.h>

#include "perch/alloc.h"
#include "perch/log.h"
#include "twin.h"

#define LOG_MOD "hub.twin"

/*
 * Version 1.
 *   twin   name -> desired and reported sections (JSON objects without
 *          "$version") and their versions (>= 1); updated is the wall-clock
 *          time of the last write, in ms, for people reading the file.
 */
static const char SCHEMA_V1[] = "CREATE TABLE twin(\n"
                                "  name             TEXT PRIMARY KEY,\n"
                                "  desired          TEXT NOT NULL,\n"
                                "  desired_version  INTEGER NOT NULL,\n"
                                "  reported         TEXT NOT NULL,\n"
                                "  reported_version INTEGER NOT NULL,\n"
                                "  updated          INTEGER NOT NULL) WITHOUT ROWID;\n";

/*
 * Version 2.
 *   remote, remote_version: the remote layer of desired (twin.h): the
 *   parent hub's desired properties of the identity and their $version
 *   (0: never synced), or what was PATCHed at this hub's REST API.
 */
static const char SCHEMA_V2[] =
        "ALTER TABLE twin ADD COLUMN remote TEXT NOT NULL DEFAULT '{}';\n"
        "ALTER TABLE twin ADD COLUMN remote_version INTEGER NOT NULL DEFAULT 0;\n";

static const perch_db_migration migrations[] = {
        {1, SCHEMA_V1},
        {2, SCHEMA_V2},
};

static const char SQL_LOAD[] = "SELECT name, desired, desired_version, reported, reported_version,"
                               " remote, remote_version FROM twin";
static const char SQL_SAVE[] =
        "INSERT INTO twin(name, desired, desired_version, reported, reported_version, updated,"
        " remote, remote_version)"
        " VALUES(?1, ?2, ?3, ?4, ?5, CAST(strftime('%s', 'now') AS INTEGER) * 1000, ?6, ?7)"
        " ON CONFLICT(name) DO UPDATE SET desired = ?2, desired_version = ?3,"
        " reported = ?4, reported_version = ?5, updated = excluded.updated, remote = ?6,"
        " remote_version = ?7";
static const char SQL_DELETE[] = "DELETE FROM twin WHERE name = ?1";

struct hub_twin_store {
	perch_db *db;
	char *path;
};

static perch_err open_db(hub_twin_store *s, perch_db_sync sync)
{
	perch_db_options opt = {.sync = sync};
	perch_err err = perch_db_open(s->path, &opt, &s->db);
	if (err == PERCH_OK)
		err = perch_db_migrate(s->db, migrations, sizeof migrations / sizeof *migrations,
		                       NULL);
	return err;
}

perch_err hub_twin_store_open(const char *path, perch_db_sync sync, hub_twin_store **out)
{
	*out = NULL;
	hub_twin_store *s = perch_calloc(1, sizeof *s);
	if (s == NULL)
		return PERCH_ENOMEM;
	s->path = perch_strdup(path);
	if (s->path == NULL) {
		perch_free(s);
		return PERCH_ENOMEM;
	}
	perch_err err = open_db(s, sync);
	if (err == PERCH_ECORRUPT || err == PERCH_EDB || err == PERCH_EIO) {
		perch_db_close(s->db);
		s->db = NULL;
		char moved[4200];
		perch_err merr = perch_db_move_aside(path, moved, sizeof moved);
		if (merr == PERCH_OK) {
			PERCH_ERROR(
			        LOG_MOD,
			        "TWINS LOST: %s is unusable (%s); moved aside to %s; twins start "
			        "again from the deployment (reported properties are gone)",
			        path, perch_strerror(err), moved);
			err = open_db(s, sync);
		} else {
			PERCH_ERROR(LOG_MOD, "%s is unusable (%s) and cannot be moved aside: %s",
			            path, perch_strerror(err), perch_strerror(merr));
		}
	}
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "cannot open the twin store %s: %s", path,
		            perch_strerror(err));
		hub_twin_store_close(s);
		return err;
	}
	*out = s;
	return PERCH_OK;
}

void hub_twin_store_close(hub_twin_store *s)
{
	if (s == NULL)
		return;
	perch_db_close(s->db);
	perch_free(s->path);
	perch_free(s);
}

static perch_err step_err(hub_twin_store *s, int rc, const char *what)
{
	PERCH_ERROR(LOG_MOD, "%s: %s failed: %s", s->path, what,
	            sqlite3_errmsg(perch_db_handle(s->db)));
	return perch_db_err(rc);
}

/* parse_section: a new reference to the object in text, or NULL. */
static json_t *parse_section(const unsigned char *text, int len)
{
	if (text == NULL || len < 0)
		return NULL;
	json_t *v = json_loadb((const char *)text, (size_t)len, 0, NULL);
	if (v != NULL && !json_is_object(v)) {
		json_decref(v);
		v = NULL;
	}
	return v;
}

perch_err hub_twin_store_load(hub_twin_store *s,
                              void (*fn)(void *arg, const char *name, hub_twin *t), void *arg)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(s->db, SQL_LOAD, &st);
	if (err != PERCH_OK)
		return err;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		hub_twin t = {0};
		t.desired = parse_section(sqlite3_column_text(st, 1), sqlite3_column_bytes(st, 1));
		t.reported = parse_section(sqlite3_column_text(st, 3), sqlite3_column_bytes(st, 3));
		t.remote = parse_section(sqlite3_column_text(st, 5), sqlite3_column_bytes(st, 5));
		int64_t dv = sqlite3_column_int64(st, 2), rv = sqlite3_column_int64(st, 4);
		int64_t mv = sqlite3_column_int64(st, 6);
		if (name == NULL || t.desired == NULL || t.reported == NULL || t.remote == NULL ||
		    dv < 1 || rv < 1 || mv < 0) {
			PERCH_WARN(LOG_MOD, "%s: the twin of %s does not parse: skipped", s->path,
			           name != NULL ? name : "(no name)");
			hub_twin_fini(&t);
			continue;
		}
		t.desired_version = (uint64_t)dv;
		t.reported_version = (uint64_t)rv;
		t.remote_version = (uint64_t)mv;
		fn(arg, name, &t);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? PERCH_OK : step_err(s, rc, "reading twins");
}

/* dump: section as compact JSON in a new perch_malloc buffer. */
static char *dump(const json_t *section, size_t *len)
{
	size_t n = json_dumpb(section, NULL, 0, JSON_COMPACT);
	char *buf = perch_malloc(n > 0 ? n : 1);
	if (buf != NULL)
		*len = json_dumpb(section, buf, n, JSON_COMPACT);
	return buf;
}

perch_err hub_twin_store_save(hub_twin_store *s, const char *name, const hub_twin *t)
{
	size_t dl = 0, rl = 0, ml = 0;
	char *d = dump(t->desired, &dl);
	char *r = dump(t->reported, &rl);
	char *m = t->remote != NULL ? dump(t->remote, &ml) : NULL;
	sqlite3_stmt *st = NULL;
	perch_err err = d != NULL && r != NULL && m != NULL ? PERCH_OK : PERCH_ENOMEM;
	if (err == PERCH_OK)
		err = perch_db_stmt(s->db, SQL_SAVE, &st);
	if (err == PERCH_OK) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, d, (int)dl, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)t->desired_version);
		sqlite3_bind_text(st, 4, r, (int)rl, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)t->reported_version);
		sqlite3_bind_text(st, 6, m, (int)ml, SQLITE_STATIC);
		sqlite3_bind_int64(st, 7, (sqlite3_int64)t->remote_version);
		int rc = sqlite3_step(st);
		if (rc != SQLITE_DONE)
			err = step_err(s, rc, "saving a twin");
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	perch_free(d);
	perch_free(r);
	perch_free(m);
	return err;
}

perch_err hub_twin_store_delete(hub_twin_store *s, const char *name)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(s->db, SQL_DELETE, &st);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? PERCH_OK : step_err(s, rc, "deleting a twin");
}

perch_err hub_twin_store_begin(hub_twin_store *s)
{
	return perch_db_begin(s->db);
}

perch_err hub_twin_store_commit(hub_twin_store *s)
{
	return perch_db_commit(s->db);
}

void hub_twin_store_rollback(hub_twin_store *s)
{
	perch_db_rollback(s->db);
}
