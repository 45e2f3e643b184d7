/* http/curl_private.h: the pieces the two libcurl front ends of the http folder share (the easy
 * interface in http.c, the multi interface in multi.c), so that both follow redirects, keep
 * headers and log libcurl's debug output the same way. Internal to src/lib/http. */
#ifndef FS_HTTP_CURL_PRIVATE_H
#define FS_HTTP_CURL_PRIVATE_H

#include <curl/curl.h>

#include "http/http.h"

/* The redirect statuses the library follows (per the caller's policy). */
bool fs_http_is_redirect(long status);
/* Caps of a response's header section: its bytes (more is FHIRSYNC_E_TOO_LARGE) and the header
 * lines kept (more are ignored). */
#define FS_HTTP_MAX_HEADER_BYTES (64 * 1024)
#define FS_HTTP_MAX_HEADERS 128
#define FS_HTTP_MAX_HEADER_LINE (100 * 1024) /* libcurl's CURL_MAX_HTTP_HEADER */

/* Forget a response's headers (a new response after 1xx or a redirect). */
void fs_http_clear_headers(fs_http_response *resp);
/* Take one header line from libcurl into resp: a status line starts a new response (the earlier
 * headers forgotten, the status parsed), "Name: value" is kept with its value trimmed, anything
 * else is ignored. False when out of memory. */
bool fs_http_take_header(fs_http_response *resp, const char *data, size_t len);
/* CURLOPT_DEBUGFUNCTION: headers and info lines at debug level through the redaction path, one log
 * line per header line, never bodies. */
int fs_http_curl_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *userdata);
/* The error of a transfer of `url` that libcurl ended with `cc` (`detail`: its error buffer, may
 * be empty): timeout, TLS, URL, out of memory or network. A body in a broken content encoding is
 * `bad_encoding`: a protocol error for a request, a network error (retried) for a download. */
fhirsync_code fs_http_curl_error(CURLcode cc, const char *url, const char *detail,
                                 fhirsync_code bad_encoding, fhirsync_error *err);
/* FHIRSYNC_E_TOO_LARGE naming the header cap (FS_HTTP_MAX_HEADER_BYTES) for `url`: the header
 * section of a response passed it (a huge header, or very many). */
fhirsync_code fs_http_headers_too_large(const char *url, fhirsync_error *err);

#endif
