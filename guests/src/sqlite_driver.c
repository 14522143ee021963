/* rewind guests: the SQLite driver (written for rewind; SQLite itself is
 * compiled from the better-sqlite3 npm package by scripts/fetch-guests.sh).
 *
 * step(input): the first call opens an in-memory database and creates the
 * schema with 2,000 rows; every call runs one frame: a transaction of
 * updates, deletes and inserts chosen by a generator kept in guest memory
 * (seeded once, mixed with the frame's input), then an aggregate query. */
#include <stdint.h>
#include "sqlite3.h"

static sqlite3 *db;
static sqlite3_stmt *upd, *del, *ins, *agg;
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static int64_t next_id;
static int64_t checksum;

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void check(int rc, int want) {
    if (rc != want) __builtin_trap();
}

static void exec(const char *sql) { check(sqlite3_exec(db, sql, 0, 0, 0), SQLITE_OK); }

static sqlite3_stmt *prepare(const char *sql) {
    sqlite3_stmt *s = 0;
    check(sqlite3_prepare_v2(db, sql, -1, &s, 0), SQLITE_OK);
    return s;
}

static void insert_one(void) {
    char name[24];
    uint64_t r = next();
    for (int i = 0; i < 16; i++) name[i] = (char)('a' + (r >> (i * 4) & 15));
    name[16] = 0;
    sqlite3_bind_int64(ins, 1, next_id++);
    sqlite3_bind_text(ins, 2, name, 16, SQLITE_TRANSIENT);
    sqlite3_bind_int64(ins, 3, (int64_t)(next() % 100000));
    check(sqlite3_step(ins), SQLITE_DONE);
    sqlite3_reset(ins);
}

static void setup(void) {
    check(sqlite3_open(":memory:", &db), SQLITE_OK);
    exec("PRAGMA cache_size = -512");
    exec("CREATE TABLE account(id INTEGER PRIMARY KEY, name TEXT NOT NULL, balance INTEGER NOT NULL)");
    exec("CREATE INDEX account_balance ON account(balance)");
    exec("CREATE TABLE ledger(frame INTEGER, total INTEGER, n INTEGER)");
    upd = prepare("UPDATE account SET balance = balance + ?1 WHERE id = ?2");
    del = prepare("DELETE FROM account WHERE id = ?1");
    ins = prepare("INSERT INTO account(id, name, balance) VALUES (?1, ?2, ?3)");
    agg = prepare("SELECT count(*), coalesce(sum(balance), 0) FROM account");
    exec("BEGIN");
    for (int i = 0; i < 2000; i++) insert_one();
    exec("COMMIT");
}

/* wasi-libc's reactor constructors (what `_initialize` runs): called by the
 * first step, so that every state change happens inside a recorded step. */
void __wasm_call_ctors(void);

__attribute__((export_name("step"))) void step(long long input) {
    if (!db) {
        __wasm_call_ctors();
        setup();
    }
    rng ^= (uint64_t)input * 0xD1B54A32D192ED03ull;
    if (rng == 0) rng = 1;
    exec("BEGIN");
    for (int i = 0; i < 60; i++) {
        uint64_t r = next();
        int64_t id = (int64_t)(r % (uint64_t)(next_id ? next_id : 1));
        switch (r >> 60 & 3) {
        case 0:
            sqlite3_bind_int64(del, 1, id);
            check(sqlite3_step(del), SQLITE_DONE);
            sqlite3_reset(del);
            break;
        case 1:
            insert_one();
            break;
        default:
            sqlite3_bind_int64(upd, 1, (int64_t)(next() % 201) - 100);
            sqlite3_bind_int64(upd, 2, id);
            check(sqlite3_step(upd), SQLITE_DONE);
            sqlite3_reset(upd);
            break;
        }
    }
    check(sqlite3_step(agg), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(agg, 0), total = sqlite3_column_int64(agg, 1);
    sqlite3_reset(agg);
    checksum = checksum * 31 + total + n;
    char sql[96];
    sqlite3_snprintf(sizeof sql, sql, "INSERT INTO ledger VALUES (%lld, %lld, %lld)", (long long)next_id,
                     (long long)total, (long long)n);
    exec(sql);
    exec("DELETE FROM ledger WHERE rowid % 64 = 0");
    exec("COMMIT");
}

/* A checksum of every frame's aggregate, for the host's checks. */
__attribute__((export_name("checksum"))) long long get_checksum(void) { return checksum; }
