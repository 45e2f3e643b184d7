/* sandbox/assertion.c: the authorization server's check of a private_key_jwt client assertion
 * (SMART Backend Services, RFC 7523), strict and in a fixed order so that each failure names the
 * one check that failed: decodes, iss known, alg allowed, kid found exactly once, jku, signature,
 * iss == sub == client_id, aud is the token URL, exp present and near, iat/nbf not in the future,
 * jti present, short and never seen. Also the jti replay store. No libmicrohttpd and no network
 * (the JWKS-by-URL fetch is a callback), so the fuzz target tests/fuzz/fuzz_sandbox_assertion.c
 * builds this file alone. */
#include <string.h>

#include <openssl/crypto.h>

#include "jose/jose.h"
#include "sandbox.h"

/* ---- jti replay store --------------------------------------------------------------------------
 * A chained hash table of "client_id\njti" with the time each may be forgotten. Expired entries
 * are dropped while walking the chain they sit in, and in a full sweep whenever the table grows. */

typedef struct jti_entry {
    struct jti_entry *next;
    int64_t expires;
    char key[];
} jti_entry;

struct sb_jti_store {
    pthread_mutex_t lock;
    jti_entry **slots;
    size_t nslots;
    size_t count;
};

sb_jti_store *sb_jti_store_new(void)
{
    sb_jti_store *s = fs_calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->nslots = 256;
    if (!(s->slots = fs_calloc(s->nslots, sizeof *s->slots))) {
        fs_free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

void sb_jti_store_free(sb_jti_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nslots; i++) {
        jti_entry *e = s->slots[i];
        while (e) {
            jti_entry *next = e->next;
            fs_free(e);
            e = next;
        }
    }
    fs_free(s->slots);
    pthread_mutex_destroy(&s->lock);
    fs_free(s);
}

static void sweep(sb_jti_store *s, int64_t now)
{
    for (size_t i = 0; i < s->nslots; i++) {
        jti_entry **link = &s->slots[i];
        while (*link) {
            jti_entry *e = *link;
            if (e->expires < now) {
                *link = e->next;
                fs_free(e);
                s->count--;
            } else {
                link = &e->next;
            }
        }
    }
}

static void grow(sb_jti_store *s)
{
    size_t nslots = s->nslots * 2;
    jti_entry **slots = fs_calloc(nslots, sizeof *slots);
    if (!slots)
        return; /* keep the longer chains */
    for (size_t i = 0; i < s->nslots; i++) {
        jti_entry *e = s->slots[i];
        while (e) {
            jti_entry *next = e->next;
            size_t at = fs_fnv1a_str(FS_FNV1A_INIT, e->key) % nslots;
            e->next = slots[at];
            slots[at] = e;
            e = next;
        }
    }
    fs_free(s->slots);
    s->slots = slots;
    s->nslots = nslots;
}

bool sb_jti_store_add(sb_jti_store *s, const char *client_id, const char *jti, int64_t expires,
                      int64_t now)
{
    size_t klen = strlen(client_id) + 1 + strlen(jti);
    jti_entry *fresh = fs_malloc(sizeof *fresh + klen + 1);
    if (!fresh)
        return false;
    snprintf(fresh->key, klen + 1, "%s\n%s", client_id, jti);
    fresh->expires = expires;
    bool added = false;
    pthread_mutex_lock(&s->lock);
    if (s->count >= s->nslots) {
        sweep(s, now);
        if (s->count >= s->nslots / 2)
            grow(s);
    }
    size_t at = fs_fnv1a_str(FS_FNV1A_INIT, fresh->key) % s->nslots;
    jti_entry **link = &s->slots[at];
    bool seen = false;
    while (*link) {
        jti_entry *e = *link;
        if (e->expires < now) {
            *link = e->next;
            fs_free(e);
            s->count--;
            continue;
        }
        if (!strcmp(e->key, fresh->key))
            seen = true;
        link = &e->next;
    }
    if (!seen) {
        fresh->next = s->slots[at];
        s->slots[at] = fresh;
        s->count++;
        added = true;
        fresh = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    fs_free(fresh);
    return added;
}

const char *sb_auth_method_name(sb_auth_method method)
{
    switch (method) {
    case SB_AUTH_PRIVATE_KEY_JWT: return "private_key_jwt";
    case SB_AUTH_CLIENT_SECRET_BASIC: return "client_secret_basic";
    case SB_AUTH_CLIENT_SECRET_POST: return "client_secret_post";
    case SB_AUTH_NONE: return "none";
    }
    return "unknown";
}

/* ---- the checks ----------------------------------------------------------------------------- */

static void alg_list(unsigned algs, bool rs384_only, char *buf, size_t size)
{
    buf[0] = '\0';
    size_t used = 0;
    for (int a = 1; a < 32; a++) {
        const char *name = fhirsync_alg_name((fhirsync_alg)a);
        if (!name || !(algs & (1u << a)) || (rs384_only && a != FHIRSYNC_ALG_RS384))
            continue;
        int n = snprintf(buf + used, size - used, "%s%s", used ? " " : "", name);
        if (n < 0 || (size_t)n >= size - used)
            break;
        used += (size_t)n;
    }
    if (!used)
        snprintf(buf, size, "none");
}

/* An integer claim: 1 present and integral, 0 absent, -1 present but not an integer. */
static int int_claim(const json_t *claims, const char *name, int64_t *out)
{
    json_t *v = json_object_get(claims, name);
    if (!v)
        return 0;
    if (!json_is_number(v) || !fs_json_int(claims, name, out))
        return -1;
    return 1;
}

/* The one key of `jwks` whose kid is `kid`, or NULL with err naming the failure. */
static const json_t *find_key(const json_t *jwks, const char *kid, fhirsync_error *err)
{
    json_t *keys = json_object_get(jwks, "keys");
    if (!json_is_array(keys)) {
        fs_err(err, FHIRSYNC_E_AUTH, "kid %.80s not found: the registered JWKS has no keys array",
               kid);
        return NULL;
    }
    const json_t *found = NULL;
    size_t matches = 0, i;
    for (i = 0; i < json_array_size(keys); i++) {
        json_t *key = json_array_get(keys, i);
        if (fs_streq(fs_json_str(key, "kid"), kid)) {
            found = key;
            matches++;
        }
    }
    if (matches == 0) {
        fs_err(err, FHIRSYNC_E_AUTH, "kid %.80s not found in the registered JWKS", kid);
        return NULL;
    }
    if (matches > 1) {
        fs_err(err, FHIRSYNC_E_AUTH,
               "kid %.80s is duplicated in the registered JWKS (%zu keys have it)", kid, matches);
        return NULL;
    }
    return found;
}

static bool check_claims(const sb_assertion_ctx *ctx, const sb_client *client, const json_t *claims,
                         fhirsync_error *err)
{
    const char *sub = fs_json_str(claims, "sub");
    if (!sub) {
        fs_err(err, FHIRSYNC_E_AUTH,
               "sub missing from the assertion (must equal iss, the "
               "client_id)");
        return false;
    }
    if (strcmp(sub, client->client_id) != 0) {
        fs_err(err, FHIRSYNC_E_AUTH, "sub %.80s does not equal iss %.80s (the client_id)", sub,
               client->client_id);
        return false;
    }
    json_t *aud = json_object_get(claims, "aud");
    const char *aud_text = json_string_value(aud);
    if (json_is_array(aud) && json_array_size(aud) == 1)
        aud_text = json_string_value(json_array_get(aud, 0));
    if (!aud_text) {
        fs_err(err, FHIRSYNC_E_AUTH, "aud missing from the assertion (must be the token URL %s)",
               ctx->token_url);
        return false;
    }
    if (strcmp(aud_text, ctx->token_url) != 0) {
        fs_err(err, FHIRSYNC_E_AUTH, "aud %.200s is not the token URL %s", aud_text,
               ctx->token_url);
        return false;
    }
    int64_t exp = 0, iat = 0, nbf = 0;
    int has = int_claim(claims, "exp", &exp);
    if (has <= 0) {
        fs_err(err, FHIRSYNC_E_AUTH,
               has ? "exp is not an integer number of seconds" : "exp missing from the assertion");
        return false;
    }
    if (exp < ctx->now - SB_ASSERTION_LEEWAY) {
        fs_err(err, FHIRSYNC_E_AUTH, "exp is %lld seconds in the past: the assertion expired",
               (long long)(ctx->now - exp));
        return false;
    }
    if (exp > ctx->now + SB_ASSERTION_MAX_LIFE + SB_ASSERTION_LEEWAY) {
        fs_err(err, FHIRSYNC_E_AUTH, "exp is %lld seconds in the future; at most %d allowed",
               (long long)(exp - ctx->now), SB_ASSERTION_MAX_LIFE);
        return false;
    }
    if ((has = int_claim(claims, "iat", &iat)) < 0 ||
        (has > 0 && iat > ctx->now + SB_ASSERTION_LEEWAY)) {
        fs_err(err, FHIRSYNC_E_AUTH,
               has < 0 ? "iat is not an integer number of seconds"
                       : "iat is %lld seconds in the future",
               (long long)(iat - ctx->now));
        return false;
    }
    if ((has = int_claim(claims, "nbf", &nbf)) < 0 ||
        (has > 0 && nbf > ctx->now + SB_ASSERTION_LEEWAY)) {
        fs_err(err, FHIRSYNC_E_AUTH,
               has < 0 ? "nbf is not an integer number of seconds"
                       : "nbf is %lld seconds in the future",
               (long long)(nbf - ctx->now));
        return false;
    }
    const char *jti = fs_json_str(claims, "jti");
    if (!jti || !*jti) {
        fs_err(err, FHIRSYNC_E_AUTH, "jti missing from the assertion");
        return false;
    }
    size_t jti_len = strlen(jti);
    if (jti_len > SB_MAX_JTI) {
        fs_err(err, FHIRSYNC_E_AUTH, "jti is %zu characters long; at most %d allowed", jti_len,
               SB_MAX_JTI);
        return false;
    }
    if (ctx->jtis &&
        !sb_jti_store_add(ctx->jtis, client->client_id, jti, exp + SB_ASSERTION_LEEWAY, ctx->now)) {
        fs_err(err, FHIRSYNC_E_AUTH, "jti %.80s was already used (replayed assertion)", jti);
        return false;
    }
    return true;
}

const sb_client *sb_assertion_check(const sb_assertion_ctx *ctx, const char *assertion,
                                    fhirsync_error *err)
{
    const sb_client *result = NULL;
    json_t *fetched = NULL;
    EVP_PKEY *pkey = NULL;
    fs_jws jws;
    memset(&jws, 0, sizeof jws);
    fhirsync_error detail;
    fs_err_clear(&detail);

    if (fs_jws_decode(assertion, SB_MAX_ASSERTION, &jws, &detail) != FHIRSYNC_OK) {
        fs_err(err, FHIRSYNC_E_AUTH, "client_assertion does not decode as a JWT: %s",
               detail.message);
        goto out;
    }
    const char *typ = fs_json_str(jws.header, "typ");
    if (json_object_get(jws.header, "typ") && (!typ || !fs_strcaseeq(typ, "JWT"))) {
        fs_err(err, FHIRSYNC_E_AUTH,
               "client_assertion does not decode as a JWT: header typ is "
               "%.40s, not JWT",
               typ ? typ : "not a string");
        goto out;
    }
    const char *iss = fs_json_str(jws.claims, "iss");
    if (!iss || !*iss) {
        fs_err(err, FHIRSYNC_E_AUTH, "iss missing from the assertion (must be the client_id)");
        goto out;
    }
    const sb_client *client = ctx->lookup ? ctx->lookup(ctx->cb_ctx, iss) : NULL;
    if (!client) {
        fs_err(err, FHIRSYNC_E_AUTH, "unknown client_id %.80s (iss of the assertion)", iss);
        goto out;
    }
    if (client->method != SB_AUTH_PRIVATE_KEY_JWT) {
        fs_err(err, FHIRSYNC_E_AUTH, "client_id %.80s is registered for %s, not private_key_jwt",
               iss, sb_auth_method_name(client->method));
        goto out;
    }
    const char *alg = fs_json_str(jws.header, "alg");
    unsigned allowed = client->algs;
    if (ctx->rs384_only)
        allowed &= 1u << FHIRSYNC_ALG_RS384;
    if (jws.alg == FHIRSYNC_ALG_NONE || !(allowed & (1u << jws.alg))) {
        char names[128];
        alg_list(client->algs, ctx->rs384_only, names, sizeof names);
        fs_err(err, FHIRSYNC_E_AUTH, "alg %.32s is not allowed for this client%s (allowed: %s)",
               alg ? alg : "(none)", ctx->rs384_only ? " on this RS384-only server" : "", names);
        goto out;
    }
    if (!jws.kid || !*jws.kid) {
        fs_err(err, FHIRSYNC_E_AUTH, "kid missing from the assertion header");
        goto out;
    }
    const char *jku = fs_json_str(jws.header, "jku");
    if (json_object_get(jws.header, "jku")) {
        if (!client->jwks_uri) {
            fs_err(err, FHIRSYNC_E_AUTH,
                   "jku given in the header but the client registered its "
                   "JWKS by value, not by URL");
            goto out;
        }
        if (!jku || strcmp(jku, client->jwks_uri) != 0) {
            fs_err(err, FHIRSYNC_E_AUTH, "jku %.200s is not the registered JWKS URL %.200s",
                   jku ? jku : "(not a string)", client->jwks_uri);
            goto out;
        }
    }
    const json_t *jwks = client->jwks;
    if (!jwks) {
        if (!client->jwks_uri || !ctx->fetch_jwks) {
            fs_err(err, FHIRSYNC_E_AUTH, "kid %.80s not found: the client has no JWKS", jws.kid);
            goto out;
        }
        if (!(fetched = ctx->fetch_jwks(ctx->cb_ctx, client->jwks_uri, &detail))) {
            fs_err(err, FHIRSYNC_E_AUTH, "kid %.80s not found: the JWKS URL %.200s failed: %s",
                   jws.kid, client->jwks_uri, detail.message);
            goto out;
        }
        jwks = fetched;
    }
    const json_t *jwk = find_key(jwks, jws.kid, err);
    if (!jwk)
        goto out;
    const char *key_alg = fs_json_str(jwk, "alg");
    if (key_alg && alg && strcmp(key_alg, alg) != 0) {
        fs_err(err, FHIRSYNC_E_AUTH, "alg %.32s does not match the alg %.32s of key kid %.80s", alg,
               key_alg, jws.kid);
        goto out;
    }
    if (!(pkey = fs_jwk_to_public_pkey(jwk, &detail))) {
        fs_err(err, FHIRSYNC_E_AUTH,
               "signature cannot be checked: the registered key kid %.80s "
               "is unusable: %s",
               jws.kid, detail.message);
        goto out;
    }
    if (fs_jws_verify(&jws, pkey, &detail) != FHIRSYNC_OK) {
        fs_err(err, FHIRSYNC_E_AUTH, "signature verification failed: %s", detail.message);
        goto out;
    }
    if (!check_claims(ctx, client, jws.claims, err))
        goto out;
    result = client;
out:
    EVP_PKEY_free(pkey);
    json_decref(fetched);
    fs_jws_clear(&jws);
    return result;
}

char *sb_assertion_peek_iss(const char *assertion)
{
    if (!assertion)
        return NULL;
    const char *dot1 = strchr(assertion, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot2 || (size_t)(dot2 - dot1) > SB_MAX_ASSERTION)
        return NULL;
    unsigned char *payload = NULL;
    size_t len = 0;
    if (!fs_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload, &len))
        return NULL;
    char *iss = NULL;
    json_t *claims = json_loadb((const char *)payload, len, 0, NULL);
    const char *value = fs_json_str(claims, "iss");
    if (value)
        iss = fs_strdup(value);
    json_decref(claims);
    fs_free(payload);
    return iss;
}
