/* json/dom.h: a compact, read-only JSON document for reading many small objects fast (the view
 * engine reads every stored resource with it). Where jansson builds a tree of allocated nodes with
 * a hash table per object, this reads a document in one pass into a flat array of nodes (a
 * "tape") in document order, owned by a reusable fs_json_dom: after the first few documents,
 * reading one allocates nothing.
 *
 * The layout: a container is followed by its children, an object's as pairs (the member name, a
 * string node, then the value's nodes); every node knows how many nodes its subtree holds (`span`),
 * so the next sibling is `node + node->span` and a skipped value costs nothing. Objects are member
 * lists searched in order (FHIR's objects have a few members). The document keeps a copy of the
 * text: strings are decoded in that copy (escapes resolved, NUL-terminated in place), and numbers
 * keep their exact text ("1.50" stays "1.50", "1e400" is no overflow), as FHIR's decimal
 * precision rules need.
 *
 * What it accepts is what fs_json_parse_exact accepts (json.h): one JSON object (RFC 8259, UTF-8
 * checked as in lex.h), no duplicate member names (after decoding escapes), no \u0000 in a string,
 * values nested at most FS_JSON_DOM_MAX_DEPTH deep (jansson's limit), any number (kept as text).
 *
 * Thread safety: a document belongs to one thread; its nodes are read-only once read, and valid
 * until the next fs_json_dom_parse() or fs_json_dom_free() of the same document. */
#ifndef FS_JSON_DOM_H
#define FS_JSON_DOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* How deep values may nest (the top-level object is at depth 1), as jansson's parser. */
#define FS_JSON_DOM_MAX_DEPTH 2048

typedef enum fs_json_kind {
    FS_JSON_NULL,
    FS_JSON_FALSE,
    FS_JSON_TRUE,
    FS_JSON_NUMBER, /* text: the number as written */
    FS_JSON_STRING, /* text: the decoded UTF-8 (no NUL inside) */
    FS_JSON_ARRAY,
    FS_JSON_OBJECT
} fs_json_kind;

typedef struct fs_json_node {
    const char *text; /* a string's or a number's text, NUL-terminated; NULL for the others */
    uint32_t len;     /* text: its bytes; an array: its elements; an object: its members */
    uint32_t span;    /* nodes in this subtree, this one included (1 for a scalar) */
    uint8_t kind;     /* fs_json_kind */
} fs_json_node;

/* A reusable document: zero it (or fs_json_dom_init), read documents with fs_json_dom_parse, free
 * it with fs_json_dom_free. The buffers it keeps grow to the largest document read. */
typedef struct fs_json_dom {
    char *text; /* the copy of the text, strings decoded in place */
    size_t text_cap;
    fs_json_node *nodes;
    size_t count, nodes_cap;
    uint32_t *open; /* indices of the containers being read */
    size_t open_cap;
    uint32_t *scratch; /* the duplicate-name check */
    size_t scratch_cap;
} fs_json_dom;

void fs_json_dom_init(fs_json_dom *dom);
/* Free the buffers; the document reads again after (as a new one). NULL is a no-op. */
void fs_json_dom_free(fs_json_dom *dom);
/* Give back buffers grown past `keep_bytes` in all (after an unusually large document), keeping
 * the document usable; the nodes of the last read are gone if it does. */
void fs_json_dom_trim(fs_json_dom *dom, size_t keep_bytes);

/* Read `len` bytes holding one JSON object; the nodes of the previous read are gone. On success
 * *root is the object's node (the first of the tape). On failure *root is NULL and err says why:
 * FHIRSYNC_E_JSON naming `what` ("resource is not valid JSON (line 3: an unterminated string)",
 * "resource is JSON but not an object", "resource holds a string with \u0000", "resource is
 * empty, expected JSON"), or FHIRSYNC_E_NOMEM. */
fhirsync_code fs_json_dom_parse(fs_json_dom *dom, const char *data, size_t len, const char *what,
                                const fs_json_node **root, fhirsync_error *err);

/* The sibling after `node`'s subtree (for an object's member name: its value). */
static inline const fs_json_node *fs_json_next(const fs_json_node *node)
{
    return node + node->span;
}

/* The value of member `name` (`len` bytes) of `obj`; NULL when obj is NULL or no object, or has
 * no such member. A linear search: FHIR objects are small. */
const fs_json_node *fs_json_member(const fs_json_node *obj, const char *name, size_t len);
/* The text of string member `name` (NUL-terminated) of `obj`, NULL when absent or not a string. */
const char *fs_json_member_str(const fs_json_node *obj, const char *name, size_t len);

/* Equality as jansson's json_equal() of the same values: same kind; strings and numbers by their
 * bytes (numbers by text: "1.0" is not "1.00"); arrays element by element; objects with the same
 * names and equal values in any order. NULL is equal to nothing. */
bool fs_json_node_equal(const fs_json_node *a, const fs_json_node *b);

/* Append `node` as compact JSON, byte for byte what jansson's json_dumps(JSON_COMPACT |
 * JSON_ENCODE_ANY) writes for the same value with numbers as their text: members in document
 * order, strings escaped as fs_json_write_string does. False on out of memory. */
bool fs_json_node_write(fs_buf *out, const fs_json_node *node);
/* Append `len` bytes of UTF-8 as a JSON string as jansson writes one: '"' and '\' escaped, \b \f
 * \n \r \t, other control characters as \u00XX (upper-case hex), everything else (non-ASCII, '/')
 * as is. False on out of memory, or when the bytes are not UTF-8 (jansson refuses such a string;
 * nothing of it is appended then). */
bool fs_json_write_string(fs_buf *out, const char *s, size_t len);

#endif
