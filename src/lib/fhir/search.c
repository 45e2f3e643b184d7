/* fhir/search.c: paged FHIR searches, one resource at a time. A search holds exactly one page:
 * its body as received, and where each entry.resource lies in it; resources are handed out as
 * those exact bytes. The page is validated once, by the Bundle scanner (span.c), which also finds
 * those places: no parse tree is built. The next page replaces it in the same buffer, so memory
 * stays flat however many pages a search has (the largest page's size).
 *
 * Paging follows Bundle.link[relation=next] as an opaque URL, resolved against the base when
 * relative. A next link on another origin is not followed (the token goes only to the FHIR
 * server), and a next link already fetched in this search is a loop. Both end the search with
 * FHIRSYNC_E_PROTOCOL once the current page has been handed out. Visited pages are remembered as
 * 64-bit hashes of their URLs, exactly for the first VISITED_EXACT pages, then by Brent's cycle
 * detection (constant memory) so that even an endless chain of fresh-looking URLs that
 * eventually cycles is caught. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fhir/fhir_internal.h"
#include "json/json.h" /* fs_looks_like_html only: pages are validated by span.c */

/* Pages whose URL hashes are kept in the exact set: 16384 pages of 8 bytes (in a table at most
 * twice that size), far beyond any real search at _count=100 that a loop would mimic. */
#define VISITED_EXACT 16384

/* ---- pages ----------------------------------------------------------------------------------- */

void fs_fhir_page_init(fs_fhir_page *page)
{
    memset(page, 0, sizeof *page);
    page->total = -1;
    fs_bundle_scan_init(&page->scan);
}

void fs_fhir_page_reset(fs_fhir_page *page)
{
    fs_free(page->next);
    page->entries = NULL;
    page->next = NULL;
    page->count = page->outcomes = 0;
    page->total = -1;
}

void fs_fhir_page_clear(fs_fhir_page *page)
{
    fs_fhir_page_reset(page);
    fs_bundle_scan_clear(&page->scan);
}

static fhirsync_code page_fail(fs_fhir_page *page, fhirsync_error *err, const char *url,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Reset the page and report what is wrong with it as FHIRSYNC_E_PROTOCOL. */
static fhirsync_code page_fail(fs_fhir_page *page, fhirsync_error *err, const char *url,
                               const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fs_fhir_page_reset(page);
    return fs_err(err, FHIRSYNC_E_PROTOCOL, "malformed search page from %s: %s", url, what);
}

/* A string value for a message: decoded, cut to fit on a character boundary, control characters
 * shown as '?' (a message is one line). */
static void quote_value(const char *body, fs_span content, char *buf, size_t size)
{
    buf[0] = '\0';
    char *value = fs_span_string_decode(body, content);
    if (!value)
        return;
    size_t n = strlen(value);
    if (n >= size) {
        n = size - 1;
        while (n > 0 && ((unsigned char)value[n] & 0xC0) == 0x80)
            n--; /* value[n], the first byte left out, must start a character */
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)value[i];
        buf[i] = (char)(c < 0x20 || c == 0x7F ? '?' : c);
    }
    buf[n] = '\0';
    fs_free(value);
}

/* The page is not one JSON object: say what it is instead. */
static fhirsync_code not_json(const char *body, size_t len, const char *url, fs_span_status st,
                              const fs_bundle_scan *scan, fhirsync_error *err)
{
    char desc[200];
    fs_fhir_describe_body(body, len, NULL, desc, sizeof desc);
    if (fs_looks_like_html(body, len)) /* where the JSON failed in it would add nothing */
        return fs_err(err, FHIRSYNC_E_PROTOCOL, "the search page from %s is not a FHIR Bundle: %s",
                      url, desc);
    if (st == FS_SPAN_NOT_OBJECT)
        return fs_err(err, FHIRSYNC_E_PROTOCOL,
                      "the search page from %s is not a FHIR Bundle: %s (JSON, but not an object)",
                      url, desc);
    if (st == FS_SPAN_DEPTH)
        return fs_err(err, FHIRSYNC_E_PROTOCOL,
                      "the search page from %s is not a FHIR Bundle: %s (nested more than %d "
                      "levels deep, near byte %zu)",
                      url, desc, FS_SPAN_MAX_DEPTH, scan->error_offset);
    return fs_err(err, FHIRSYNC_E_PROTOCOL,
                  "the search page from %s is not a FHIR Bundle: %s (not valid JSON: %s at byte "
                  "%zu)",
                  url, desc, scan->error ? scan->error : "malformed", scan->error_offset);
}

