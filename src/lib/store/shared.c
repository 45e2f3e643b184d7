/* store/shared.c: small helpers every file of the store uses: the `loaded_at` stamp, the hash of
 * lock keys and index names, quoting a type name (store_private.h, for the engines and the schema
 * too), argument checks and single-value row readers (shared_private.h). It calls no other file of
 * the store, so the engines and schema.c depend on it and on nothing above them. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "json/json.h"
#include "store/shared_private.h"

fhirsync_code fs_store_nomem(fhirsync_error *err)
{
    return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
}

const char *fs_store_loaded_at(fhirsync_store *s)
{
    int64_t now = fs_now();
    if (now != s->loaded_at_epoch || !s->loaded_at[0]) {
        fs_format_instant(now, s->loaded_at, sizeof s->loaded_at);
        s->loaded_at_epoch = now;
    }
    return s->loaded_at;
}

uint64_t fs_store_hash(const char *domain, const char *text)
{
    return fs_fnv1a_str(fs_fnv1a_byte(fs_fnv1a_str(FS_FNV1A_INIT, domain), ':'), text);
}

void fs_store_quote_type(const char *type, char *buf, size_t size)
{
    /* the name was validated: letters only, so quoting needs no escaping */
    snprintf(buf, size, "\"%s\"", type);
}

bool fs_store_reserved_type(const char *name)
{
    return strcasecmp(name, "deletions") == 0 || strcasecmp(name, "quarantine") == 0;
}

fhirsync_code fs_store_check_type(const char *type, fhirsync_error *err)
{
    if (!type || !fs_store_valid_type(type, strlen(type)))
        return fs_err(err, FHIRSYNC_E_ARG,
                      "'%s' is not a resource type name (^[A-Z][A-Za-z]{1,62}$)",
                      type ? type : "(null)");
    if (fs_store_reserved_type(type))
        return fs_err(err, FHIRSYNC_E_ARG, "'%s' is reserved for an internal table", type);
    return FHIRSYNC_OK;
}

fhirsync_code fs_store_check_writable(fhirsync_store *s, fhirsync_error *err)
{
    if (!s)
        return fs_err(err, FHIRSYNC_E_ARG, "no store");
    if (s->flags & FHIRSYNC_STORE_READONLY)
        return fs_err(err, FHIRSYNC_E_ARG, "store %s was opened read-only", s->location);
    return FHIRSYNC_OK;
}

fhirsync_code fs_store_check_outside_batch(fhirsync_store *s, const char *what, fhirsync_error *err)
{
    if (s->in_batch)
        return fs_err(err, FHIRSYNC_E_ARG, "%s must not run inside a batch", what);
    return FHIRSYNC_OK;
}

bool fs_store_is_json(const char *text, bool any_value)
{
    json_t *doc = fs_json_parse(text, strlen(text), !any_value, "JSON", NULL);
    bool ok = doc != NULL;
    json_decref(doc);
    return ok;
}

/* Row callbacks for single values. */
static int row_string(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                      const char *const *names)
{
    (void)names;
    char **out = userdata;
    if (ncols > 0 && values[0] && !*out) {
        *out = fs_strndup(values[0], lengths[0]);
        if (!*out)
            *out = (char *)-1; /* out of memory: told apart below */
    }
    return 1;
}

int fs_store_row_int(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                     const char *const *names)
{
    (void)lengths;
    (void)names;
    long v;
    if (ncols > 0 && values[0] && fs_parse_long(values[0], &v))
        *(int64_t *)userdata = v;
    return 1;
}

int fs_store_row_exists(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                        const char *const *names)
{
    (void)ncols;
    (void)values;
    (void)lengths;
    (void)names;
    *(bool *)userdata = true;
    return 1;
}

int fs_store_row_two(void *userdata, int ncols, const char *const *values, const size_t *lengths,
                     const char *const *names)
{
    (void)lengths;
    (void)names;
    int64_t *out = userdata;
    for (int i = 0; i < ncols && i < 2; i++) {
        long v = 0;
        if (values[i] && fs_parse_long(values[i], &v))
            out[i] = v;
    }
    return 1;
}

int64_t fs_store_int_or_zero(const char *value)
{
    long n;
    return value && fs_parse_long(value, &n) ? n : 0;
}

fhirsync_code fs_store_query_string(fhirsync_store *s, const char *sql, const fs_sql_value *params,
                                    int n, char **out, fhirsync_error *err)
{
    *out = NULL;
    fhirsync_code rc = s->ops->exec(s, sql, true, params, n, row_string, out, NULL, err);
    if (*out == (char *)-1) {
        *out = NULL;
        return fs_store_nomem(err);
    }
    if (rc != FHIRSYNC_OK) {
        fs_free(*out);
        *out = NULL;
    }
    return rc;
}
