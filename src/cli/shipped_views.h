/* cli/shipped_views.h: the ViewDefinitions of views/, embedded in the fhirsync binary so that the
 * shipped views are there whatever the install prefix (no lookup of share/fhirsync/views). The
 * definitions are generated at build time by cmake/EmbedViews.cmake (the CMake target
 * fhirsync_shipped_views) from the files views/NAME.json: editing, adding or removing one rebuilds
 * them. tests/unit/test_shipped_views.c checks that they equal the files byte for byte. */
#ifndef FHIRSYNC_CLI_SHIPPED_VIEWS_H
#define FHIRSYNC_CLI_SHIPPED_VIEWS_H

#include <stddef.h>

/* One shipped view: `name` is its file name without ".json" (views/NAME.json), `json` the file's
 * exact bytes followed by a NUL, `len` their number, the NUL excluded. Static data, never freed. */
typedef struct cli_shipped_view {
    const char *name;
    const char *json;
    size_t len;
} cli_shipped_view;

/* Every file of views/, in file-name order (strcmp of `name`). */
extern const cli_shipped_view cli_shipped_views[];
extern const size_t cli_shipped_view_count;

#endif