/* A member name repeated where it makes the page ambiguous. */
static fhirsync_code duplicate(fs_fhir_page *page, const char *body, const char *url,
                               fhirsync_error *err)
{
    const fs_bundle_scan *scan = &page->scan;
    char name[72], where[64];
    quote_value(body, scan->duplicate, name, sizeof name);
    switch (scan->duplicate_in) {
    case FS_IN_ENTRY:
        snprintf(where, sizeof where, "Bundle.entry[%zu]", scan->duplicate_index);
        break;
    case FS_IN_SEARCH:
        snprintf(where, sizeof where, "Bundle.entry[%zu].search", scan->duplicate_index);
        break;
    case FS_IN_LINK:
        snprintf(where, sizeof where, "Bundle.link[%zu]", scan->duplicate_index);
        break;
    default: snprintf(where, sizeof where, "the Bundle"); break;
    }
    return page_fail(page, err, url, "duplicate member \"%s\" in %s%s (byte %zu)", name,
                     scan->duplicate_nested ? "an object inside " : "", where, scan->error_offset);
}

fhirsync_code fs_fhir_page_parse(const char *body, size_t len, const char *url, fs_fhir_page *page,
                                 fhirsync_error *err)
{
    fs_fhir_page_reset(page);
    const fs_bundle_scan *scan = &page->scan;
    fhirsync_code rc;
    fs_span_status st = fs_bundle_scan_run(body, len, &page->scan);
    if (st == FS_SPAN_NOMEM) {
        rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory scanning a search page");
        goto out;
    }
    if (st == FS_SPAN_DUPLICATE) {
        rc = duplicate(page, body, url, err);
        goto out;
    }
    if (st != FS_SPAN_OK) {
        rc = not_json(body, len, url, st, scan, err);
        goto out;
    }

    /* a Bundle? (the value's content is between its quotes) */
    fs_span type = scan->resource_type;
    bool type_is_string = type.len >= 2 && body[type.start] == '"';
    fs_span type_content = {type.start + 1, type_is_string ? type.len - 2 : 0};
    if (!type_is_string || !fs_span_string_equals(body, type_content, "Bundle")) {
        fs_outcome outcome;
        char shown[72] = "missing";
        if (type_is_string && fs_span_string_equals(body, type_content, "OperationOutcome") &&
            fs_outcome_parse(body, len, &outcome)) {
            rc = fs_err(err, FHIRSYNC_E_PROTOCOL,
                        "the search page from %s is an OperationOutcome, not a Bundle: %s", url,
                        outcome.summary);
            goto out;
        }
        if (type_is_string)
            quote_value(body, type_content, shown, sizeof shown);
        rc = page_fail(page, err, url, "resourceType is '%s', not Bundle", shown);
        goto out;
    }
    if (scan->has_entry && !scan->entry_is_array) {
        rc = page_fail(page, err, url, "Bundle.entry is not an array");
        goto out;
    }
    int64_t total;
    page->total = scan->total.len && fs_span_number_integer(body, scan->total, &total) &&
                          total >= 0 && total <= INT32_MAX
                      ? (long)total
                      : -1;

    /* the first link with relation "next" */
    if (scan->has_link && !scan->link_is_array) {
        rc = page_fail(page, err, url, "Bundle.link is not an array");
        goto out;
    }
    for (size_t i = 0; i < scan->link_count; i++) {
        const fs_bundle_link *link = &scan->links[i];
        if (!link->is_object) {
            rc = page_fail(page, err, url, "Bundle.link[%zu] is not an object", i);
            goto out;
        }
        if (!link->next || page->next)
            continue;
        if (!link->has_url || link->url.len == 0) {
            rc = page_fail(page, err, url, "Bundle.link[%zu] (next) has no url", i);
            goto out;
        }
        if (!(page->next = fs_span_string_decode(body, link->url))) {
            rc = fs_err(err, FHIRSYNC_E_NOMEM, "out of memory reading a search page");
            goto out;
        }
    }

    /* every entry a resource with a type */
    size_t outcomes = 0;
    for (size_t i = 0; i < scan->entry_count; i++) {
        const fs_bundle_entry *entry = &scan->entries[i];
        if (!entry->is_object) {
            rc = page_fail(page, err, url, "Bundle.entry[%zu] is not an object", i);
            goto out;
        }
        if (!entry->resource_object) {
            rc = page_fail(page, err, url, "Bundle.entry[%zu] has no resource object", i);
            goto out;
        }
        if (!entry->has_type || entry->resource_type.len == 0) {
            rc = page_fail(page, err, url, "Bundle.entry[%zu].resource has no resourceType", i);
            goto out;
        }
        if (!entry->outcome)
            continue;
        outcomes++;
        fs_outcome outcome;
        char rtype[72];
        quote_value(body, entry->resource_type, rtype, sizeof rtype);
        bool parsed = fs_outcome_parse(body + entry->resource.start, entry->resource.len, &outcome);
        fs_log(FHIRSYNC_LOG_WARN, "search: skipped entry %zu of %s (search.mode outcome, a %s): %s",
               i, url, rtype, parsed ? outcome.summary : "no issues readable");
    }
    page->entries = scan->entries;
    page->count = scan->entry_count;
    page->outcomes = outcomes;
    rc = FHIRSYNC_OK;
out:
    if (rc != FHIRSYNC_OK)
        fs_fhir_page_reset(page);
    return rc;
}

