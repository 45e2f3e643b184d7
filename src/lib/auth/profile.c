/* auth/profile.c: the transport options of an endpoint profile (timeouts, CA file), for the
 * modules that build HTTP requests from a profile. */
#include "auth/auth_internal.h"
#include "config/config_internal.h"

void fs_http_request_from_profile(const fhirsync_endpoint *ep, fs_http_request *req)
{
    req->connect_timeout_s = ep ? fs_endpoint_long(ep, "connect_timeout") : 0;
    req->timeout_s = ep ? fs_endpoint_long(ep, "timeout") : 0;
    req->ca_file = ep ? fhirsync_endpoint_get(ep, "ca_file") : NULL;
}
