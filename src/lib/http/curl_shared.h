/* http/curl_shared.h: the pieces the two libcurl front ends of the http folder share (the easy
 * interface in http.c, the multi interface in multi.c), so that both follow redirects, keep
 * headers and log libcurl's debug output the same way. Internal to src/lib/http. */
#ifndef FS_HTTP_CURL_SHARED_H
#define FS_HTTP_CURL_SHARED_H

#include <curl/curl.h>

#include "http/http.h"

/* The redirect statuses the library follows (per the caller's policy). */
bool fs_http_is_redirect(long status);
/* Forget a response's headers (a new response after 1xx or a redirect). */
void fs_http_clear_headers(fs_http_response *resp);
/* CURLOPT_DEBUGFUNCTION: headers and info lines at debug level through the redaction path, one log
 * line per header line, never bodies. */
int fs_http_curl_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *userdata);

#endif
