/*
 * state.c — what perch-agent keeps across reboots and kill -9, in
 * DATA_DIR/agent.db (SQLite, WAL, synchronous FULL, mode 0600 because the
 * manifest text holds registry passwords):
 *
 *   deployment   the raw text of the last manifest applied (one row), so a
 *                device with no network and no manifest file brings the same
 *                modules back;
 *   meta         lastDesiredVersion;
 *   module_state restart bookkeeping per module name: restartCount,
 *                lastRestartTimeUtc, restarts in a row, next try;
 *   module_identity the generation id of each deployed module
 *                (IOTEDGE_MODULEGENERATIONID): made when the module first
 *                appears, kept while it stays deployed, forgotten when a
 *                deployment without it is applied.
 *
 * Every write is one statement (its own transaction): a kill -9 loses at
 * most the write in progress, never consistency.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "perch/alloc.h"
#include "perch/log.h"

static const perch_db_migration migrations[] = {
        {1, "CREATE TABLE deployment(id INTEGER PRIMARY KEY CHECK (id = 1),"
            " manifest BLOB NOT NULL, applied_ms INTEGER NOT NULL);"
            "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "CREATE TABLE module_state(name TEXT PRIMARY KEY,"
            " restart_count INTEGER NOT NULL, last_restart_ms INTEGER NOT NULL,"
            " backoff_n INTEGER NOT NULL, next_try_ms INTEGER NOT NULL);"},
        {2, "CREATE TABLE module_identity(name TEXT PRIMARY KEY,"
            " generation_id TEXT NOT NULL, created_ms INTEGER NOT NULL);"},
};

static const char SQL_SAVE_MANIFEST[] =
        "INSERT OR REPLACE INTO deployment(id, manifest, applied_ms) VALUES (1, ?, ?)";
static const char SQL_LOAD_MANIFEST[] = "SELECT manifest FROM deployment WHERE id = 1";
static const char SQL_SAVE_VERSION[] =
        "INSERT OR REPLACE INTO meta(key, value) VALUES ('desired_version', ?)";
static const char SQL_LOAD_VERSION[] = "SELECT value FROM meta WHERE key = 'desired_version'";
static const char SQL_SAVE_MOD[] =
        "INSERT OR REPLACE INTO module_state(name, restart_count, last_restart_ms, backoff_n,"
        " next_try_ms) VALUES (?, ?, ?, ?, ?)";
static const char SQL_LOAD_GENID[] = "SELECT generation_id FROM module_identity WHERE name = ?";
static const char SQL_SAVE_GENID[] =
        "INSERT INTO module_identity(name, generation_id, created_ms) VALUES (?, ?, ?)";
static const char SQL_LIST_GENID[] = "SELECT name FROM module_identity";
static const char SQL_DROP_GENID[] = "DELETE FROM module_identity WHERE name = ?";
static const char SQL_LOAD_MOD[] = "SELECT restart_count, last_restart_ms, backoff_n, next_try_ms"
                                   " FROM module_state WHERE name = ?";

perch_err agent_state_open(agent *a)
{
	char path[AGENT_PATH_MAX];
	if (mkdir(a->cfg.data_dir, 0700) != 0 && errno != EEXIST) {
		PERCH_ERROR("agent", "cannot create data dir %s: %s", a->cfg.data_dir,
		            strerror(errno));
		return perch_err_from_errno(errno);
	}
	if ((size_t)snprintf(path, sizeof path, "%s/agent.db", a->cfg.data_dir) >= sizeof path)
		return PERCH_ETOOBIG;
	/* Create the file owner-only before SQLite does: it will hold passwords. */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	perch_err err = perch_db_open(path, NULL, &a->db);
	if (err == PERCH_ECORRUPT) {
		char moved[AGENT_PATH_MAX];
		if (perch_db_move_aside(path, moved, sizeof moved) == PERCH_OK)
			PERCH_WARN("agent", "agent.db was damaged: moved aside to %s", moved);
		err = perch_db_open(path, NULL, &a->db);
	}
	if (err != PERCH_OK)
		return err;
	err = perch_db_migrate(a->db, migrations, sizeof migrations / sizeof migrations[0], NULL);
	if (err != PERCH_OK)
		return err;
	sqlite3_stmt *st;
	if (perch_db_stmt(a->db, SQL_LOAD_VERSION, &st) == PERCH_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			a->desired_version = sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
	}
	return PERCH_OK;
}

void agent_state_close(agent *a)
{
	perch_db_close(a->db);
	a->db = NULL;
}

static perch_err step_done(perch_db *db, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		PERCH_ERROR("agent", "agent.db write failed: %s",
		            sqlite3_errmsg(perch_db_handle(db)));
		return perch_db_err(rc);
	}
	return PERCH_OK;
}

