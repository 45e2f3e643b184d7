/* cli/views.c: the views a `views` setting (or `fhirsync view add`) names, registered in the store:
 * `shipped` (the US Core views built into the binary, src/cli/shipped_views.h), ViewDefinition
 * files, and directories (their *.json files in name order). Registering the same definition
 * again does nothing, so the sync calls this before every run. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "shipped_views.h"

#define VIEW_FILE_MAX (4u << 20) /* a ViewDefinition is small: refuse anything larger */

static fhirsync_code add_one(fhirsync_store *store, const char *label, const char *json, size_t len,
                             bool verbose, fhirsync_error *err)
{
    fhirsync_view_stats st;
    fhirsync_view_stats_init(&st, FHIRSYNC_VIEW_STATS_VERSION);
    fhirsync_code rc = fhirsync_store_view_add(store, json, len, &st, err);
    if (rc == FHIRSYNC_E_JSON)
        rc = err->code = FHIRSYNC_E_VIEW; /* a view file that is not JSON: the user's to fix */
    if (rc != FHIRSYNC_OK) {
        /* prefix the message with the view it is about */
        char prefix[160];
        snprintf(prefix, sizeof prefix, "view %s: ", label);
        size_t plen = strlen(prefix), mlen = strlen(err->message);
        if (plen + mlen >= sizeof err->message)
            mlen = sizeof err->message - plen - 1;
        memmove(err->message + plen, err->message, mlen);
        memcpy(err->message, prefix, plen);
        err->message[plen + mlen] = '\0';
        return rc;
    }
    if (verbose && st.unchanged)
        printf("view %s: unchanged\n", label);
    else if (verbose)
        printf("view %s: %s, %lld row%s from %lld resource%s%s\n", label,
               st.replaced ? "replaced and rebuilt" : "added", (long long)st.rows,
               st.rows == 1 ? "" : "s", (long long)st.resources, st.resources == 1 ? "" : "s",
               st.failed ? " (some resources could not be evaluated: see the quarantine)" : "");
    return FHIRSYNC_OK;
}

/* Read a whole file of at most VIEW_FILE_MAX bytes (NUL-terminated). */
static fhirsync_code read_file(const char *path, char **out, size_t *len, fhirsync_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        err->code = FHIRSYNC_E_IO;
        snprintf(err->message, sizeof err->message, "cannot open the view %s: %s", path,
                 strerror(errno));
        return err->code;
    }
    char *buf = malloc(VIEW_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, VIEW_FILE_MAX + 1, f) : 0;
    bool failed = !buf || ferror(f);
    int saved = errno;
    fclose(f);
    if (failed || n > VIEW_FILE_MAX) {
        free(buf);
        err->code = !buf ? FHIRSYNC_E_NOMEM : FHIRSYNC_E_IO;
        snprintf(err->message, sizeof err->message, "cannot read the view %s: %s", path,
                 !buf     ? "out of memory"
                 : failed ? strerror(saved)
                          : "larger than 4 MiB");
        return err->code;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return FHIRSYNC_OK;
}

static fhirsync_code add_file(fhirsync_store *store, const char *path, bool verbose,
                              fhirsync_error *err)
{
    char *json = NULL;
    size_t len = 0;
    fhirsync_code rc = read_file(path, &json, &len, err);
    if (rc == FHIRSYNC_OK)
        rc = add_one(store, path, json, len, verbose, err);
    free(json);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static fhirsync_code add_directory(fhirsync_store *store, const char *path, bool verbose,
                                   fhirsync_error *err)
{
    DIR *dir = opendir(path);
    if (!dir) {
        err->code = FHIRSYNC_E_IO;
        snprintf(err->message, sizeof err->message, "cannot open the directory %s: %s", path,
                 strerror(errno));
        return err->code;
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    fhirsync_code rc = FHIRSYNC_OK;
    struct dirent *e;
    while (rc == FHIRSYNC_OK && (e = readdir(dir)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= 5 || strcmp(e->d_name + n - 5, ".json") != 0 || e->d_name[0] == '.')
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) {
                rc = FHIRSYNC_E_NOMEM;
                break;
            }
            names = grown;
        }
        size_t size = strlen(path) + n + 2;
        if (!(names[count] = malloc(size))) {
            rc = FHIRSYNC_E_NOMEM;
            break;
        }
        snprintf(names[count++], size, "%s/%s", path, e->d_name);
    }
    closedir(dir);
    if (rc == FHIRSYNC_E_NOMEM) {
        err->code = rc;
        snprintf(err->message, sizeof err->message, "out of memory");
    }
    if (names)
        qsort(names, count, sizeof *names, by_name);
    for (size_t i = 0; rc == FHIRSYNC_OK && i < count; i++)
        rc = add_file(store, names[i], verbose, err);
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    return rc;
}

fhirsync_code cli_views_register(fhirsync_store *store, const char *setting, bool verbose,
                                 fhirsync_error *err)
{
    if (!setting || strcmp(setting, "none") == 0)
        return FHIRSYNC_OK;
    char *copy = strdup(setting);
    if (!copy) {
        err->code = FHIRSYNC_E_NOMEM;
        snprintf(err->message, sizeof err->message, "out of memory");
        return err->code;
    }
    fhirsync_code rc = FHIRSYNC_OK;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); rc == FHIRSYNC_OK && item;
         item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ' || *item == '\t')
            item++;
        size_t n = strlen(item);
        while (n && (item[n - 1] == ' ' || item[n - 1] == '\t'))
            item[--n] = '\0';
        if (!n)
            continue;
        struct stat st;
        if (strcmp(item, "shipped") == 0) {
            for (size_t i = 0; rc == FHIRSYNC_OK && i < cli_shipped_view_count; i++) {
                char label[96];
                snprintf(label, sizeof label, "%s (shipped)", cli_shipped_views[i].name);
                rc = add_one(store, label, cli_shipped_views[i].json, cli_shipped_views[i].len,
                             verbose, err);
            }
        } else if (stat(item, &st) == 0 && S_ISDIR(st.st_mode)) {
            rc = add_directory(store, item, verbose, err);
        } else {
            rc = add_file(store, item, verbose, err);
        }
    }
    free(copy);
    return rc;
}
