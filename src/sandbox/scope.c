/* sandbox/scope.c: SMART resource scopes, v1 (system/T.read, .write, .*) and v2 (system/T.cruds
 * letters, in that order), reduced to (context, type, permission set) so that v1 and v2 compare
 * by meaning: system/(*).read covers system/Patient.rs. A backend service only has system/
 * scopes; an app of the authorization-code flow (launch.c) has patient/ and user/ scopes plus
 * the identity and launch scopes (openid, fhirUser, offline_access, launch/patient...). Granular
 * v2 scopes (?category=...) are refused everywhere. */
#include <string.h>

#include "sandbox.h"

bool sb_scope_parse_in(const char *text, unsigned contexts, sb_scope *out, fhirsync_error *err)
{
    static const struct {
        const char *prefix;
        unsigned context;
    } prefixes[] = {
        {"system/", SB_SCOPE_SYSTEM}, {"patient/", SB_SCOPE_PATIENT}, {"user/", SB_SCOPE_USER}};
    memset(out, 0, sizeof *out);
    const char *type = NULL;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0] && !type; i++) {
        if ((contexts & prefixes[i].context) && fs_starts_with(text, prefixes[i].prefix)) {
            type = text + strlen(prefixes[i].prefix);
            out->context = prefixes[i].context;
        }
    }
    if (!type) {
        fs_err(err, FHIRSYNC_E_ARG, "scope %.80s is not a %s scope", text,
               contexts == SB_SCOPE_SYSTEM ? "system/" : "patient/ or user/");
        return false;
    }
    const char *dot = strrchr(type, '.');
    size_t tlen = dot ? (size_t)(dot - type) : 0;
    if (!dot || tlen == 0 || tlen >= sizeof out->type) {
        fs_err(err, FHIRSYNC_E_ARG, "scope %.80s has no resource type and permission", text);
        return false;
    }
    for (size_t i = 0; i < tlen; i++) {
        char c = type[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!(ok || (tlen == 1 && c == '*'))) {
            fs_err(err, FHIRSYNC_E_ARG, "scope %.80s names no valid resource type", text);
            return false;
        }
    }
    memcpy(out->type, type, tlen);
    const char *perm = dot + 1;
    if (!strcmp(perm, "read")) {
        out->perms = SB_PERM_R | SB_PERM_S;
    } else if (!strcmp(perm, "write")) {
        out->perms = SB_PERM_C | SB_PERM_U | SB_PERM_D;
    } else if (!strcmp(perm, "*")) {
        out->perms = SB_PERM_C | SB_PERM_R | SB_PERM_U | SB_PERM_D | SB_PERM_S;
    } else {
        static const char letters[] = "cruds";
        size_t at = 0;
        for (const char *p = perm; *p; p++) {
            const char *pos = strchr(letters + at, *p);
            if (!pos || !*p) {
                fs_err(err, FHIRSYNC_E_ARG,
                       "scope %.80s: permissions must be read, write, * or letters of cruds in "
                       "that order",
                       text);
                return false;
            }
            at = (size_t)(pos - letters) + 1;
            out->perms |= 1u << (pos - letters);
        }
        if (!out->perms) {
            fs_err(err, FHIRSYNC_E_ARG, "scope %.80s grants nothing", text);
            return false;
        }
    }
    return true;
}

bool sb_scope_parse(const char *text, sb_scope *out, fhirsync_error *err)
{
    return sb_scope_parse_in(text, SB_SCOPE_SYSTEM, out, err);
}

bool sb_scope_within(const sb_scope *inner, const sb_scope *outer)
{
    if (inner->context != outer->context)
        return false;
    bool type_ok = !strcmp(outer->type, "*") || !strcmp(outer->type, inner->type);
    return type_ok && (inner->perms & ~outer->perms) == 0;
}

typedef struct valid_ctx {
    fhirsync_error *err;
} valid_ctx;

/* Call fn for each space-separated scope of `scopes`; stops when it returns false. */
static bool each_scope(const char *scopes, bool (*fn)(const char *scope, void *ctx), void *ctx)
{
    const char *p = scopes ? scopes : "";
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n > 0) {
            char one[256];
            if (n >= sizeof one)
                n = sizeof one - 1;
            memcpy(one, p, n);
            one[n] = '\0';
            if (!fn(one, ctx))
                return false;
        }
        p += n;
    }
    return true;
}

typedef struct grant_ctx {
    const char *type;
    unsigned contexts;
    unsigned have;
} grant_ctx;

static bool collect_grant(const char *scope, void *ctx)
{
    grant_ctx *g = ctx;
    sb_scope s;
    if (sb_scope_parse_in(scope, g->contexts, &s, NULL) &&
        (!strcmp(s.type, "*") || !strcmp(s.type, g->type)))
        g->have |= s.perms;
    return true;
}

bool sb_scopes_grant_in(const char *scopes, unsigned contexts, const char *type, unsigned perms)
{
    grant_ctx g = {type, contexts, 0};
    each_scope(scopes, collect_grant, &g);
    return (perms & ~g.have) == 0;
}

bool sb_scopes_grant(const char *scopes, const char *type, unsigned perms)
{
    return sb_scopes_grant_in(scopes, SB_SCOPE_ANY, type, perms);
}

bool sb_scope_is_app_special(const char *scope)
{
    static const char *const specials[] = {"openid",         "fhirUser",      "profile",
                                           "offline_access", "online_access", "launch/patient"};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        if (!strcmp(scope, specials[i]))
            return true;
    return false;
}

static bool check_app_valid(const char *scope, void *ctx)
{
    valid_ctx *v = ctx;
    sb_scope s;
    return sb_scope_is_app_special(scope) ||
           sb_scope_parse_in(scope, SB_SCOPE_PATIENT | SB_SCOPE_USER, &s, v->err);
}

bool sb_app_scopes_valid(const char *scopes, fhirsync_error *err)
{
    valid_ctx v = {err};
    return each_scope(scopes, check_app_valid, &v);
}

static bool check_valid(const char *scope, void *ctx)
{
    valid_ctx *v = ctx;
    sb_scope s;
    return sb_scope_parse(scope, &s, v->err);
}

bool sb_scopes_valid(const char *scopes, fhirsync_error *err)
{
    valid_ctx v = {err};
    return each_scope(scopes, check_valid, &v);
}
