/* json/json.h: the one place that includes jansson. Other modules include this header and use
 * the fs_json_* helpers for the common work: parsing outside input with a clear error, reading
 * optional typed members, and serialising compactly. jansson allocates with the system allocator
 * (see fs_json_init). */
#ifndef FS_JSON_H
#define FS_JSON_H

#include <jansson.h>

#include "core/core.h"

/* Parse `len` bytes that must hold exactly one JSON value (object when want_object). `what`
 * names the document in the error ("token response"). Duplicate keys are rejected. On failure
 * returns NULL with err filled (FHIRSYNC_E_JSON), describing the position, or saying that the
 * body looks like HTML. */
json_t *fs_json_parse(const char *data, size_t len, bool want_object, const char *what,
                      fhirsync_error *err);

/* Parse `len` bytes holding one JSON object, keeping the exact text of every number (what FHIR's
 * decimal precision rules need: "1.0" and "1.00" differ, and jansson's reals keep neither). Each
 * number comes back as a JSON string whose first byte is NUL (FS_JSON_NUMBER_MARK) followed by
 * the number's text; read it with fs_json_number_text(). A string of the document that holds
 * \u0000 is refused (FHIR forbids control characters, and it would pass for a number). Errors as
 * fs_json_parse (FHIRSYNC_E_JSON naming `what`, FHIRSYNC_E_NOMEM). */
json_t *fs_json_parse_exact(const char *data, size_t len, const char *what, fhirsync_error *err);
#define FS_JSON_NUMBER_MARK '\0'
/* The text of a number read by fs_json_parse_exact ("1.50", "-3", "2e3"), with its length in
 * *len; NULL when `value` is not such a number. Borrowed from `value`. */
const char *fs_json_number_text(const json_t *value, size_t *len);

/* Borrowed string member, NULL when absent or not a string. */
const char *fs_json_str(const json_t *obj, const char *key);
/* Integer member; false when absent or not an integer (reals with no fraction are accepted). */
bool fs_json_int(const json_t *obj, const char *key, int64_t *out);
/* Boolean member; false when absent or not a boolean. */
bool fs_json_bool(const json_t *obj, const char *key, bool *out);
/* Whether the array member `key` holds the string `value`. */
bool fs_json_array_has(const json_t *obj, const char *key, const char *value);

/* Compact serialisation (caller frees with fs_free), NULL on out of memory. */
char *fs_json_dump(const json_t *value);
/* Pretty (2-space indent) serialisation for files and terminals. */
char *fs_json_dump_pretty(const json_t *value);

/* Whether a body starts like an HTML page (for a clearer error than a parse position). */
bool fs_looks_like_html(const char *data, size_t len);

/* Library set-up for jansson (called by fhirsync_global_init). */
void fs_json_init(void);

#endif
