/* bench/lex_bench.c: the speed of the three JSON scanners that share the lexer core
 * (json/lex.h), on the same NDJSON file, one thread, each beside a baseline measured in the same
 * run:
 *   memchr     the file split into lines with memchr alone: the memory-bandwidth floor
 *   jansson    json_loadb of each line: what a document tree costs
 *   checker    the streaming NDJSON line checker (bulk/ndjson.c, fs_ndjson_feed) over the file
 *   fields     the store's field scanner (store/fields.c, fs_store_scan_fields) on each line
 *   span       the search-page scanner (fhir/span.c, fs_bundle_scan_run) on searchset Bundles of
 *              50 entries built from the lines
 *   lines      the line splitter (core/lines.c, fs_lines_feed) over the file in 1 MiB chunks
 * Each figure is the best of ROUNDS rounds of PASSES passes (the machines are noisy), in MB/s, with
 * its ratio to the jansson baseline. Nothing here fails on a timing. usage: lex_bench FILE.ndjson
 * [ROUNDS]   (default 5) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "bulk/bulk_internal.h"
#include "core/core.h"
#include "fhir/fhir_internal.h"
#include "fhirsync/fhirsync.h"
#include "json/json.h"
#include "store/fields.h"
#if __has_include("core/lines.h")
#include "core/lines.h"
#define HAVE_LINES 1
#endif

#define PAGE_ENTRIES 50
#define PASSES 4 /* over the file per round, for a measurable time */

/* The file mapped into memory (read-only; the bench never frees it). */
static const char *map_file(const char *path, size_t *size)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    void *data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    *size = (size_t)st.st_size;
    return data == MAP_FAILED ? NULL : data;
}

/* The line at *at (its length in *len, without the '\n'); *at moves past it. */
static const char *next_line(const char **at, const char *end, size_t *len)
{
    const char *line = *at, *nl = memchr(line, '\n', (size_t)(end - line));
    *len = nl ? (size_t)(nl - line) : (size_t)(end - line);
    *at = nl ? nl + 1 : end;
    return line;
}

/* searchset pages of PAGE_ENTRIES entries each, built from the file's lines */
static char **build_pages(const char *data, size_t size, size_t *npages, size_t **lens)
{
    size_t cap = 16, n = 0;
    char **pages = malloc(cap * sizeof *pages);
    *lens = malloc(cap * sizeof **lens);
    fs_buf page;
    fs_buf_init(&page);
    size_t in_page = 0;
    for (const char *at = data; at < data + size;) {
        size_t len;
        const char *line = next_line(&at, data + size, &len);
        if (in_page == 0)
            fs_buf_printf(&page,
                          "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":%zu,"
                          "\"link\":[{\"relation\":\"self\",\"url\":\"http://x/fhir/P\"},"
                          "{\"relation\":\"next\",\"url\":\"http://x/fhir/P?page=2\"}],"
                          "\"entry\":[",
                          size / 1000);
        else
            fs_buf_append(&page, ",", 1);
        fs_buf_printf(&page,
                      "{\"fullUrl\":\"http://x/fhir/R/%zu\",\"resource\":", n * 100 + in_page);
        fs_buf_append(&page, line, len);
        fs_buf_printf(&page, ",\"search\":{\"mode\":\"match\"}}");
        if (++in_page == PAGE_ENTRIES || at >= data + size) {
            fs_buf_append(&page, "]}", 2);
            if (n == cap) {
                cap *= 2;
                pages = realloc(pages, cap * sizeof *pages);
                *lens = realloc(*lens, cap * sizeof **lens);
            }
            (*lens)[n] = page.len;
            pages[n++] = fs_buf_steal(&page);
            fs_buf_init(&page);
            in_page = 0;
        }
    }
    fs_buf_free(&page);
    *npages = n;
    return pages;
}

