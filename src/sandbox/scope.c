/* sandbox/scope.c: SMART system scopes, v1 (system/T.read, .write, .*) and v2 (system/T.cruds
 * letters, in that order), reduced to (type, permission set) so that v1 and v2 compare by
 * meaning: system/(*).read covers system/Patient.rs. A backend service only has system/ scopes;
 * patient/, user/, launch scopes and granular v2 scopes (?category=...) are refused. */
#include <string.h>

#include "sandbox.h"

bool sb_scope_parse(const char *text, sb_scope *out, fhirsync_error *err)
{
    memset(out, 0, sizeof *out);
    if (!fs_starts_with(text, "system/")) {
        fs_err(err, FHIRSYNC_E_ARG, "scope %.80s is not a system/ scope", text);
        return false;
    }
    const char *type = text + 7;
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

bool sb_scope_within(const sb_scope *inner, const sb_scope *outer)
{
    bool type_ok = !strcmp(outer->type, "*") || !strcmp(outer->type, inner->type);
    return type_ok && (inner->perms & ~outer->perms) == 0;
}

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
    unsigned perms;
    unsigned have;
} grant_ctx;

static bool collect_grant(const char *scope, void *ctx)
{
    grant_ctx *g = ctx;
    sb_scope s;
    if (sb_scope_parse(scope, &s, NULL) && (!strcmp(s.type, "*") || !strcmp(s.type, g->type)))
        g->have |= s.perms;
    return true;
}

bool sb_scopes_grant(const char *scopes, const char *type, unsigned perms)
{
    grant_ctx g = {type, perms, 0};
    each_scope(scopes, collect_grant, &g);
    return (perms & ~g.have) == 0;
}

typedef struct valid_ctx {
    fhirsync_error *err;
} valid_ctx;

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
