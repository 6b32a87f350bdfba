/*
 * db_test.c — unit tests for the SQLite helpers: WAL and synchronous
 * settings, statement cache, migrations (forward, idempotent, failed step
 * rolled back, newer schema refused), full database, damaged file moved aside.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perch/db.h"

static char dir[] = "/tmp/perch-db-test-XXXXXX";
static char path[256];

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof path, "%s/t.db", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static const perch_db_migration steps[] = {
        {1, "CREATE TABLE msg(id INTEGER PRIMARY KEY, body BLOB NOT NULL);"},
        {2, "ALTER TABLE msg ADD COLUMN ttl INTEGER; CREATE INDEX msg_ttl ON msg(ttl);"},
};

static int64_t pragma_int(perch_db *db, const char *sql)
{
	sqlite3_stmt *s;
	assert_int_equal(perch_db_stmt(db, sql, &s), PERCH_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return v;
}

static void test_open_and_migrate(void **state)
{
	(void)state;
	unlink(path);
	perch_db *db;
	assert_int_equal(perch_db_open(path, NULL, &db), PERCH_OK);
	sqlite3_stmt *s;
	assert_int_equal(perch_db_stmt(db, "PRAGMA journal_mode", &s), PERCH_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_reset(s);
	assert_int_equal(pragma_int(db, "PRAGMA synchronous"), 2); /* FULL */
	assert_int_equal(pragma_int(db, "PRAGMA foreign_keys"), 1);
	int applied;
	assert_int_equal(perch_db_migrate(db, steps, 2, &applied), PERCH_OK);
	assert_int_equal(applied, 2);
	int v;
	assert_int_equal(perch_db_user_version(db, &v), PERCH_OK);
	assert_int_equal(v, 2);
	perch_db_close(db);

	/* Reopen: nothing to do. */
	assert_int_equal(perch_db_open(path, NULL, &db), PERCH_OK);
	assert_int_equal(perch_db_migrate(db, steps, 2, &applied), PERCH_OK);
	assert_int_equal(applied, 0);
	/* An older program (knows 1 step) refuses a newer database. */
	assert_int_equal(perch_db_migrate(db, steps, 1, &applied), PERCH_EUNSUPPORTED);
	perch_db_close(db);
}

static void test_failed_migration_rolls_back(void **state)
{
	(void)state;
	unlink(path);
	static const perch_db_migration bad[] = {
	        {1, "CREATE TABLE a(x);"},
	        {2, "CREATE TABLE b(y); CREATE TABLE a(x);"}, /* second half fails */
	};
	perch_db *db;
	assert_int_equal(perch_db_open(path, NULL, &db), PERCH_OK);
	int applied;
	assert_int_equal(perch_db_migrate(db, bad, 2, &applied), PERCH_EDB);
	assert_int_equal(applied, 1);
	int v;
	assert_int_equal(perch_db_user_version(db, &v), PERCH_OK);
	assert_int_equal(v, 1);
	/* b was rolled back with the failed step. */
	assert_int_equal(perch_db_exec(db, "SELECT * FROM b"), PERCH_EDB);
	perch_db_close(db);
}

static void test_statement_cache(void **state)
{
	(void)state;
	unlink(path);
	perch_db *db;
	assert_int_equal(perch_db_open(path, NULL, &db), PERCH_OK);
	assert_int_equal(perch_db_migrate(db, steps, 2, NULL), PERCH_OK);
	static const char ins[] = "INSERT INTO msg(body, ttl) VALUES(?, ?)";
	sqlite3_stmt *a, *b;
	assert_int_equal(perch_db_stmt(db, ins, &a), PERCH_OK);
	for (int i = 0; i < 40; i++) {
		assert_int_equal(perch_db_stmt(db, ins, &b), PERCH_OK);
		assert_ptr_equal(a, b);
		sqlite3_bind_blob(b, 1, "x", 1, SQLITE_STATIC);
		sqlite3_bind_int(b, 2, i);
		assert_int_equal(sqlite3_step(b), SQLITE_DONE);
	}
	/* Same text at another address hits the cache too. */
	char copy[sizeof ins];
	memcpy(copy, ins, sizeof ins);
	assert_int_equal(perch_db_stmt(db, copy, &b), PERCH_OK);
	assert_ptr_equal(a, b);
	assert_int_equal(pragma_int(db, "SELECT count(*) FROM msg"), 40);
	assert_int_equal(perch_db_stmt(db, "SELEKT nothing", &b), PERCH_EDB);
	/* A constraint violation maps to PERCH_EEXIST. */
	assert_int_equal(perch_db_exec(db, "INSERT INTO msg(id, body) VALUES(1, 'y')"),
	                 PERCH_EEXIST);
	perch_db_close(db);
}