static double best_mbs(double best_ms, size_t bytes)
{
    return PASSES * (double)bytes / 1e6 / (best_ms / 1000.0 + 1e-9);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 2 || fhirsync_global_init() != FHIRSYNC_OK) {
        fprintf(stderr, "usage: lex_bench FILE.ndjson [ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    size_t size;
    const char *data = map_file(argv[1], &size);
    if (!data) {
        perror(argv[1]);
        return 1;
    }
    size_t npages, *page_lens, page_bytes = 0;
    char **pages = build_pages(data, size, &npages, &page_lens);
    for (size_t i = 0; i < npages; i++)
        page_bytes += page_lens[i];

    enum { MEMCHR, JANSSON, CHECKER, FIELDS, SPAN, LINES, N };
    static const char *const names[N] = {"memchr lines", "jansson per line",    "checker",
                                         "fields",       "span (search pages)", "line splitter"};
    double best[N];
    size_t ok[N] = {0};
    for (int k = 0; k < N; k++)
        best[k] = 1e18;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < N; k++) {
            size_t good = 0, n;
            bool skip = k == JANSSON && r > 0 && rounds > 2; /* slow, only a baseline: once */
            double t0 = now_ms();
            for (int pass = 0; pass < PASSES && !skip; pass++) {
                good = 0;
                switch (k) {
                case MEMCHR:
                    for (const char *at = data; at < data + size; good++)
                        next_line(&at, data + size, &n);
                    break;
                case JANSSON:
                    for (const char *at = data; at < data + size;) {
                        const char *line = next_line(&at, data + size, &n);
                        json_error_t je;
                        json_t *j = json_loadb(line, n, 0, &je);
                        good += j != NULL;
                        json_decref(j);
                    }
                    break;
                case CHECKER: {
                    fs_ndjson_checker ck;
                    fs_ndjson_init(&ck, NULL, 0);
                    for (size_t off = 0; off < size;) {
                        size_t used;
                        if (fs_ndjson_feed(&ck, data + off, size - off, &used) == FS_NDJSON_LINE)
                            good += ck.verdict == FS_NDJSON_OK;
                        off += used;
                    }
                    break;
                }
                case FIELDS:
                    for (const char *at = data; at < data + size;) {
                        const char *line = next_line(&at, data + size, &n);
                        fs_resource_fields f;
                        good += fs_store_scan_fields(line, n, &f) == NULL;
                    }
                    break;
                case SPAN: {
                    fs_bundle_scan scan;
                    fs_bundle_scan_init(&scan);
                    for (size_t i = 0; i < npages; i++)
                        if (fs_bundle_scan_run(pages[i], page_lens[i], &scan) == FS_SPAN_OK)
                            good += scan.entry_count;
                    fs_bundle_scan_clear(&scan);
                    break;
                }
                case LINES:
#ifdef HAVE_LINES
                {
                    fs_lines sp;
                    fs_lines_init(&sp, 0);
                    for (size_t off = 0; off < size; off += 1 << 20) {
                        n = size - off < (1u << 20) ? size - off : 1u << 20;
                        const char *line, *chunk = data + off;
                        size_t len;
                        while (fs_lines_next(&sp, &chunk, &n, &line, &len) == FS_LINES_LINE)
                            good++;
                    }
                    fs_lines_free(&sp);
                }
#endif
                break;
                }
            }
            double ms = now_ms() - t0;
            if (!skip && ms < best[k]) {
                best[k] = ms;
                ok[k] = good;
            }
        }
    }
    double jansson = best_mbs(best[JANSSON], size);
    printf("%s: %.1f MB, %zu search pages (%.1f MB), best of %d rounds\n", argv[1],
           (double)size / 1e6, npages, (double)page_bytes / 1e6, rounds);
    for (int k = 0; k < N; k++) {
#ifndef HAVE_LINES
        if (k == LINES)
            continue;
#endif
        double mbs = best_mbs(best[k], k == SPAN ? page_bytes : size);
        printf("BENCH | %-22s | %7.0f MB/s | %8zu ok | ratio to jansson %5.1fx\n", names[k], mbs,
               ok[k], mbs / (jansson + 1e-9));
    }
    for (size_t i = 0; i < npages; i++)
        free(pages[i]);
    free(pages);
    free(page_lens);
    fhirsync_global_cleanup();
    return 0;
}