/* ---- visited pages --------------------------------------------------------------------------- */

typedef struct visited_set {
    uint64_t *slots; /* open addressing; 0 = empty */
    size_t cap;      /* power of two */
    size_t used;
    uint64_t brent_mark; /* Brent: the hash remembered at the last power of two */
    size_t brent_power;
    size_t brent_steps;
} visited_set;

static uint64_t url_hash(const char *url)
{
    /* FNV-1a, 64 bits; 0 is reserved for empty slots */
    uint64_t h = fs_fnv1a_str(FS_FNV1A_INIT, url);
    return h ? h : 1;
}

static bool set_contains_or_add(visited_set *v, uint64_t h, bool *seen)
{
    *seen = false;
    if (v->used < VISITED_EXACT) {
        if ((v->used + 1) * 2 > v->cap) {
            size_t cap = v->cap ? v->cap * 2 : 64;
            uint64_t *slots = fs_calloc(cap, sizeof *slots);
            if (!slots)
                return false;
            for (size_t i = 0; i < v->cap; i++) {
                if (!v->slots[i])
                    continue;
                size_t j = (size_t)v->slots[i] & (cap - 1);
                while (slots[j])
                    j = (j + 1) & (cap - 1);
                slots[j] = v->slots[i];
            }
            fs_free(v->slots);
            v->slots = slots;
            v->cap = cap;
        }
        size_t j = (size_t)h & (v->cap - 1);
        while (v->slots[j]) {
            if (v->slots[j] == h) {
                *seen = true;
                return true;
            }
            j = (j + 1) & (v->cap - 1);
        }
        v->slots[j] = h;
        v->used++;
        return true;
    }
    /* past the exact set: the early pages are still checked, and Brent's tortoise catches any
     * cycle among the later ones within two of its lengths */
    size_t j = (size_t)h & (v->cap - 1);
    while (v->slots[j]) {
        if (v->slots[j] == h) {
            *seen = true;
            return true;
        }
        j = (j + 1) & (v->cap - 1);
    }
    if (v->brent_mark == h) {
        *seen = true;
        return true;
    }
    if (++v->brent_steps >= v->brent_power || v->brent_mark == 0) {
        v->brent_mark = h;
        v->brent_power = v->brent_power ? v->brent_power * 2 : 1;
        v->brent_steps = 0;
    }
    return true;
}

/* ---- the iterator ---------------------------------------------------------------------------- */

