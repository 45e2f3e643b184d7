/* store/batch.c: transactions. The public batches (fhirsync_store_begin, _commit, _rollback) and
 * the implicit transaction of every other write (shared_private.h: it joins the open batch, or runs
 * in a transaction of its own). A database error inside a batch makes the batch unusable until it
 * is rolled back; types whose table a rolled-back transaction created are forgotten with it. */
#include "store/shared_private.h"

/* Whether a database error happened in the open batch; fills err when so. */
static bool batch_unusable(fhirsync_store *s, fhirsync_error *err)
{
    if (!s->in_batch || !s->batch_failed)
        return false;
    fs_err(err, FHIRSYNC_E_STORE,
           "an earlier database error made the open batch unusable: roll it back");
    return true;
}

/* Types whose table was created in the transaction that just ended: kept on commit, forgotten
 * (with their statements) on rollback, since the table went with it. */
static void settle_types(fhirsync_store *s, bool committed)
{
    s->views_tx = false; /* the next transaction reads the view registry again */
    for (size_t i = 0; i < s->type_count; i++) {
        fs_store_type *t = &s->types[i];
        if (!t->ensured_in_batch)
            continue;
        t->ensured_in_batch = false;
        if (!committed) {
            t->ensured = false;
            s->ops->forget_type(s, t);
        }
    }
}

static void end_rollback(fhirsync_store *s)
{
    s->ops->rollback(s);
    settle_types(s, false);
}

fhirsync_code fs_store_tx_open(fhirsync_store *s, bool *own, fhirsync_error *err)
{
    *own = false;
    if (s->in_batch)
        return batch_unusable(s, err) ? FHIRSYNC_E_STORE : FHIRSYNC_OK;
    fhirsync_code rc = s->ops->begin(s, err);
    if (rc == FHIRSYNC_OK)
        *own = true;
    return rc;
}

fhirsync_code fs_store_tx_close(fhirsync_store *s, bool own, fhirsync_code rc, fhirsync_error *err)
{
    if (!own) {
        if ((rc == FHIRSYNC_E_STORE || rc == FHIRSYNC_E_CONFLICT) && s->in_batch)
            s->batch_failed = true;
        return rc;
    }
    if (rc == FHIRSYNC_OK) {
        rc = s->ops->commit(s, err);
        settle_types(s, rc == FHIRSYNC_OK);
    } else {
        end_rollback(s);
    }
    return rc;
}

fhirsync_code fhirsync_store_begin(fhirsync_store *store, unsigned flags, fhirsync_error *err)
{
    fhirsync_code rc = fs_store_check_writable(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (store->in_batch)
        return fs_err(err, FHIRSYNC_E_ARG, "a batch is already open");
    rc = store->ops->begin(store, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    store->in_batch = true;
    store->bulk = (flags & FHIRSYNC_STORE_BULK) != 0;
    store->append = store->bulk && (flags & FHIRSYNC_STORE_APPEND) != 0;
    store->batch_failed = false;
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_store_commit(fhirsync_store *store, fhirsync_error *err)
{
    if (!store || !store->in_batch)
        return fs_err(err, FHIRSYNC_E_ARG, "no open batch to commit");
    fhirsync_code rc;
    if (store->batch_failed) {
        batch_unusable(store, err);
        end_rollback(store);
        rc = FHIRSYNC_E_STORE;
    } else {
        rc = store->ops->commit(store, err);
        settle_types(store, rc == FHIRSYNC_OK);
    }
    store->in_batch = store->bulk = store->append = store->batch_failed = false;
    return rc;
}

fhirsync_code fhirsync_store_rollback(fhirsync_store *store, fhirsync_error *err)
{
    (void)err;
    if (!store || !store->in_batch)
        return FHIRSYNC_OK;
    end_rollback(store);
    store->in_batch = store->bulk = store->append = store->batch_failed = false;
    return FHIRSYNC_OK;
}
