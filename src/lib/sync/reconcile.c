/* sync/reconcile.c: the reconciliation of a complete full export, shared by the single-process
 * bulk run (bulk.c, in its final commit) and the workers' finalising item (worker.c, in the
 * transaction that ends their run). Every stored row of a reconciled type that this endpoint's
 * earlier runs wrote and the export did not return is gone on the server: the store deletes it
 * with a deletion record (reason "full-export"). The rules (docs/sync.md, "Reconciliation"):
 *
 *   types   the _type sent; without _type, every type the endpoint holds or the export returned;
 *           at Patient and Group level only the Patient compartment's types
 *   never   a type with quarantined lines in this run (the caller does not call at all for an
 *           incomplete export)
 *   guard   a type that would lose more than max_share percent of its rows is refused whole:
 *           the run ends partial, the caller says why
 *   warn    resources found gone while the incremental exports since the last full one listed no
 *           deletion: the server likely leaves `deleted` empty
 *
 * The caller says how warnings and each type's deletions reach its run (callbacks), so that both
 * paths report them the same way. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"
#include "store/store_internal.h"
#include "sync/sync_internal.h"

#define DEFAULT_MAX_DELETE_SHARE 50

static void warn(const fs_sync_reconcile_req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void warn(const fs_sync_reconcile_req *r, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->warn)
        r->warn(r->userdata, msg);
}

bool fs_sync_list_add(fs_buf *list, const char *types)
{
    const char *p = types;
    while (p && *p) {
        size_t n = strcspn(p, ",");
        char type[FS_SYNC_TYPE_MAX + 1];
        if (n > 0 && n <= FS_SYNC_TYPE_MAX) {
            memcpy(type, p, n);
            type[n] = '\0';
            if (!fs_sync_list_has(list->data, type) &&
                ((list->len && !fs_buf_append_str(list, ",")) || !fs_buf_append_str(list, type)))
                return false;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return true;
}

int fs_sync_max_delete_share(const fhirsync_sync_options *opts, const fhirsync_endpoint *ep)
{
    int share = opts && opts->max_delete_share > 0 ? opts->max_delete_share
                                                   : (int)fs_endpoint_long(ep, "max_delete_share");
    return share <= 0 || share > 100 ? DEFAULT_MAX_DELETE_SHARE : share;
}

int fs_sync_reconcile_every(const fhirsync_sync_options *opts, const fhirsync_endpoint *ep)
{
    int every = opts && opts->reconcile_every ? opts->reconcile_every
                                              : (int)fs_endpoint_long(ep, "reconcile_every");
    return every == 0 ? -1 : every; /* the profile's 0: never on its own */
}

/* The run's count entry of `type`, NULL when it has none. */
static const fs_sync_count *count_of(const fs_sync_counts *counts, const char *type)
{
    for (size_t i = 0; counts && i < counts->n; i++)
        if (strcmp(counts->items[i].type, type) == 0)
            return &counts->items[i];
    return NULL;
}

fhirsync_code fs_sync_reconcile(const fs_sync_reconcile_req *r, int64_t *reconciled, fs_buf *why,
                                fhirsync_error *err)
{
    *reconciled = 0;
    if (!r->deleted_at) {
        warn(r, "this export has no kick-off or transaction time: deletions are not reconciled "
                "this time (the next full export will)");
        return FHIRSYNC_OK;
    }
    fs_buf list;
    fs_buf_init(&list);
    char **stored = NULL;
    fhirsync_code rc =
        fs_buf_append(&list, "", 0) ? FHIRSYNC_OK : fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc == FHIRSYNC_OK && r->requested && !fs_sync_list_add(&list, r->requested))
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc == FHIRSYNC_OK && !r->requested) {
        /* no _type: every type this endpoint holds, and every type the export returned */
        rc = fs_store_endpoint_types(r->store, r->endpoint, &stored, err);
        for (size_t i = 0; rc == FHIRSYNC_OK && stored[i]; i++)
            if (!fs_sync_list_add(&list, stored[i]))
                rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        if (rc == FHIRSYNC_OK && !fs_sync_list_add(&list, r->exported))
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    const char *p = list.data;
    while (rc == FHIRSYNC_OK && p && *p) {
        size_t n = strcspn(p, ",");
        char type[FS_SYNC_TYPE_MAX + 1];
        snprintf(type, sizeof type, "%.*s", (int)(n < sizeof type ? n : sizeof type - 1), p);
        p += n;
        if (*p == ',')
            p++;
        if (r->level != FHIRSYNC_EXPORT_SYSTEM && !fs_sync_patient_compartment(type))
            continue; /* Patient and Group exports return these only when referenced */
        const fs_sync_count *cnt = count_of(r->counts, type);
        if (cnt && cnt->quarantined > 0) {
            warn(r, "%s is not reconciled: %lld line(s) of it were quarantined in this run", type,
                 (long long)cnt->quarantined);
            continue;
        }
        fs_store_reconcile sr = {.endpoint = r->endpoint,
                                 .type = type,
                                 .first_run = r->first_run,
                                 .run_id = r->run_id,
                                 .deleted_at = r->deleted_at,
                                 .reason = FS_STORE_DELETED_RECONCILED,
                                 .max_share = r->max_share / 100.0,
                                 .force = r->force};
        fs_store_reconcile_result res;
        rc = fs_store_reconcile_type(r->store, &sr, &res, err);
        if (rc != FHIRSYNC_OK)
            break;
        if (res.refused) {
            warn(r,
                 "reconciliation of %s refused: the full export did not return %lld of the %lld "
                 "stored (more than %d%%); nothing of it was deleted. If the server really lost "
                 "them, run again with --allow-mass-delete",
                 type, (long long)res.gone, (long long)res.rows, r->max_share);
            if (!fs_buf_printf(why, "%sreconciliation of %s refused (%lld of %lld gone)",
                               why->len ? "; " : "", type, (long long)res.gone,
                               (long long)res.rows))
                rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
            continue;
        }
        if (res.deleted > 0) {
            *reconciled += res.deleted;
            if (r->deleted && !r->deleted(r->userdata, type, res.deleted))
                rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
        }
    }
    if (rc == FHIRSYNC_OK && *reconciled > 0 && r->incremental_runs > 0 && r->listed_deletions == 0)
        warn(r,
             "the server listed no deletions in the %d incremental export(s) since the last full "
             "one, yet %lld resource(s) were gone: it likely leaves `deleted` empty. fhirsync "
             "finds deletions by a full export every `reconcile_every` runs: lower it to see them "
             "sooner",
             r->incremental_runs, (long long)*reconciled);
    for (size_t i = 0; stored && stored[i]; i++)
        fs_free(stored[i]);
    fs_free(stored);
    fs_buf_free(&list);
    return rc;
}