struct fhirsync_search {
    fhirsync_client *client;
    char *next_url;        /* the page to fetch next, NULL: none */
    fs_http_response resp; /* the current page's response (a non-2xx body) */
    fs_buf body;           /* the current page's body, its memory kept from page to page */
    char *page_url;        /* its URL */
    fs_fhir_page page;
    size_t index; /* next entry of the page to look at */
    size_t pages;
    size_t count;
    long total;
    visited_set visited;
    fhirsync_error pending; /* a problem with the current page's next link, raised once
                               the page has been handed out */
    fhirsync_error failure; /* sticky: the search ended with this error */
    bool warned_type;       /* an odd Content-Type was reported once */
};

fhirsync_code fhirsync_search_start(fhirsync_client *client, const char *query,
                                    fhirsync_search **out)
{
    if (out)
        *out = NULL;
    if (!client)
        return FHIRSYNC_E_ARG;
    fhirsync_error e = {0};
    if (!out || !query) {
        fs_err(&e, FHIRSYNC_E_ARG, "fhirsync_search_start: no %s",
               out ? "query" : "place for the search");
        return fs_fhir_set_error(client, &e);
    }
    fhirsync_search *s = fs_calloc(1, sizeof *s);
    if (!s) {
        fs_err(&e, FHIRSYNC_E_NOMEM, "out of memory starting a search");
        return fs_fhir_set_error(client, &e);
    }
    s->client = client;
    s->total = -1;
    fs_http_response_init(&s->resp);
    fs_buf_init(&s->body);
    fs_fhir_page_init(&s->page);
    fhirsync_code rc = fs_fhir_resolve(client, query, true, &s->next_url, &e);
    bool seen;
    if (rc == FHIRSYNC_OK && !set_contains_or_add(&s->visited, url_hash(s->next_url), &seen))
        rc = fs_err(&e, FHIRSYNC_E_NOMEM, "out of memory");
    if (rc != FHIRSYNC_OK) {
        fhirsync_search_free(s);
        return fs_fhir_set_error(client, &e);
    }
    *out = s;
    return fs_fhir_set_error(client, NULL);
}

/* Decide about the current page's next link: resolve it, refuse another origin and loops. */
static fhirsync_code accept_next(fhirsync_search *s, fhirsync_error *err)
{
    const char *raw = s->page.next;
    if (!raw)
        return FHIRSYNC_OK;
    char *next = NULL;
    fhirsync_code rc = fs_url_resolve(fs_fhir_client_base(s->client), raw, true, &next, err);
    if (rc == FHIRSYNC_E_URL)
        return fs_err(err, FHIRSYNC_E_PROTOCOL,
                      "the next link '%s' of page %zu (from %s) is not a usable URL", raw, s->pages,
                      s->page_url);
    if (rc != FHIRSYNC_OK)
        return rc;
    bool same = false;
    if (fs_fhir_same_origin(s->client, next, &same) != FHIRSYNC_OK) {
        fs_free(next);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    if (!same) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL,
                    "the next link %s of page %zu (from %s) points to another origin; not "
                    "followed (the bearer token is sent only to the FHIR server %s)",
                    next, s->pages, s->page_url, fs_fhir_client_origin(s->client));
        fs_free(next);
        return rc;
    }
    bool seen;
    if (!set_contains_or_add(&s->visited, url_hash(next), &seen)) {
        fs_free(next);
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    }
    if (seen) {
        rc = fs_err(err, FHIRSYNC_E_PROTOCOL,
                    "the next link %s of page %zu (from %s) leads to a page already fetched in "
                    "this search: the server's paging loops; not followed",
                    next, s->pages, s->page_url);
        fs_free(next);
        return rc;
    }
    s->next_url = next;
    return FHIRSYNC_OK;
}

