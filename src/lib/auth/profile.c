/* auth/profile.c: typed access to the settings of an endpoint profile that the network modules
 * need (timeouts, caps, CA file). The config module validates values when they are set, so
 * parsing here only falls back when a setting is unset. */
#include "auth/auth_internal.h"

long fs_setting_long(const fhirsync_endpoint *ep, const char *setting, long fallback)
{
    long v;
    const char *s = ep ? fhirsync_endpoint_get(ep, setting) : NULL;
    return s && fs_parse_long(s, &v) ? v : fallback;
}

void fs_http_request_from_profile(const fhirsync_endpoint *ep, fs_http_request *req)
{
    req->connect_timeout_s = fs_setting_long(ep, "connect_timeout", 10);
    req->timeout_s = fs_setting_long(ep, "timeout", 120);
    req->ca_file = ep ? fhirsync_endpoint_get(ep, "ca_file") : NULL;
}
