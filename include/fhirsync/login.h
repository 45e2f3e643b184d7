/* fhirsync/login.h: a person's login for endpoints whose EHR will not grant Backend Services
 * (auth = login): the SMART App Launch standalone launch, authorization code grant with PKCE
 * (S256 only), once, in a browser; the refresh token it yields (offline_access) goes into the
 * endpoint's credentials file, from which fhirsync_auth_token() (fhirsync/auth.h) then gets
 * access tokens with the refresh grant, unattended.
 *
 * The application runs the browser part: it chooses the redirect URI (a loopback listener, RFC
 * 8252, or the one the EHR registered), starts a login, sends the person to the authorization URL,
 * and finishes the login with the URL the browser was redirected to.
 *
 * Thread safety: a fhirsync_login is used from one thread at a time. */
#ifndef FHIRSYNC_LOGIN_H
#define FHIRSYNC_LOGIN_H

#include <stdbool.h>
#include <stdint.h>

#include "fhirsync/common.h"
#include "fhirsync/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fhirsync_login fhirsync_login;

/* Start a login for a profile with auth = login: discovery (the authorization and token
 * endpoints; the server must list S256 in code_challenge_methods_supported), a PKCE verifier and
 * a `state` from the CSPRNG, and the authorization URL (response_type=code, client_id,
 * redirect_uri, scope, state, aud = the FHIR base URL exactly, code_challenge,
 * code_challenge_method=S256). `redirect_uri` is copied. Nothing is written.
 * Errors: FHIRSYNC_E_CONFIG (auth is not login, an incomplete profile), FHIRSYNC_E_KEY /
 * FHIRSYNC_E_KEY_PERMS (the client's key), FHIRSYNC_E_UNSUPPORTED (no authorization endpoint, or
 * no S256), discovery and transport errors. *out is the caller's (fhirsync_login_free). */
FHIRSYNC_API fhirsync_code fhirsync_login_start(const fhirsync_endpoint *ep,
                                                const char *redirect_uri, fhirsync_login **out,
                                                fhirsync_error *err);
FHIRSYNC_API void fhirsync_login_free(fhirsync_login *login);

/* The URL to open in a browser (borrowed; it carries no secret: the state and the PKCE challenge
 * are single-use and the verifier never leaves the process). */
FHIRSYNC_API const char *fhirsync_login_authorize_url(const fhirsync_login *login);
/* The redirect URI the login was started with (borrowed). */
FHIRSYNC_API const char *fhirsync_login_redirect_uri(const fhirsync_login *login);
/* The credentials file this login writes (borrowed). */
FHIRSYNC_API const char *fhirsync_login_credentials_path(const fhirsync_login *login);
/* The scopes asked for (borrowed). */
FHIRSYNC_API const char *fhirsync_login_requested_scope(const fhirsync_login *login);

/* Finish with the URL the browser was redirected to. The `state` is checked first: a missing or
 * forged one is refused (FHIRSYNC_E_AUTH) before anything else is looked at; then an `error`
 * (FHIRSYNC_E_AUTH quoting error and error_description, e.g. access_denied), the `code`
 * (FHIRSYNC_E_PROTOCOL when missing); then the code is exchanged (grant_type=authorization_code,
 * code, redirect_uri, code_verifier, the profile's client authentication) and the credentials
 * file is written atomically, mode 0600. On failure nothing is written. A login finishes once:
 * a second call fails with FHIRSYNC_E_ARG. */
FHIRSYNC_API fhirsync_code fhirsync_login_finish(fhirsync_login *login, const char *redirect_url,
                                                 fhirsync_error *err);

/* What a finished login obtained (borrowed; NULL/false/0 before it finished or when the server
 * did not say). fhirUser comes from the id_token WITHOUT verifying its signature: show it, never
 * base a decision on it. */
FHIRSYNC_API const char *fhirsync_login_granted_scope(const fhirsync_login *login);
FHIRSYNC_API const char *fhirsync_login_patient(const fhirsync_login *login);
FHIRSYNC_API const char *fhirsync_login_fhir_user(const fhirsync_login *login);
/* Whether a refresh token came (without one, unattended sync cannot run past the access token). */
FHIRSYNC_API bool fhirsync_login_has_refresh_token(const fhirsync_login *login);
/* When the access token obtained expires (epoch seconds). */
FHIRSYNC_API int64_t fhirsync_login_access_expires_at(const fhirsync_login *login);

#ifdef __cplusplus
}
#endif
#endif