/* Fetch the page at next_url into the search, freeing the previous one first. */
static fhirsync_code fetch_page(fhirsync_search *s, fhirsync_error *err)
{
    fs_fhir_page_reset(&s->page);
    fs_http_response_clear(&s->resp);
    fs_free(s->page_url);
    s->page_url = s->next_url;
    s->next_url = NULL;
    s->index = 0;
    fs_fhir_request req = {.target = s->page_url, .into = &s->body};
    fhirsync_code rc = fs_fhir_perform(s->client, &req, &s->resp, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    s->pages++;
    const char *answered = s->resp.effective_url ? s->resp.effective_url : s->page_url;
    rc = fs_fhir_status_error(&s->resp, answered, err);
    if (rc != FHIRSYNC_OK) {
        if (s->pages > 1)
            fs_err_prefix(err, "page %zu of the search (after %zu resources)", s->pages, s->count);
        return rc;
    }
    /* servers say application/fhir+json or application/json; anything else is parsed anyway
     * (the Bundle checks decide), and reported once */
    const char *type = fs_http_header_get(&s->resp, "Content-Type");
    if (type && !strstr(type, "json") && !s->warned_type) {
        s->warned_type = true;
        fs_log(FHIRSYNC_LOG_WARN,
               "search: %s answered Content-Type '%s', not FHIR JSON; "
               "reading it as JSON",
               answered, type);
    }
    rc = fs_fhir_page_parse(s->body.data, s->body.len, answered, &s->page, err);
    if (rc != FHIRSYNC_OK)
        return rc;
    if (s->pages == 1)
        s->total = s->page.total;
    fs_log(FHIRSYNC_LOG_DEBUG, "search: page %zu from %s: %zu entries%s", s->pages, answered,
           s->page.count, s->page.next ? ", more to come" : ", the last");
    if (accept_next(s, &s->pending) != FHIRSYNC_OK && s->pending.code == FHIRSYNC_E_NOMEM)
        return fs_err(err, FHIRSYNC_E_NOMEM, "out of memory");
    return FHIRSYNC_OK;
}

fhirsync_code fhirsync_search_next(fhirsync_search *s, const char **resource, size_t *len)
{
    if (resource)
        *resource = NULL;
    if (len)
        *len = 0;
    if (!s)
        return FHIRSYNC_E_ARG;
    fhirsync_error e = {0};
    if (!resource) {
        fs_err(&e, FHIRSYNC_E_ARG, "fhirsync_search_next: no place for the resource");
        return fs_fhir_set_error(s->client, &e);
    }
    if (s->failure.code != FHIRSYNC_OK)
        return fs_fhir_set_error(s->client, &s->failure);
    for (;;) {
        while (s->index < s->page.count) {
            const fs_bundle_entry *entry = &s->page.entries[s->index++];
            if (entry->outcome)
                continue;
            /* the byte after a resource is a separator the parse no longer needs: terminate the
             * resource in place so that callers may also treat it as a C string */
            char *bytes = s->body.data + entry->resource.start;
            bytes[entry->resource.len] = '\0';
            s->count++;
            *resource = bytes;
            if (len)
                *len = entry->resource.len;
            return fs_fhir_set_error(s->client, NULL);
        }
        if (s->pending.code != FHIRSYNC_OK) {
            s->failure = s->pending;
            break;
        }
        if (!s->next_url) {
            /* the end: release the last page now rather than at the free */
            fs_fhir_page_reset(&s->page);
            fs_http_response_clear(&s->resp);
            fs_buf_free(&s->body);
            s->index = 0;
            return fs_fhir_set_error(s->client, NULL);
        }
        if (fetch_page(s, &s->failure) != FHIRSYNC_OK)
            break;
    }
    fs_fhir_page_reset(&s->page);
    fs_http_response_clear(&s->resp);
    fs_buf_free(&s->body);
    fs_free(s->next_url);
    s->next_url = NULL;
    return fs_fhir_set_error(s->client, &s->failure);
}

size_t fhirsync_search_pages(const fhirsync_search *search)
{
    return search ? search->pages : 0;
}

size_t fhirsync_search_count(const fhirsync_search *search)
{
    return search ? search->count : 0;
}

long fhirsync_search_total(const fhirsync_search *search)
{
    return search ? search->total : -1;
}

void fhirsync_search_free(fhirsync_search *search)
{
    if (!search)
        return;
    fs_http_response_clear(&search->resp);
    fs_buf_free(&search->body);
    fs_fhir_page_clear(&search->page);
    fs_free(search->next_url);
    fs_free(search->page_url);
    fs_free(search->visited.slots);
    fs_free(search);
}