static void test_full(void **state)
{
	(void)state;
	unlink(path);
	perch_db_options opt = {.max_pages = 8};
	perch_db *db;
	assert_int_equal(perch_db_open(path, &opt, &db), PERCH_OK);
	assert_int_equal(perch_db_migrate(db, steps, 2, NULL), PERCH_OK);
	perch_err err = PERCH_OK;
	for (int i = 0; i < 200 && err == PERCH_OK; i++)
		err = perch_db_exec(db, "INSERT INTO msg(body) VALUES(zeroblob(1000))");
	assert_int_equal(err, PERCH_ENOSPC);
	/* What was committed stays; deleting frees space. */
	assert_true(pragma_int(db, "SELECT count(*) FROM msg") > 0);
	assert_int_equal(perch_db_exec(db, "DELETE FROM msg"), PERCH_OK);
	assert_int_equal(perch_db_exec(db, "INSERT INTO msg(body) VALUES(zeroblob(1000))"),
	                 PERCH_OK);
	perch_db_close(db);
}

static void test_corrupt_moved_aside(void **state)
{
	(void)state;
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("this is not a database, it is a text file that is long enough to have a header", f);
	fclose(f);
	unlink(strcat(strcpy((char[300]){0}, path), "-wal"));
	perch_db *db;
	assert_int_equal(perch_db_open(path, NULL, &db), PERCH_ECORRUPT);
	assert_null(db);
	char moved[512];
	assert_int_equal(perch_db_move_aside(path, moved, sizeof moved), PERCH_OK);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(access(moved, F_OK), 0);
	assert_non_null(strstr(moved, ".corrupt-"));
	assert_int_equal(perch_db_open(path, NULL, &db), PERCH_OK);
	perch_db_close(db);
	perch_db_options ro = {.read_only = true};
	char missing[300];
	snprintf(missing, sizeof missing, "%s/missing.db", dir);
	assert_int_equal(perch_db_open(missing, &ro, &db), PERCH_EPERM);
}

static void test_err_map(void **state)
{
	(void)state;
	assert_int_equal(perch_db_err(SQLITE_OK), PERCH_OK);
	assert_int_equal(perch_db_err(SQLITE_FULL), PERCH_ENOSPC);
	assert_int_equal(perch_db_err(SQLITE_IOERR_WRITE), PERCH_EIO);
	assert_int_equal(perch_db_err(SQLITE_CORRUPT), PERCH_ECORRUPT);
	assert_int_equal(perch_db_err(SQLITE_NOTADB), PERCH_ECORRUPT);
	assert_int_equal(perch_db_err(SQLITE_BUSY_SNAPSHOT), PERCH_EBUSY);
	assert_int_equal(perch_db_err(SQLITE_NOMEM), PERCH_ENOMEM);
	assert_int_equal(perch_db_err(SQLITE_MISUSE), PERCH_EDB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_open_and_migrate),
	        cmocka_unit_test(test_failed_migration_rolls_back),
	        cmocka_unit_test(test_statement_cache),
	        cmocka_unit_test(test_full),
	        cmocka_unit_test(test_corrupt_moved_aside),
	        cmocka_unit_test(test_err_map),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
