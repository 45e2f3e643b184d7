/* examples/list_patients.c: list patients (name, birth date) and each one's latest observation
 * with the public API of libfhirsync: a profile from FHIRSYNC_* environment variables, a client,
 * and paged searches that hand out one resource at a time.
 *
 *   export FHIRSYNC_BASE_URL=https://ehr.example/fhir/r4 FHIRSYNC_CLIENT_ID=my-app \
 *          FHIRSYNC_KEY_FILE=~/.fhirsync/my-app.key.pem
 *   example_list_patients [MAX_PATIENTS]        (default 10)
 *
 * Tokens, retries, rate limits and paging are the library's business. Resources arrive as the
 * server's JSON text; a real program hands them to its JSON parser. To stay free of dependencies
 * this example picks a few fields out of the text with a naive lookup (json_field below). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fhirsync/fhirsync.h>

/* Copy the string or number that follows `"key":` (or the first item of a list there) into out,
 * starting after the first occurrence of `anchor` (NULL: the start). Naive (no unescaping, first
 * match wins), but enough for the fields shown here. */
static const char *json_field(const char *json, const char *anchor, const char *key, char *out,
                              size_t size)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = anchor ? strstr(json, anchor) : json;
    p = p ? strstr(p, pattern) : NULL;
    out[0] = '\0';
    if (!p)
        return out;
    p += strlen(pattern);
    while (*p == ' ' || *p == '[') /* the first of a list */
        p++;
    size_t n = *p == '"' ? strcspn(++p, "\"") : strcspn(p, ",}]");
    snprintf(out, size, "%.*s", (int)n, p);
    return out;
}

static void on_log(fhirsync_log_level level, const char *line, void *userdata)
{
    (void)userdata;
    fprintf(stderr, "fhirsync %s: %s\n", fhirsync_log_level_name(level), line);
}

/* The patient's latest Observation by effectiveDateTime. _sort=-date asks the server to put it
 * first, but servers may ignore _sort, so every result is compared; FHIR dateTimes with the same
 * offset compare in time order as strings. */
static fhirsync_code print_latest_observation(fhirsync_client *client, const char *patient_id)
{
    char query[256], when[64], latest_when[64] = "", latest[1024] = "";
    snprintf(query, sizeof query, "Observation?patient=%s&_sort=-date", patient_id);
    fhirsync_search *search = NULL;
    fhirsync_code rc = fhirsync_search_start(client, query, &search);
    const char *obs;
    while (rc == FHIRSYNC_OK && (rc = fhirsync_search_next(search, &obs, NULL)) == FHIRSYNC_OK &&
           obs) {
        if (strcmp(json_field(obs, NULL, "effectiveDateTime", when, sizeof when), latest_when) <= 0)
            continue;
        char what[128], value[32] = "", unit[32] = "";
        json_field(obs, "\"code\":{", "text", what, sizeof what);
        if (!strstr(obs, "\"component\":")) { /* panels (blood pressure) have no single value */
            json_field(obs, "\"valueQuantity\":", "value", value, sizeof value);
            json_field(obs, "\"valueQuantity\":", "unit", unit, sizeof unit);
        }
        snprintf(latest_when, sizeof latest_when, "%s", when);
        snprintf(latest, sizeof latest, "%s  %s %s %s", when, what, value, unit);
    }
    if (rc == FHIRSYNC_OK)
        printf("    latest observation: %s\n", latest[0] ? latest : "(none)");
    fhirsync_search_free(search);
    return rc;
}

int main(int argc, char **argv)
{
    long max_patients = argc > 1 ? strtol(argv[1], NULL, 10) : 10;
    if (fhirsync_global_init() != FHIRSYNC_OK)
        return 1;
    fhirsync_log_set(on_log, NULL, FHIRSYNC_LOG_WARN);

    fhirsync_error err = {0};
    fhirsync_endpoint *ep = fhirsync_endpoint_new("example");
    fhirsync_client *client = NULL;
    fhirsync_search *patients = NULL;
    int status = 1;
    if (!ep || fhirsync_endpoint_apply_env(ep, &err) != FHIRSYNC_OK ||
        fhirsync_client_new(ep, &client, &err) != FHIRSYNC_OK) {
        fprintf(stderr, "list_patients: %s\n", ep ? err.message : "out of memory");
        goto out;
    }

    char query[64];
    snprintf(query, sizeof query, "Patient?_count=%ld", max_patients);
    fhirsync_code rc = fhirsync_search_start(client, query, &patients);
    const char *patient;
    long listed = 0;
    while (rc == FHIRSYNC_OK && listed < max_patients &&
           (rc = fhirsync_search_next(patients, &patient, NULL)) == FHIRSYNC_OK && patient) {
        char id[65], family[64], given[64], born[16];
        json_field(patient, NULL, "id", id, sizeof id);
        json_field(patient, "\"name\":", "family", family, sizeof family);
        json_field(patient, "\"name\":", "given", given, sizeof given);
        printf("%-12s %s, %s  born %s\n", id, family, given,
               json_field(patient, NULL, "birthDate", born, sizeof born));
        rc = print_latest_observation(client, id);
        listed++;
    }
    if (rc != FHIRSYNC_OK) {
        fprintf(stderr, "list_patients: %s (%s)\n", fhirsync_client_errmsg(client),
                fhirsync_strerror(rc));
        goto out;
    }
    printf("%ld patients\n", listed);
    status = 0;
out:
    fhirsync_search_free(patients);
    fhirsync_client_free(client);
    fhirsync_endpoint_free(ep);
    fhirsync_global_cleanup();
    return status;
}