perch_err agent_state_save_manifest(agent *a, const char *text, size_t len)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(a->db, SQL_SAVE_MANIFEST, &st);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_blob(st, 1, text, (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, agent_now_ms());
	return step_done(a->db, st);
}

perch_err agent_state_load_manifest(agent *a, char **text, size_t *len)
{
	sqlite3_stmt *st;
	*text = NULL;
	perch_err err = perch_db_stmt(a->db, SQL_LOAD_MANIFEST, &st);
	if (err != PERCH_OK)
		return err;
	err = PERCH_ENOENT;
	if (sqlite3_step(st) == SQLITE_ROW) {
		const void *p = sqlite3_column_blob(st, 0);
		int n = sqlite3_column_bytes(st, 0);
		*text = perch_memdup0(p != NULL ? p : "", (size_t)n);
		*len = (size_t)n;
		err = *text != NULL ? PERCH_OK : PERCH_ENOMEM;
	}
	sqlite3_reset(st);
	return err;
}

perch_err agent_state_save_version(agent *a)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(a->db, SQL_SAVE_VERSION, &st);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_int64(st, 1, a->desired_version);
	return step_done(a->db, st);
}

perch_err agent_state_save_mod(agent *a, const agent_mod *m)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(a->db, SQL_SAVE_MOD, &st);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, m->restart_count);
	sqlite3_bind_int64(st, 3, m->restart_ms);
	sqlite3_bind_int64(st, 4, m->backoff_n);
	sqlite3_bind_int64(st, 5, m->next_try_ms);
	return step_done(a->db, st);
}

void agent_state_load_mod(agent *a, agent_mod *m)
{
	sqlite3_stmt *st;
	if (perch_db_stmt(a->db, SQL_LOAD_MOD, &st) != PERCH_OK)
		return;
	sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		m->restart_count = (uint32_t)sqlite3_column_int64(st, 0);
		m->restart_ms = sqlite3_column_int64(st, 1);
		m->backoff_n = (uint32_t)sqlite3_column_int64(st, 2);
		m->next_try_ms = sqlite3_column_int64(st, 3);
	}
	sqlite3_reset(st);
}

perch_err agent_state_genid(agent *a, agent_mod *m)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(a->db, SQL_LOAD_GENID, &st);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
	bool found = false;
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *g = (const char *)sqlite3_column_text(st, 0);
		if (g != NULL && strlen(g) == AGENT_GENID_LEN) {
			memcpy(m->genid, g, AGENT_GENID_LEN + 1);
			found = true;
		}
	}
	sqlite3_reset(st);
	if (found)
		return PERCH_OK;
	unsigned char raw[AGENT_GENID_LEN / 2];
	if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
		return PERCH_EIO;
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < sizeof raw; i++) {
		m->genid[2 * i] = hex[raw[i] >> 4];
		m->genid[2 * i + 1] = hex[raw[i] & 15];
	}
	m->genid[AGENT_GENID_LEN] = '\0';
	if ((err = perch_db_stmt(a->db, SQL_DROP_GENID, &st)) != PERCH_OK)
		return err;
	sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
	if ((err = step_done(a->db, st)) != PERCH_OK)
		return err;
	if ((err = perch_db_stmt(a->db, SQL_SAVE_GENID, &st)) != PERCH_OK)
		return err;
	sqlite3_bind_text(st, 1, m->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, m->genid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, agent_now_ms());
	err = step_done(a->db, st);
	if (err == PERCH_OK)
		PERCH_INFO("agent", "module %s: new generation id %s", m->name, m->genid);
	return err;
}

perch_err agent_state_genid_prune(agent *a)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(a->db, SQL_LIST_GENID, &st);
	if (err != PERCH_OK)
		return err;
	/* Collect first: the list statement must be done before deleting. */
	char(*gone)[AGENT_MANIFEST_MAX_NAME + 1] = NULL;
	size_t n = 0, cap = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		if (name == NULL || agent_mod_find(a, name) != NULL)
			continue;
		void *grown = perch_grow(gone, n, &cap, sizeof *gone, 8);
		if (grown == NULL) {
			err = PERCH_ENOMEM;
			break;
		}
		gone = grown;
		snprintf(gone[n++], sizeof gone[0], "%s", name);
	}
	sqlite3_reset(st);
	for (size_t i = 0; i < n && err == PERCH_OK; i++) {
		if ((err = perch_db_stmt(a->db, SQL_DROP_GENID, &st)) != PERCH_OK)
			break;
		sqlite3_bind_text(st, 1, gone[i], -1, SQLITE_STATIC);
		err = step_done(a->db, st);
		if (err == PERCH_OK)
			PERCH_INFO("agent",
			           "module %s: removed from the deployment, generation id "
			           "forgotten",
			           gone[i]);
	}
	perch_free(gone);
	return err;
}
