/* store/shared_private.h: what the files of the store's API share, and nothing else includes. The
 * handle and the engines' vtable are in store_private.h; the typed API for the library's other
 * modules is store_internal.h. Each group below names the file that defines it:
 *
 *   shared.c   argument checks, single-value row readers, the JSON check
 *   batch.c    implicit transactions (join the open batch, or run in one of their own)
 *   types.c    the per-handle cache of resource types and their tables
 *   locks.c    what opening and runs need of the endpoint locks
 *   quarantine.c  the quarantine's insert inside a transaction
 *   views.c    keeping the views current, as the writes of resources need it
 *
 * Internal: prefix fs_store_; nothing here is exported. */
#ifndef FS_STORE_SHARED_PRIVATE_H
#define FS_STORE_SHARED_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store_private.h"

/* ---- shared.c -------------------------------------------------------------------------------- */

/* FHIRSYNC_E_NOMEM with its message. */
fhirsync_code fs_store_nomem(fhirsync_error *err);
/* Whether a type name collides with an internal table (SQLite ignores case). */
bool fs_store_reserved_type(const char *name);
/* FHIRSYNC_E_ARG unless `type` is a resource type name that is not reserved. */
fhirsync_code fs_store_check_type(const char *type, fhirsync_error *err);
/* FHIRSYNC_E_ARG for no store or a read-only one. */
fhirsync_code fs_store_check_writable(fhirsync_store *s, fhirsync_error *err);
/* FHIRSYNC_E_ARG when a batch is open: `what` must not run inside one. */
fhirsync_code fs_store_check_outside_batch(fhirsync_store *s, const char *what,
                                           fhirsync_error *err);
/* Whether a text is a JSON object (or with any_value, any JSON value). */
bool fs_store_is_json(const char *text, bool any_value);
/* A number, or 0 for NULL or not a number. */
int64_t fs_store_int_or_zero(const char *value);

/* Row readers (fs_sql_row_fn) of the first row only: its first column as an int64_t
 * (userdata: int64_t *), its first two (int64_t[2]), or that there is a row (bool *). */
int fs_store_row_int(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                     const char *const *names);
int fs_store_row_two(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                     const char *const *names);
int fs_store_row_exists(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                        const char *const *names);
/* Run a statement returning one text value into *out (the caller's; NULL when no row or NULL). */
fhirsync_code fs_store_query_string(fhirsync_store *s, const char *sql, const fs_sql_value *params,
                                    int n, char **out, fhirsync_error *err);

/* ---- batch.c --------------------------------------------------------------------------------- */

/* Join the open batch, or begin a transaction of our own (*own). */
fhirsync_code fs_store_tx_open(fhirsync_store *s, bool *own, fhirsync_error *err);
/* End what fs_store_tx_open began: commit on success, roll back on failure. In a batch, a
 * database error (or a conflict) makes the batch unusable. Returns the outcome. */
fhirsync_code fs_store_tx_close(fhirsync_store *s, bool own, fhirsync_code rc, fhirsync_error *err);

/* ---- types.c --------------------------------------------------------------------------------- */

/* The cache entry of a type (added when new). NULL on out of memory. */
fs_store_type *fs_store_type_entry(fhirsync_store *s, const char *name, size_t len);
/* Whether the table of t exists (asking the registry once per handle). */
fhirsync_code fs_store_type_exists(fhirsync_store *s, fs_store_type *t, bool *exists,
                                   fhirsync_error *err);
/* Create t's table when missing; inside the caller's transaction. */
fhirsync_code fs_store_ensure_in_tx(fhirsync_store *s, fs_store_type *t, fhirsync_error *err);
/* Whether a type's table exists (a name that cannot be a resource type has none). */
fhirsync_code fs_store_table_of(fhirsync_store *s, const char *type, bool *exists,
                                fhirsync_error *err);

/* The types that have a table. */
typedef struct fs_store_type_list {
    char (*names)[FS_STORE_TYPE_MAX + 1];
    size_t count, cap;
    bool nomem;
} fs_store_type_list;

/* Every type with a table, sorted, Patient first when `patient_first`. Free l->names with
 * fs_free. */
fhirsync_code fs_store_list_types(fhirsync_store *s, bool patient_first, fs_store_type_list *l,
                                  fhirsync_error *err);

/* ---- quarantine.c ---------------------------------------------------------------------------- */

/* fhirsync_store_quarantine's insert, inside the caller's transaction. */
fhirsync_code fs_store_quarantine_in_tx(fhirsync_store *s, const fhirsync_quarantine_entry *entry,
                                        fhirsync_error *err);

/* ---- views.c (what the store's API files need; the engines' part is in store_private.h) ----- */

/* Read the view registry once per transaction (inside it; PostgreSQL: sharing the views lock),
 * reloading the views when it changed. Every transaction that writes resources calls it first. */
fhirsync_code fs_store_views_ready(fhirsync_store *s, fhirsync_error *err);
/* A resource of t was stored (inserted or replaced): recompute its rows in every view of t (its
 * old rows deleted first unless `inserted`: an id new to the store has none). A resource a view
 * cannot evaluate is quarantined for that view; only database failures are returned. */
fhirsync_code fs_store_views_put(fhirsync_store *s, fs_store_type *t, const char *id, size_t id_len,
                                 const char *line, size_t len, int64_t run_id, bool inserted,
                                 fhirsync_error *err);
/* A resource of t was deleted: remove its rows from every view of t. */
fhirsync_code fs_store_views_delete(fhirsync_store *s, fs_store_type *t, const char *id,
                                    fhirsync_error *err);
/* Resources of t are about to be deleted: remove the rows of those `ids_sql` selects (an SQL
 * query of one column, with `n` parameters) from every view of t. */
fhirsync_code fs_store_views_delete_ids(fhirsync_store *s, fs_store_type *t, const char *ids_sql,
                                        const fs_sql_value *params, int n, fhirsync_error *err);
/* Whether a view's table has this name, ignoring case (a resource type must not take it). */
bool fs_store_views_name_taken(const fhirsync_store *s, const char *name);
/* Free the loaded views (closing the handle). */
void fs_store_views_unload(fhirsync_store *s);

/* ---- locks.c --------------------------------------------------------------------------------- */

/* Whether this handle holds the lock of `endpoint`. */
bool fs_store_holds_lock(const fhirsync_store *s, const char *endpoint);
/* Release every lock this handle holds (best effort: closing). */
void fs_store_release_locks(fhirsync_store *s);

#endif
