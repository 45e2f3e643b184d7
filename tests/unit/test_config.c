/* unit/test_config.c: endpoint profiles. Parses real files written to a temporary folder at run
 * time: a full file with endpoints and [defaults], every kind of error (each message must name
 * the file, the line and the setting), the precedence file < environment < explicit set, the
 * repeatable header, vendor detection and the eClinicalWorks rate-limit default, client secrets
 * from files and variables, long and indented lines, and an allocation-failure walk over loading
 * a file (AddressSanitizer catches leaks on the failure paths). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/config_internal.h"
#include "core/core.h"
#include "fhirsync/config.h"

typedef struct fixture {
    char dir[512];
    char path[600];
} fixture;

static void clear_env(void)
{
    const char *const *names = fhirsync_setting_names();
    for (size_t i = 0; names[i]; i++) {
        char var[96];
        snprintf(var, sizeof var, "FHIRSYNC_%s", names[i]);
        for (char *c = var; *c; c++)
            if (*c >= 'a' && *c <= 'z')
                *c = (char)(*c - 'a' + 'A');
        unsetenv(var);
    }
    unsetenv("TEST_CONFIG_SECRET");
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    const char *base = getenv("FHIRSYNC_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0700);
    snprintf(f->dir, sizeof f->dir, "%s/config-XXXXXX", base);
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    clear_env();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    clear_env();
    fs_alloc_fail_at(0);
    free(f);
    return rc == 0 ? 0 : -1;
}

/* Write `text` to dir/name with `mode`; f->path becomes its path. */
static const char *write_file(fixture *f, const char *name, const char *text, mode_t mode)
{
    snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
    FILE *out = fopen(f->path, "w");
    assert_non_null(out);
    assert_int_equal(fwrite(text, 1, strlen(text), out), strlen(text));
    assert_int_equal(fclose(out), 0);
    assert_int_equal(chmod(f->path, mode), 0);
    return f->path;
}

static const char full_ini[] = "; two practices and shared settings\n"
                               "[endpoint practice-a]\n"
                               "base_url = https://fhir4.eclinicalworks.com/fhir/r4/ABCD\n"
                               "client_id = app-123\n"
                               "key_file = keys/private.pem\n"
                               "scope = system/Patient.read   system/Observation.read\n"
                               "timeout = 60\n"
                               "\n"
                               "[endpoint epic.main]\n"
                               "base_url = https://fhir.example.org/Interconnect-FHIR/api/FHIR/R4\n"
                               "client_id = 0f3a-epic\n"
                               "header = Epic-Client-ID: 0f3a-epic\n"
                               "header = X-Trace: on\n"
                               "alg = rs384\n"
                               "\n"
                               "# [defaults] after the endpoints still applies to them\n"
                               "[defaults]\n"
                               "key_file = /etc/fhirsync/key.pem\n"
                               "timeout = 90\n"
                               "store = postgresql://sync@127.0.0.1/fhir\n"
                               "types = Patient, Observation ,Condition\n";

static void test_full_file(void **state)
{
    fixture *f = *state;
    const char *path = write_file(f, "full.ini", full_ini, 0644);
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_config_load(path, &cfg, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_config_endpoint_count(cfg), 2);

    fhirsync_endpoint *a = fhirsync_config_endpoint_at(cfg, 0);
    assert_string_equal(fhirsync_endpoint_name(a), "practice-a");
    assert_ptr_equal(fhirsync_config_endpoint(cfg, "practice-a"), a);
    assert_string_equal(fhirsync_endpoint_get(a, "client_id"), "app-123");
    /* relative paths are relative to the config file's folder */
    char expected[700];
    snprintf(expected, sizeof expected, "%s/keys/private.pem", f->dir);
    assert_string_equal(fhirsync_endpoint_get(a, "key_file"), expected);
    assert_string_equal(fhirsync_endpoint_get(a, "scope"),
                        "system/Patient.read system/Observation.read");
    /* the endpoint's own value beats [defaults] */
    assert_string_equal(fhirsync_endpoint_get(a, "timeout"), "60");
    char source[700];
    snprintf(source, sizeof source, "%s:7", path);
    assert_string_equal(fhirsync_endpoint_source(a, "timeout"), source);
    /* inherited from [defaults], with the defaults line as source */
    assert_string_equal(fhirsync_endpoint_get(a, "types"), "Patient,Observation,Condition");
    snprintf(source, sizeof source, "%s:21", path);
    assert_string_equal(fhirsync_endpoint_source(a, "types"), source);
    assert_string_equal(fhirsync_endpoint_get(a, "store"), "postgresql://sync@127.0.0.1/fhir");
    /* built-in defaults */
    assert_string_equal(fhirsync_endpoint_get(a, "auth_method"), "private_key_jwt");
    assert_string_equal(fhirsync_endpoint_source(a, "auth_method"), "default");
    assert_null(fhirsync_endpoint_get(a, "alg"));
    assert_null(fhirsync_endpoint_source(a, "alg"));
    assert_string_equal(fs_endpoint_vendor(a), "eclinicalworks");
    assert_int_equal(fs_endpoint_long(a, "timeout"), 60);
    assert_int_equal(fs_endpoint_long(a, "connect_timeout"), 10);
    assert_int_equal(fs_endpoint_long(a, "max_body"), 67108864);
    assert_true(fs_endpoint_bool(a, "delete_job"));

    fhirsync_endpoint *e = fhirsync_config_endpoint(cfg, "epic.main");
    assert_non_null(e);
    assert_string_equal(fhirsync_endpoint_get(e, "key_file"), "/etc/fhirsync/key.pem");
    assert_string_equal(fhirsync_endpoint_get(e, "timeout"), "90");
    assert_string_equal(fhirsync_endpoint_get(e, "alg"), "RS384");
    assert_string_equal(fhirsync_endpoint_get(e, "scope"), "system/*.read");
    assert_string_equal(fs_endpoint_vendor(e), "epic");
    assert_int_equal(fhirsync_endpoint_count(e, "header"), 2);
    assert_string_equal(fhirsync_endpoint_get_at(e, "header", 0), "Epic-Client-ID: 0f3a-epic");
    assert_string_equal(fhirsync_endpoint_get_at(e, "header", 1), "X-Trace: on");
    assert_null(fhirsync_endpoint_get_at(e, "header", 2));
    assert_string_equal(fhirsync_endpoint_get(e, "header"), "X-Trace: on");
    assert_int_equal(fhirsync_endpoint_count(a, "header"), 0);
    assert_null(fhirsync_config_endpoint(cfg, "missing"));
    assert_null(fhirsync_config_endpoint_at(cfg, 2));

    /* endpoints added later inherit [defaults] too; a name in use is refused */
    fhirsync_endpoint *added = (fhirsync_endpoint *)cfg; /* overwritten with NULL on failure */
    fhirsync_error aerr = {0};
    assert_int_equal(fhirsync_config_add_endpoint(cfg, "practice-a", &added, &aerr),
                     FHIRSYNC_E_CONFIG);
    assert_null(added);
    assert_non_null(strstr(aerr.message, "practice-a"));
    assert_int_equal(fhirsync_config_add_endpoint(NULL, "x", NULL, &aerr), FHIRSYNC_E_ARG);
    assert_int_equal(fhirsync_config_endpoint_count(cfg), 2);
    assert_int_equal(fhirsync_config_add_endpoint(cfg, "later", &added, &aerr), FHIRSYNC_OK);
    assert_non_null(added);
    assert_int_equal(fhirsync_config_endpoint_count(cfg), 3);
    assert_string_equal(fhirsync_endpoint_get(added, "timeout"), "90");
    assert_null(fhirsync_endpoint_get(added, "base_url"));

    /* a deep copy outlives its config */
    fhirsync_endpoint *copy = fhirsync_endpoint_dup(e);
    fhirsync_config_free(cfg);
    assert_non_null(copy);
    assert_string_equal(fhirsync_endpoint_name(copy), "epic.main");
    assert_int_equal(fhirsync_endpoint_count(copy, "header"), 2);
    assert_string_equal(fhirsync_endpoint_get(copy, "alg"), "RS384");
    fhirsync_endpoint_free(copy);
    fhirsync_endpoint_free(NULL);
    fhirsync_config_free(NULL);
}

/* One broken file: the error's code and the pieces its message must hold. */
typedef struct bad_case {
    const char *text;
    int line;
    const char *needles[3];
} bad_case;

static const bad_case bad_cases[] = {
    {"[endpoint a]\nbase_url = https://x.org\n[practice b]\n",
     3,
     {"unknown section", "practice b"}},
    {"[endpoint a]\ntmeout = 5\n", 2, {"unknown setting 'tmeout'", "did you mean 'timeout'"}},
    {"[endpoint a]\nbase-url = https://x.org\n", 2, {"did you mean 'base_url'"}},
    {"[endpoint a]\nfrobnicate = 1\n", 2, {"unknown setting 'frobnicate'"}},
    {"[endpoint a]\ntimeout = abc\n", 2, {"timeout", "whole number from 1 to 86400", "'abc'"}},
    {"[endpoint a]\nparallel = 33\n", 2, {"parallel", "from 1 to 32"}},
    {"[endpoint a]\nassertion_lifetime = 301\n", 2, {"assertion_lifetime", "10 to 300"}},
    {"[endpoint a]\nmax_retries = -1\n", 2, {"max_retries", "from 0 to 20"}},
    {"[endpoint a]\nalg = HS256\n", 2, {"alg", "must be one of RS384, ES384", "'HS256'"}},
    {"[endpoint a]\nvendor = allscripts\n", 2, {"vendor", "eclinicalworks"}},
    {"[endpoint a]\nbase_url = ftp://x.org/fhir\n", 2, {"base_url", "https://"}},
    {"[endpoint a]\nbase_url = https://x.org/fhir#top\n", 2, {"base_url", "fragment"}},
    {"[endpoint a]\nbase_url = https://user:pw@x.org/fhir\n", 2, {"base_url", "user name"}},
    {"[endpoint a]\ntoken_url = https://x.org:99999/token\n", 2, {"token_url", "port"}},
    {"[endpoint a]\njku = https:///jwks\n", 2, {"jku", "no host"}},
    {"[endpoint a]\nscope = x\n[endpoint a]\n", 3, {"duplicate endpoint 'a'", "line 1"}},
    {"[endpoint a]\nscope = x\nscope = y\n", 3, {"scope", "given twice", ":2"}},
    {"[defaults]\ntimeout = 1\n\ntimeout = 2\n", 4, {"timeout", "given twice", "[defaults]"}},
    {"[endpoint a]\nscope = x\nthis line is junk\n", 3, {"cannot parse"}},
    {"[endpoint a]\nclient_secret = hunter2\n",
     2,
     {"client_secret", "client_secret_file", "client_secret_env"}},
    {"[endpoint a]\npassword = hunter2\n", 2, {"password", "client_secret_file"}},
    {"[endpoint a]\naccess_token = abc\n", 2, {"access_token", "secrets never go"}},
    {"[endpoint a]\nheader = Bad Name: x\n", 2, {"header", "Name: value"}},
    {"[endpoint a]\nheader = NoColon\n", 2, {"header", "Name: value"}},
    {"[endpoint a]\nheader = Authorization: Bearer abc\n", 2, {"header", "Authorization"}},
    {"[endpoint a]\nheader = X-Empty:\n", 2, {"header", "has no value"}},
    {"base_url = https://x.org\n", 1, {"base_url", "outside any section"}},
    {"[endpoint]\n", 1, {"needs a name"}},
    {"[endpoint a b]\n", 1, {"bad endpoint name"}},
    {"[endpoint a\n", 1, {"closing ']'"}},
    {"[endpoint a] trailing\n", 1, {"after the section header"}},
    {"[defaults]\nscope = x\n[defaults]\n", 3, {"second [defaults]", "line 1"}},
    {"[endpoint a]\nevery = 15\n", 2, {"every", "duration"}},
    {"[endpoint a]\nevery = 15 minutes\n", 2, {"every", "duration"}},
    {"[endpoint a]\nsince = 2024-01-01\n", 2, {"since", "FHIR instant"}},
    {"[endpoint a]\nscope =\n", 2, {"scope", "empty value"}},
    {"[endpoint a]\ntypes = patient,Observation\n", 2, {"types", "resource types"}},
    {"[endpoint a]\ntypes = Patient,,Observation\n", 2, {"types", "resource types"}},
    {"[endpoint a]\nstore = postgresql://sync:pw@db/fhir\n", 2, {"store", "PGPASSWORD"}},
    {"[endpoint a]\nkey_file = -----BEGIN PRIV"
     "ATE KEY-----\n",
     2,
     {"key_file", "path of a file"}},
    {"[endpoint a]\nclient_secret_env = s3cr3t value!\n", 2, {"client_secret_env", "name of an"}},
    {"[endpoint a]\ngroup_id = group/1\n", 2, {"group_id", "FHIR id"}},
    {"[endpoint a]\nauth_method = basic\n", 2, {"auth_method", "client_secret_basic"}},
    {"[endpoint a]\ndelete_job = maybe\n", 2, {"delete_job", "yes, no"}},
    {"[endpoint a]\nscope = system/*.read\"\n", 2, {"scope", "not allowed"}},
};

static void test_errors_name_file_line_and_setting(void **state)
{
    fixture *f = *state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        const bad_case *c = &bad_cases[i];
        const char *path = write_file(f, "bad.ini", c->text, 0644);
        fhirsync_config *cfg = (fhirsync_config *)&cfg; /* must be reset to NULL */
        fhirsync_error err = {0};
        fhirsync_code rc = fhirsync_config_load(path, &cfg, &err);
        char where[700];
        snprintf(where, sizeof where, "%s:%d: ", path, c->line);
        if (rc != FHIRSYNC_E_CONFIG || !strstr(err.message, where))
            fail_msg("case %zu: rc %d, message '%s', wanted '%s'", i, rc, err.message, where);
        assert_int_equal(err.code, FHIRSYNC_E_CONFIG);
        assert_null(cfg);
        for (size_t n = 0; n < 3 && c->needles[n]; n++)
            if (!strstr(err.message, c->needles[n]))
                fail_msg("case %zu: '%s' lacks '%s'", i, err.message, c->needles[n]);
        /* a secret put in the file is never echoed back */
        assert_null(strstr(err.message, "hunter2"));
        assert_null(strstr(err.message, "s3cr3t"));
    }
}

static void test_errors_in_memory(void **state)
{
    (void)state;
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    static const char with_nul[] = "[endpoint a]\nscope = x\0y\n";
    assert_int_equal(fs_config_load_mem(with_nul, sizeof with_nul - 1, "mem.ini", &cfg, &err),
                     FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "mem.ini:2: "));
    assert_non_null(strstr(err.message, "NUL"));
    assert_null(cfg);

    size_t big = 9000;
    char *text = malloc(big + 32);
    assert_non_null(text);
    strcpy(text, "[endpoint a]\nscope = ");
    size_t used = strlen(text);
    memset(text + used, 'x', big);
    text[used + big] = '\n';
    assert_int_equal(fs_config_load_mem(text, used + big + 1, "mem.ini", &cfg, &err),
                     FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "mem.ini:2: "));
    assert_non_null(strstr(err.message, "longer than"));
    free(text);

    /* the first error wins: a syntax error before a bad value */
    static const char two[] = "[endpoint a]\njunk\ntimeout = x\n";
    assert_int_equal(fs_config_load_mem(two, sizeof two - 1, "mem.ini", &cfg, &err),
                     FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "mem.ini:2: cannot parse"));
    static const char two_b[] = "[endpoint a]\ntimeout = x\njunk\n";
    assert_int_equal(fs_config_load_mem(two_b, sizeof two_b - 1, "mem.ini", &cfg, &err),
                     FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "mem.ini:2: timeout"));

    /* an empty file, comments only, a file without a final newline, CRLF and a BOM are fine */
    assert_int_equal(fs_config_load_mem("", 0, "mem.ini", &cfg, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_config_endpoint_count(cfg), 0);
    fhirsync_config_free(cfg);
    static const char crlf[] = "\xEF\xBB\xBF; c\r\n[endpoint a]\r\ntimeout = 5\r\nscope = s";
    assert_int_equal(fs_config_load_mem(crlf, sizeof crlf - 1, "mem.ini", &cfg, &err), FHIRSYNC_OK);
    fhirsync_endpoint *a = fhirsync_config_endpoint(cfg, "a");
    assert_string_equal(fhirsync_endpoint_get(a, "timeout"), "5");
    assert_string_equal(fhirsync_endpoint_get(a, "scope"), "s");
    fhirsync_config_free(cfg);
}

static void test_unreadable_file(void **state)
{
    fixture *f = *state;
    char path[700];
    snprintf(path, sizeof path, "%s/does-not-exist.ini", f->dir);
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_config_load(path, &cfg, &err), FHIRSYNC_E_IO);
    assert_null(cfg);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, strerror(ENOENT)));
    /* a directory is a configuration (of its *.ini files): an empty one has no endpoints */
    assert_int_equal(fhirsync_config_load(f->dir, &cfg, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_config_endpoint_count(cfg), 0);
    fhirsync_config_free(cfg);
    /* a *.ini that cannot be read as a file (here a directory) is an error naming it */
    char sub[700];
    snprintf(sub, sizeof sub, "%s/sub.ini", f->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(fhirsync_config_load(f->dir, &cfg, &err), FHIRSYNC_E_IO);
    assert_null(cfg);
    assert_non_null(strstr(err.message, sub));
}

static void test_sections_long_and_indented_lines(void **state)
{
    (void)state;
    /* an empty endpoint section still defines the endpoint; an indented line is an ordinary
     * line (never an inih continuation); a value longer than inih's line buffer is whole;
     * inline comments go */
    char text[4096];
    char types[2048] = "";
    static const char *const names[] = {"Patient",   "Observation",       "Condition",
                                        "Encounter", "MedicationRequest", "AllergyIntolerance"};
    for (int i = 0; i < 40; i++) {
        if (i)
            strcat(types, ",");
        strcat(types, names[i % 6]);
    }
    snprintf(text, sizeof text,
             "[endpoint empty]\n"
             "[ Endpoint  b ] ; comment\n"
             "  base_url = https://x.org/fhir ; where\n"
             "\tscope = system/*.read\n"
             "types = %s ; all of them\n",
             types);
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fs_config_load_mem(text, strlen(text), "mem.ini", &cfg, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_config_endpoint_count(cfg), 2);
    assert_non_null(fhirsync_config_endpoint(cfg, "empty"));
    fhirsync_endpoint *b = fhirsync_config_endpoint(cfg, "b");
    assert_non_null(b);
    assert_string_equal(fhirsync_endpoint_get(b, "base_url"), "https://x.org/fhir");
    assert_string_equal(fhirsync_endpoint_get(b, "scope"), "system/*.read");
    assert_true(strlen(types) > 300);
    assert_string_equal(fhirsync_endpoint_get(b, "types"), types);
    assert_string_equal(fhirsync_endpoint_source(b, "types"), "mem.ini:5");
    fhirsync_config_free(cfg);
}

static void test_precedence_file_env_explicit(void **state)
{
    fixture *f = *state;
    const char *path =
        write_file(f, "p.ini", "[endpoint a]\ntimeout = 30\nscope = file/scope\n", 0644);
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_config_load(path, &cfg, &err), FHIRSYNC_OK);
    fhirsync_endpoint *a = fhirsync_config_endpoint(cfg, "a");
    assert_string_equal(fhirsync_endpoint_get(a, "timeout"), "30");

    setenv("FHIRSYNC_TIMEOUT", "40", 1);
    setenv("FHIRSYNC_CLIENT_ID", "from-env", 1);
    setenv("FHIRSYNC_MAX_RETRIES", "", 1); /* empty counts as unset */
    assert_int_equal(fhirsync_endpoint_apply_env(a, &err), FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(a, "timeout"), "40");
    assert_string_equal(fhirsync_endpoint_source(a, "timeout"), "environment FHIRSYNC_TIMEOUT");
    assert_string_equal(fhirsync_endpoint_get(a, "client_id"), "from-env");
    assert_string_equal(fhirsync_endpoint_get(a, "scope"), "file/scope");
    assert_string_equal(fhirsync_endpoint_get(a, "max_retries"), "5");

    assert_int_equal(fhirsync_endpoint_set(a, "timeout", "50", "command line --timeout", &err),
                     FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(a, "timeout"), "50");
    assert_string_equal(fhirsync_endpoint_source(a, "timeout"), "command line --timeout");
    assert_int_equal(fs_endpoint_long(a, "timeout"), 50);

    /* a bad value from the environment names the variable; a bad set names its source */
    unsetenv("FHIRSYNC_TIMEOUT");
    setenv("FHIRSYNC_PARALLEL", "lots", 1);
    assert_int_equal(fhirsync_endpoint_apply_env(a, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "environment FHIRSYNC_PARALLEL"));
    assert_non_null(strstr(err.message, "parallel"));
    unsetenv("FHIRSYNC_PARALLEL");
    assert_int_equal(fhirsync_endpoint_set(a, "since", "yesterday", "command line --since", &err),
                     FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "command line --since: since"));
    assert_int_equal(fhirsync_endpoint_set(a, "client_secret", "x", "command line --set", &err),
                     FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "client_secret_file"));
    assert_int_equal(fhirsync_endpoint_set(a, "timeout", NULL, "x", &err), FHIRSYNC_E_ARG);
    /* a failed set keeps the previous value */
    assert_string_equal(fhirsync_endpoint_get(a, "timeout"), "50");
    fhirsync_config_free(cfg);
}

static void test_header_repeatable(void **state)
{
    (void)state;
    static const char text[] = "[endpoint a]\nheader = A: 1\nheader=B:2\n";
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fs_config_load_mem(text, sizeof text - 1, "h.ini", &cfg, &err), FHIRSYNC_OK);
    fhirsync_endpoint *a = fhirsync_config_endpoint(cfg, "a");
    assert_int_equal(fhirsync_endpoint_count(a, "header"), 2);
    assert_string_equal(fhirsync_endpoint_get_at(a, "header", 1), "B: 2");

    /* the variable replaces the file's list, one header a line */
    setenv("FHIRSYNC_HEADER", "Epic-Client-ID: abc\r\n\nX-One: 1\nX-Two:  two words", 1);
    assert_int_equal(fhirsync_endpoint_apply_env(a, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_count(a, "header"), 3);
    assert_string_equal(fhirsync_endpoint_get_at(a, "header", 0), "Epic-Client-ID: abc");
    assert_string_equal(fhirsync_endpoint_get_at(a, "header", 2), "X-Two: two words");
    assert_string_equal(fhirsync_endpoint_source(a, "header"), "environment FHIRSYNC_HEADER");

    /* explicit sets append; clear empties the list */
    assert_int_equal(fhirsync_endpoint_set(a, "header", "X-Three: 3", "--header", &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_count(a, "header"), 4);
    assert_int_equal(
        fhirsync_endpoint_set(a, "header", "X-Bad: a\r\nInjected: 1", "--header", &err),
        FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "header"));
    assert_int_equal(fhirsync_endpoint_count(a, "header"), 4);
    fhirsync_endpoint_clear(a, "header");
    assert_int_equal(fhirsync_endpoint_count(a, "header"), 0);
    assert_null(fhirsync_endpoint_get(a, "header"));

    setenv("FHIRSYNC_HEADER", "Not a header", 1);
    assert_int_equal(fhirsync_endpoint_apply_env(a, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "environment FHIRSYNC_HEADER: header"));
    fhirsync_config_free(cfg);
}

static void test_vendor_detection(void **state)
{
    (void)state;
    static const struct {
        const char *url, *vendor;
    } cases[] = {
        {"https://fhir4.eclinicalworks.com/fhir/r4/ABCD", "eclinicalworks"},
        {"https://staging-fhir.ecwcloud.eclinicalworks.com/fhir/r4/X", "eclinicalworks"},
        {"https://fhir4.healow.com/fhir/r4/ABCD", "eclinicalworks"},
        {"https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4", "epic"},
        {"https://ehr.hospital.org/Interconnect-FHIR/api/FHIR/R4", "epic"},
        {"https://ehr.hospital.org/FHIRProxy/api/FHIR/R4/", "epic"},
        {"https://fhir-ehr-code.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d", "cerner"},
        {"https://fhir.us-ashburn-1.oraclecloud.com/r4/tenant", "cerner"},
        {"https://hapi.fhir.org/baseR4", "generic"},
        {"https://notepic.com.evil.org/fhir", "generic"},
        {"https://eclinicalworks.com.example.org/fhir", "generic"},
        {"http://127.0.0.1:8080/fhir", "generic"},
        {NULL, "generic"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (strcmp(fs_vendor_detect(cases[i].url), cases[i].vendor) != 0)
            fail_msg("%s: got %s, wanted %s", cases[i].url ? cases[i].url : "(null)",
                     fs_vendor_detect(cases[i].url), cases[i].vendor);
    assert_true(fs_vendor_patient_facing_host("https://fhir4.healow.com/fhir/r4/X"));
    assert_false(fs_vendor_patient_facing_host("https://fhir4.eclinicalworks.com/fhir/r4/X"));

    char host[64];
    assert_true(fs_config_url_host("https://u@[::1]:8443/fhir", host, sizeof host));
    assert_string_equal(host, "::1");
    assert_true(fs_config_url_host("HTTP://EHR.Example.ORG?x", host, sizeof host));
    assert_string_equal(host, "ehr.example.org");
    assert_false(fs_config_url_host("ftp://x.org/", host, sizeof host));

    /* an explicit vendor beats detection; detection shows as the default */
    fhirsync_endpoint *ep = fhirsync_endpoint_new("v");
    fhirsync_error err = {0};
    assert_int_equal(
        fhirsync_endpoint_set(ep, "base_url", "https://fhir.epic.com/api/FHIR/R4", "t", &err),
        FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(ep, "vendor"), "epic");
    assert_string_equal(fhirsync_endpoint_source(ep, "vendor"), "default");
    assert_int_equal(fhirsync_endpoint_set(ep, "vendor", "Cerner", "t", &err), FHIRSYNC_OK);
    assert_string_equal(fs_endpoint_vendor(ep), "cerner");
    assert_string_equal(fhirsync_endpoint_get(ep, "vendor"), "cerner");
    fhirsync_endpoint_free(ep);
}

static void test_rate_limit_default(void **state)
{
    (void)state;
    fhirsync_error err = {0};
    fhirsync_endpoint *ep = fhirsync_endpoint_new("ecw");
    assert_int_equal(fs_endpoint_long(ep, "rate_limit"), 0);
    assert_int_equal(fhirsync_endpoint_set(ep, "base_url",
                                           "https://fhir4.eclinicalworks.com/fhir/r4/ABCD", "t",
                                           &err),
                     FHIRSYNC_OK);
    assert_int_equal(fs_endpoint_long(ep, "rate_limit"), 250);
    assert_string_equal(fhirsync_endpoint_get(ep, "rate_limit"), "250");
    assert_string_equal(fhirsync_endpoint_source(ep, "rate_limit"), "default");
    assert_int_equal(fhirsync_endpoint_set(ep, "rate_limit", "100", "t", &err), FHIRSYNC_OK);
    assert_int_equal(fs_endpoint_long(ep, "rate_limit"), 100);
    assert_int_equal(fhirsync_endpoint_set(ep, "rate_limit", "0", "t", &err), FHIRSYNC_OK);
    assert_int_equal(fs_endpoint_long(ep, "rate_limit"), 0);
    fhirsync_endpoint_clear(ep, "rate_limit");
    assert_int_equal(fhirsync_endpoint_set(ep, "vendor", "generic", "t", &err), FHIRSYNC_OK);
    assert_int_equal(fs_endpoint_long(ep, "rate_limit"), 0);
    fhirsync_endpoint_free(ep);

    ep = fhirsync_endpoint_new("forced");
    assert_int_equal(
        fhirsync_endpoint_set(ep, "base_url", "https://proxy.example.org/fhir", "t", &err),
        FHIRSYNC_OK);
    assert_int_equal(fs_endpoint_long(ep, "rate_limit"), 0);
    assert_int_equal(fhirsync_endpoint_set(ep, "vendor", "eclinicalworks", "t", &err), FHIRSYNC_OK);
    assert_int_equal(fs_endpoint_long(ep, "rate_limit"), 250);
    fhirsync_endpoint_free(ep);
}

static void test_durations_and_getters(void **state)
{
    (void)state;
    long s = 0;
    assert_true(fs_config_parse_duration("30s", &s));
    assert_int_equal(s, 30);
    assert_true(fs_config_parse_duration("15m", &s));
    assert_int_equal(s, 900);
    assert_true(fs_config_parse_duration("1h30m", &s));
    assert_int_equal(s, 5400);
    assert_true(fs_config_parse_duration("2d", &s));
    assert_int_equal(s, 172800);
    assert_false(fs_config_parse_duration("15", &s));
    assert_false(fs_config_parse_duration("0s", &s));
    assert_false(fs_config_parse_duration("1w", &s));
    assert_false(fs_config_parse_duration("h", &s));
    assert_false(fs_config_parse_duration("400d", &s));
    assert_false(fs_config_parse_duration("99999999999999999999s", &s));
    assert_false(fs_config_parse_duration("", &s));

    fhirsync_error err = {0};
    fhirsync_endpoint *ep = fhirsync_endpoint_new("g");
    assert_int_equal(fs_endpoint_long(ep, "every"), 0);
    assert_int_equal(fhirsync_endpoint_set(ep, "every", "1h", "t", &err), FHIRSYNC_OK);
    assert_int_equal(fs_endpoint_long(ep, "every"), 3600);
    assert_int_equal(fhirsync_endpoint_set(ep, "delete_job", "NO", "t", &err), FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(ep, "delete_job"), "no");
    assert_false(fs_endpoint_bool(ep, "delete_job"));
    assert_int_equal(fhirsync_endpoint_set(ep, "since", "2024-01-31T00:00:00+01:00", "t", &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "timeout", " 7 ", "t", &err), FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(ep, "timeout"), "7");
    assert_int_equal(fhirsync_endpoint_set(ep, "registered_jwks",
                                           "https://app.example.org/.well-known/jwks.json", "t",
                                           &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_set(ep, "store", ":memory:", "t", &err), FHIRSYNC_OK);
    /* outside a file, a relative path stays as given */
    assert_int_equal(fhirsync_endpoint_set(ep, "key_file", "key.pem", "t", &err), FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(ep, "key_file"), "key.pem");
    assert_int_equal(fs_endpoint_long(ep, "no_such_setting"), 0);
    assert_null(fhirsync_endpoint_get(ep, "no_such_setting"));
    fhirsync_endpoint_free(ep);

    /* every listed setting has a help line, and only those are known */
    const char *const *names = fhirsync_setting_names();
    size_t n = 0;
    for (; names[n]; n++) {
        assert_non_null(fhirsync_setting_help(names[n]));
        assert_true(fs_setting_known(names[n]));
        for (size_t m = 0; m < n; m++)
            assert_string_not_equal(names[m], names[n]);
    }
    assert_int_equal(n, 38);
    assert_null(fhirsync_setting_help("client_secret"));
}

/* auth = login changes the defaults of auth_method, scope and mode; an explicit value wins, and a
 * public client (auth_method none) is refused for Backend Services */
static void test_login_defaults(void **state)
{
    (void)state;
    fhirsync_error err = {0};
    fhirsync_endpoint *ep = fhirsync_endpoint_new("site1");
    fhirsync_endpoint_set(ep, "base_url", "https://x.org/fhir", "t", &err);
    fhirsync_endpoint_set(ep, "client_id", "c", "t", &err);
    assert_string_equal(fhirsync_endpoint_get(ep, "auth"), "backend");
    assert_string_equal(fhirsync_endpoint_get(ep, "auth_method"), "private_key_jwt");
    assert_string_equal(fhirsync_endpoint_get(ep, "scope"), "system/*.read");
    assert_string_equal(fhirsync_endpoint_get(ep, "mode"), "bulk");
    fhirsync_endpoint_set(ep, "auth_method", "none", "t", &err);
    assert_int_equal(fhirsync_endpoint_validate(ep, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "auth = login"));
    fhirsync_endpoint_clear(ep, "auth_method");
    assert_int_equal(fhirsync_endpoint_set(ep, "auth", "LOGIN", "t", &err), FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(ep, "auth"), "login");
    assert_string_equal(fhirsync_endpoint_get(ep, "auth_method"), "none");
    assert_string_equal(fhirsync_endpoint_get(ep, "scope"), FS_LOGIN_DEFAULT_SCOPE);
    assert_string_equal(fhirsync_endpoint_get(ep, "mode"), "crawl");
    assert_string_equal(fhirsync_endpoint_source(ep, "mode"), "default");
    assert_int_equal(fhirsync_endpoint_validate(ep, &err), FHIRSYNC_OK);
    fhirsync_endpoint_set(ep, "mode", "bulk", "t", &err);
    assert_string_equal(fhirsync_endpoint_get(ep, "mode"), "bulk");
    assert_int_equal(fhirsync_endpoint_set(ep, "redirect_port", "0", "t", &err), FHIRSYNC_E_CONFIG);
    assert_int_equal(
        fhirsync_endpoint_set(ep, "redirect_uri", "http://127.0.0.1:8765/cb", "t", &err),
        FHIRSYNC_OK);
    fhirsync_endpoint_free(ep);
}

static void test_validate(void **state)
{
    (void)state;
    fhirsync_error err = {0};
    fhirsync_endpoint *ep = fhirsync_endpoint_new("site1");
    assert_int_equal(fhirsync_endpoint_validate(ep, &err), FHIRSYNC_E_CONFIG);
    assert_string_equal(err.message,
                        "no FHIR base URL: set base_url in [endpoint site1] of the config file, "
                        "FHIRSYNC_BASE_URL, or --base-url");
    fhirsync_endpoint_set(ep, "base_url", "https://x.org/fhir", "t", &err);
    assert_int_equal(fhirsync_endpoint_validate(ep, &err), FHIRSYNC_E_CONFIG);
    assert_string_equal(err.message,
                        "no client id: set client_id in [endpoint site1] of the config file, "
                        "FHIRSYNC_CLIENT_ID, or --client-id");
    fhirsync_endpoint_set(ep, "client_id", "c", "t", &err);
    assert_int_equal(fhirsync_endpoint_validate(ep, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "key_file"));
    assert_non_null(strstr(err.message, "--key-file"));
    fhirsync_endpoint_set(ep, "key_file", "/k.pem", "t", &err);
    assert_int_equal(fhirsync_endpoint_validate(ep, &err), FHIRSYNC_OK);

    fhirsync_endpoint_set(ep, "auth_method", "client_secret_basic", "t", &err);
    assert_int_equal(fhirsync_endpoint_validate(ep, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "client_secret_file"));
    assert_non_null(strstr(err.message, "client_secret_env"));
    fhirsync_endpoint_set(ep, "client_secret_env", "TEST_CONFIG_SECRET", "t", &err);
    assert_int_equal(fhirsync_endpoint_validate(ep, &err), FHIRSYNC_OK);
    fhirsync_endpoint_set(ep, "client_secret_file", "/s", "t2", &err);
    assert_int_equal(fhirsync_endpoint_validate(ep, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "only one"));
    fhirsync_endpoint_free(ep);
}

static void test_client_secret(void **state)
{
    fixture *f = *state;
    fhirsync_error err = {0};
    char *secret = (char *)"not null";
    fhirsync_endpoint *ep = fhirsync_endpoint_new("s");
    fhirsync_endpoint_set(ep, "auth_method", "client_secret_post", "t", &err);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_E_CONFIG);
    assert_null(secret);

    /* from a file: one trailing newline goes */
    const char *path = write_file(f, "secret", "s3cr3t-value\n", 0600);
    assert_int_equal(fhirsync_endpoint_set(ep, "client_secret_file", path, "t", &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_OK);
    assert_string_equal(secret, "s3cr3t-value");
    fhirsync_free_secret(secret);

    /* readable by others: refused with a chmod hint */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_E_KEY_PERMS);
    assert_null(secret);
    assert_non_null(strstr(err.message, "chmod 600"));
    assert_non_null(strstr(err.message, path));
    assert_null(strstr(err.message, "s3cr3t"));

    /* empty, too large, missing */
    write_file(f, "secret", "\n", 0600);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "empty"));
    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    write_file(f, "secret", big, 0600);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "larger than"));
    big[4096] = '\0';
    write_file(f, "secret", big, 0400);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_OK);
    assert_int_equal(strlen(secret), 4096);
    fhirsync_free_secret(secret);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_E_IO);
    assert_non_null(strstr(err.message, strerror(ENOENT)));

    /* from the environment */
    fhirsync_endpoint_clear(ep, "client_secret_file");
    assert_int_equal(fhirsync_endpoint_set(ep, "client_secret_env", "TEST_CONFIG_SECRET",
                                           "command line --client-secret-env", &err),
                     FHIRSYNC_OK);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "TEST_CONFIG_SECRET"));
    assert_non_null(strstr(err.message, "not set"));
    setenv("TEST_CONFIG_SECRET", "", 1);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(err.message, "empty"));
    setenv("TEST_CONFIG_SECRET", "from-env-value", 1);
    assert_int_equal(fhirsync_endpoint_client_secret(ep, &secret, &err), FHIRSYNC_OK);
    assert_string_equal(secret, "from-env-value");
    fhirsync_free_secret(secret);
    fhirsync_endpoint_free(ep);
}

/* Relative paths are relative to the config file, which may be named relatively itself. */
static void test_relative_paths(void **state)
{
    (void)state;
    static const char text[] = "[endpoint a]\nkey_file = k.pem\nca_file = /abs/ca.pem\n"
                               "registered_jwks = jwks.json\nstore = data/sync.db\n";
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fs_config_load_mem(text, sizeof text - 1, "conf/site.ini", &cfg, &err),
                     FHIRSYNC_OK);
    fhirsync_endpoint *a = fhirsync_config_endpoint(cfg, "a");
    assert_string_equal(fhirsync_endpoint_get(a, "key_file"), "conf/k.pem");
    assert_string_equal(fhirsync_endpoint_get(a, "ca_file"), "/abs/ca.pem");
    assert_string_equal(fhirsync_endpoint_get(a, "registered_jwks"), "conf/jwks.json");
    assert_string_equal(fhirsync_endpoint_get(a, "store"), "conf/data/sync.db");
    fhirsync_config_free(cfg);
    assert_int_equal(fs_config_load_mem(text, sizeof text - 1, "site.ini", &cfg, &err),
                     FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(fhirsync_config_endpoint(cfg, "a"), "key_file"),
                        "k.pem");
    fhirsync_config_free(cfg);
}

static void test_alloc_failure_walk(void **state)
{
    fixture *f = *state;
    const char *path = write_file(f, "walk.ini",
                                  "[endpoint a]\nbase_url = https://fhir4.eclinicalworks.com/x\n"
                                  "client_id = c\nheader = A: 1\nheader = B: 2\n"
                                  "[defaults]\ntimeout = 9\nscope = s t\ntypes = Patient\n"
                                  "[endpoint b]\nkey_file = k.pem\n",
                                  0644);
    bool completed = false;
    unsigned long n;
    for (n = 1; n < 5000 && !completed; n++) {
        fhirsync_config *cfg = NULL;
        fhirsync_error err = {0};
        fs_alloc_fail_at(n);
        fhirsync_code rc = fhirsync_config_load(path, &cfg, &err);
        fhirsync_endpoint *copy = NULL;
        if (rc == FHIRSYNC_OK) {
            /* also the other allocating calls, under the same injected failure */
            copy = fhirsync_endpoint_dup(fhirsync_config_endpoint(cfg, "a"));
            fhirsync_endpoint *added = NULL;
            fhirsync_error aerr;
            fhirsync_code arc = fhirsync_config_add_endpoint(cfg, "c", &added, &aerr);
            assert_true(arc == FHIRSYNC_OK ? added != NULL : arc == FHIRSYNC_E_NOMEM && !added);
        }
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        if (rc == FHIRSYNC_OK) {
            assert_non_null(cfg);
            if (!fired) {
                assert_non_null(copy);
                assert_non_null(fhirsync_config_endpoint(cfg, "c"));
                assert_string_equal(fhirsync_endpoint_get(copy, "timeout"), "9");
                completed = true;
            }
        } else {
            if (rc != FHIRSYNC_E_NOMEM)
                fail_msg("allocation %lu: rc %d (%s)", n, rc, err.message);
            assert_null(cfg);
            assert_true(fired);
        }
        fhirsync_endpoint_free(copy);
        fhirsync_config_free(cfg);
    }
    assert_true(completed);
    assert_true(n > 20); /* the walk did walk */

    /* the same for the environment layer */
    setenv("FHIRSYNC_HEADER", "X-A: 1\nX-B: 2", 1);
    setenv("FHIRSYNC_SCOPE", "system/*.read", 1);
    completed = false;
    for (n = 1; n < 1000 && !completed; n++) {
        fhirsync_endpoint *ep = fhirsync_endpoint_new("env");
        assert_non_null(ep);
        fhirsync_error err = {0};
        fs_alloc_fail_at(n);
        fhirsync_code rc = fhirsync_endpoint_apply_env(ep, &err);
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        if (rc == FHIRSYNC_OK && !fired)
            completed = true;
        else if (rc != FHIRSYNC_OK)
            assert_int_equal(rc, FHIRSYNC_E_NOMEM);
        fhirsync_endpoint_free(ep);
    }
    assert_true(completed);
}

/* ---- many practices: directories, defaults across files, checks ----------------------------- */

/* Make dir/name a directory; f->path becomes its path. */
static const char *make_dir(fixture *f, const char *name)
{
    snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
    assert_int_equal(mkdir(f->path, 0700), 0);
    return f->path;
}

/* A directory is one configuration: its *.ini files in name order (others and hidden ones
 * ignored), one [defaults] for all of them, relative paths relative to each file. */
static void test_directory_of_files(void **state)
{
    fixture *f = *state;
    char dir[700];
    snprintf(dir, sizeof dir, "%s", make_dir(f, "conf.d"));
    write_file(f, "conf.d/20-b.ini",
               "[endpoint b1]\nbase_url = https://fhir.example.org/b1\nclient_id = b1\n"
               "[endpoint b2]\nbase_url = https://fhir.example.org/b2\nclient_id = b2\n"
               "key_file = own.pem\ntimeout = 5\n",
               0644);
    write_file(f, "conf.d/10-a.ini", "[endpoint a]\nbase_url = https://fhir.example.org/a\n", 0644);
    write_file(f, "conf.d/99-defaults.ini",
               "; where [defaults] sits does not matter\n[defaults]\nkey_file = keys/shared.pem\n"
               "timeout = 30\nclient_id = shared-client\n",
               0644);
    /* not configuration: other suffixes, hidden files, editor backups */
    write_file(f, "conf.d/README", "not an ini file at all\n", 0644);
    write_file(f, "conf.d/.hidden.ini", "junk that would not parse\n", 0644);
    write_file(f, "conf.d/20-b.ini~", "junk that would not parse\n", 0644);
    write_file(f, "conf.d/notes.ini.bak", "junk that would not parse\n", 0644);

    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_config_load(dir, &cfg, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_config_endpoint_count(cfg), 3);
    static const char *const order[] = {"a", "b1", "b2"};
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(fhirsync_endpoint_name(fhirsync_config_endpoint_at(cfg, i)), order[i]);

    char expected[800];
    fhirsync_endpoint *a = fhirsync_config_endpoint(cfg, "a");
    snprintf(expected, sizeof expected, "%s/keys/shared.pem", dir);
    assert_string_equal(fhirsync_endpoint_get(a, "key_file"), expected);
    snprintf(expected, sizeof expected, "%s/99-defaults.ini:3", dir);
    assert_string_equal(fhirsync_endpoint_source(a, "key_file"), expected);
    assert_string_equal(fhirsync_endpoint_get(a, "client_id"), "shared-client");
    assert_string_equal(fhirsync_endpoint_get(a, "timeout"), "30");
    fhirsync_endpoint *b2 = fhirsync_config_endpoint(cfg, "b2");
    snprintf(expected, sizeof expected, "%s/own.pem", dir);
    assert_string_equal(fhirsync_endpoint_get(b2, "key_file"), expected);
    assert_string_equal(fhirsync_endpoint_get(b2, "client_id"), "b2");
    assert_string_equal(fhirsync_endpoint_get(b2, "timeout"), "5");
    snprintf(expected, sizeof expected, "%s/20-b.ini:8", dir);
    assert_string_equal(fhirsync_endpoint_source(b2, "timeout"), expected);
    fhirsync_config_free(cfg);

    /* a trailing '/' changes nothing */
    char slashed[800];
    snprintf(slashed, sizeof slashed, "%s/", dir);
    assert_int_equal(fhirsync_config_load(slashed, &cfg, &err), FHIRSYNC_OK);
    snprintf(expected, sizeof expected, "%s/20-b.ini:5", dir);
    assert_string_equal(fhirsync_endpoint_source(fhirsync_config_endpoint(cfg, "b2"), "base_url"),
                        expected);
    fhirsync_config_free(cfg);
}

/* [defaults] < [endpoint NAME] < environment < an explicit set (the flags), across files. */
static void test_defaults_precedence(void **state)
{
    fixture *f = *state;
    char dir[700];
    snprintf(dir, sizeof dir, "%s", make_dir(f, "p.d"));
    write_file(f, "p.d/defaults.ini", "[defaults]\ntimeout = 10\nparallel = 2\nmax_retries = 3\n",
               0644);
    write_file(f, "p.d/site.ini", "[endpoint site]\ntimeout = 20\nparallel = 4\n", 0644);
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_config_load(dir, &cfg, &err), FHIRSYNC_OK);
    fhirsync_endpoint *ep = fhirsync_config_endpoint(cfg, "site");
    assert_string_equal(fhirsync_endpoint_get(ep, "max_retries"), "3"); /* [defaults] */
    assert_string_equal(fhirsync_endpoint_get(ep, "parallel"), "4");    /* the endpoint */
    assert_string_equal(fhirsync_endpoint_get(ep, "timeout"), "20");
    assert_string_equal(fhirsync_endpoint_get(ep, "retry_cap"), "300"); /* built in */
    setenv("FHIRSYNC_TIMEOUT", "40", 1);
    setenv("FHIRSYNC_MAX_RETRIES", "7", 1);
    assert_int_equal(fhirsync_endpoint_apply_env(ep, &err), FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(ep, "timeout"), "40");
    assert_string_equal(fhirsync_endpoint_get(ep, "max_retries"), "7");
    assert_string_equal(fhirsync_endpoint_source(ep, "max_retries"),
                        "environment FHIRSYNC_MAX_RETRIES");
    assert_string_equal(fhirsync_endpoint_get(ep, "parallel"), "4");
    assert_int_equal(fhirsync_endpoint_set(ep, "timeout", "50", "command line --timeout", &err),
                     FHIRSYNC_OK);
    assert_string_equal(fhirsync_endpoint_get(ep, "timeout"), "50");
    fhirsync_config_free(cfg);
}

/* Two sections of one name in two files, or two [defaults]: the error names both places. */
static void test_duplicates_across_files(void **state)
{
    fixture *f = *state;
    char dir[700], first[800], second[800];
    snprintf(dir, sizeof dir, "%s", make_dir(f, "dup.d"));
    write_file(f, "dup.d/a.ini", "[endpoint x]\nclient_id = a\n\n[endpoint same]\nclient_id = a\n",
               0644);
    snprintf(first, sizeof first, "%s", f->path);
    write_file(f, "dup.d/b.ini", "; another practice\n[endpoint same]\nclient_id = b\n", 0644);
    snprintf(second, sizeof second, "%s", f->path);
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_config_load(dir, &cfg, &err), FHIRSYNC_E_CONFIG);
    assert_null(cfg);
    char where[2000];
    snprintf(where, sizeof where, "%s:2: duplicate endpoint 'same' (already defined at %s:4)",
             second, first);
    assert_string_equal(err.message, where);

    write_file(f, "dup.d/b.ini", "[defaults]\ntimeout = 5\n", 0644);
    write_file(f, "dup.d/c.ini", "[endpoint y]\n[defaults]\nparallel = 2\n", 0644);
    assert_int_equal(fhirsync_config_load(dir, &cfg, &err), FHIRSYNC_E_CONFIG);
    snprintf(where, sizeof where, "%s:2: a second [defaults] section (the first is at %s:1)",
             f->path, second);
    assert_non_null(strstr(err.message, where));
}

/* Find the problem at file:line (line 0: any), about `endpoint` and `setting` (NULL: none). */
static const fhirsync_config_problem *find_problem(const fhirsync_config_report *r,
                                                   const char *file, int line, const char *endpoint,
                                                   const char *setting)
{
    for (size_t i = 0; i < fhirsync_config_report_count(r); i++) {
        const fhirsync_config_problem *p = fhirsync_config_report_at(r, i);
        if ((file ? p->file && strcmp(p->file, file) == 0 : !p->file) &&
            (!line || p->line == line) &&
            (endpoint ? p->endpoint && strcmp(p->endpoint, endpoint) == 0 : !p->endpoint) &&
            (setting ? p->setting && strcmp(p->setting, setting) == 0 : !p->setting))
            return p;
    }
    return NULL;
}

static void dump_report(const fhirsync_config_report *r)
{
    for (size_t i = 0; i < fhirsync_config_report_count(r); i++) {
        const fhirsync_config_problem *p = fhirsync_config_report_at(r, i);
        print_message("  %s:%d [%s] %s: %s\n", p->file ? p->file : "-", p->line,
                      p->endpoint ? p->endpoint : "-", p->setting ? p->setting : "-", p->message);
    }
}

/* A checking load reports every problem of every file with its file, line, endpoint and
 * setting, keeps what it could read, and the check adds what each endpoint lacks, once. */
static void test_check_collects_every_problem(void **state)
{
    fixture *f = *state;
    char dir[700], defaults[800], one[800], two[800], unreadable[800];
    snprintf(dir, sizeof dir, "%s", make_dir(f, "check.d"));
    write_file(f, "check.d/00-defaults.ini",
               "[defaults]\nkey_file = /keys/shared.pem\nshared_store = yes\n", 0644);
    snprintf(defaults, sizeof defaults, "%s", f->path);
    write_file(f, "check.d/one.ini",
               "[endpoint good]\n"                           /* 1 */
               "base_url = https://fhir.example.org/good\n"  /* 2 */
               "client_id = good\n"                          /* 3 */
               "[endpoint bad]\n"                            /* 4 */
               "base_url = ftp://fhir.example.org/bad\n"     /* 5: refused */
               "timeout = soon\n"                            /* 6: refused */
               "tmeout = 5\n"                                /* 7: unknown */
               "this line is junk\n"                         /* 8: syntax */
               "[endpoint lacking]\n"                        /* 9: no client_id */
               "base_url = https://fhir.example.org/lack\n", /* 10 */
               0644);
    snprintf(one, sizeof one, "%s", f->path);
    write_file(f, "check.d/two.ini",
               "[endpoint good]\n"                       /* 1: duplicate */
               "parallel = many\n"                       /* 2: refused, in the duplicate */
               "[practice z]\n"                          /* 3: unknown section */
               "client_id = z\n"                         /* 4 */
               "[endpoint secret]\n"                     /* 5 */
               "base_url = https://fhir.example.org/s\n" /* 6 */
               "client_id = s\n"                         /* 7 */
               "auth_method = client_secret_basic\n",    /* 8: no secret source */
               0644);
    snprintf(two, sizeof two, "%s", f->path);
    write_file(f, "check.d/unreadable.ini", "[endpoint u]\n", 0644);
    snprintf(unreadable, sizeof unreadable, "%s", f->path);
    assert_int_equal(truncate(unreadable, 2L << 24), 0); /* larger than any config file */

    fhirsync_config_report *r = fhirsync_config_report_new();
    assert_non_null(r);
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fhirsync_config_load_report(dir, r, &cfg, &err), FHIRSYNC_OK);
    assert_non_null(cfg);
    /* what could be read: the refused values unset, the duplicate's settings kept nowhere */
    assert_int_equal(fhirsync_config_endpoint_count(cfg), 4);
    assert_null(fhirsync_endpoint_get(fhirsync_config_endpoint(cfg, "bad"), "base_url"));
    assert_string_equal(fhirsync_endpoint_get(fhirsync_config_endpoint(cfg, "good"), "parallel"),
                        "4");

    const fhirsync_config_problem *p = find_problem(r, one, 5, "bad", "base_url");
    assert_non_null(p);
    assert_int_equal(p->severity, FHIRSYNC_CONFIG_ERROR);
    assert_int_equal(p->code, FHIRSYNC_E_CONFIG);
    assert_non_null(strstr(p->message, "https://"));
    assert_null(strstr(p->message, one)); /* the location is kept apart */
    char source[900];
    snprintf(source, sizeof source, "%s:5", one);
    assert_string_equal(p->source, source);
    assert_non_null(find_problem(r, one, 6, "bad", "timeout"));
    p = find_problem(r, one, 7, "bad", "tmeout");
    assert_non_null(p);
    assert_non_null(strstr(p->message, "did you mean 'timeout'"));
    p = find_problem(r, one, 8, "bad", NULL);
    assert_non_null(p);
    assert_non_null(strstr(p->message, "cannot parse"));
    p = find_problem(r, two, 1, "good", NULL);
    assert_non_null(p);
    snprintf(source, sizeof source, "duplicate endpoint 'good' (already defined at %s:1)", one);
    assert_string_equal(p->message, source);
    assert_non_null(find_problem(r, two, 2, "good", "parallel"));
    assert_non_null(find_problem(r, two, 3, NULL, NULL));
    p = find_problem(r, unreadable, 0, NULL, NULL);
    assert_non_null(p);
    assert_non_null(strstr(p->message, "larger than"));
    size_t loaded = fhirsync_config_report_count(r);
    if (loaded != 8) {
        dump_report(r);
        fail_msg("%zu problems after loading, wanted 8", loaded);
    }
    assert_int_equal(fhirsync_config_report_errors(r), 8);

    /* the check: what each endpoint lacks, except what was refused and reported already */
    assert_int_equal(fhirsync_config_check(cfg, r, &err), FHIRSYNC_OK);
    p = find_problem(r, one, 9, "lacking", "client_id");
    assert_non_null(p);
    assert_non_null(strstr(p->message, "no client id"));
    p = find_problem(r, two, 5, "secret", "client_secret_file");
    assert_non_null(p);
    assert_non_null(strstr(p->message, "needs a client secret"));
    /* "bad": its refused base_url is not reported missing; its client_id is */
    assert_non_null(find_problem(r, one, 4, "bad", "client_id"));
    for (size_t i = 0; i < fhirsync_config_report_count(r); i++) {
        p = fhirsync_config_report_at(r, i);
        if (p->endpoint && strcmp(p->endpoint, "bad") == 0 && p->setting &&
            strcmp(p->setting, "base_url") == 0 && p->line != 5)
            fail_msg("refused base_url reported again: %s", p->message);
    }
    if (fhirsync_config_report_count(r) != 11) {
        dump_report(r);
        fail_msg("%zu problems after the check, wanted 11", fhirsync_config_report_count(r));
    }

    /* what the application adds is placed where the setting came from */
    fhirsync_endpoint *good = fhirsync_config_endpoint(cfg, "good");
    assert_int_equal(fhirsync_config_report_add(r, good, "key_file", FHIRSYNC_CONFIG_ERROR,
                                                FHIRSYNC_E_KEY_PERMS, "key_file: readable by all"),
                     FHIRSYNC_OK);
    p = fhirsync_config_report_at(r, fhirsync_config_report_count(r) - 1);
    assert_string_equal(p->file, defaults);
    assert_int_equal(p->line, 2);
    assert_string_equal(p->endpoint, "good");
    assert_int_equal(p->code, FHIRSYNC_E_KEY_PERMS);
    setenv("FHIRSYNC_TIMEOUT", "12", 1);
    assert_int_equal(fhirsync_endpoint_apply_env(good, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_config_report_add(r, good, "timeout", FHIRSYNC_CONFIG_WARNING,
                                                FHIRSYNC_E_CONFIG, "short"),
                     FHIRSYNC_OK);
    p = fhirsync_config_report_at(r, fhirsync_config_report_count(r) - 1);
    assert_null(p->file);
    assert_int_equal(p->line, 0);
    assert_string_equal(p->source, "environment FHIRSYNC_TIMEOUT");
    assert_int_equal(fhirsync_config_report_errors(r), 12);
    assert_int_equal(
        fhirsync_config_report_add(NULL, good, NULL, FHIRSYNC_CONFIG_ERROR, FHIRSYNC_E_CONFIG, "x"),
        FHIRSYNC_E_ARG);
    assert_null(fhirsync_config_report_at(r, 99));
    fhirsync_config_free(cfg);
    fhirsync_config_report_free(r);
    fhirsync_config_report_free(NULL);

    /* a missing path is one problem about it, and an empty configuration */
    r = fhirsync_config_report_new();
    snprintf(source, sizeof source, "%s/missing.ini", f->dir);
    assert_int_equal(fhirsync_config_load_report(source, r, &cfg, &err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_config_endpoint_count(cfg), 0);
    assert_int_equal(fhirsync_config_report_count(r), 1);
    p = fhirsync_config_report_at(r, 0);
    assert_int_equal(p->code, FHIRSYNC_E_IO);
    assert_string_equal(p->file, source);
    assert_int_equal(fhirsync_config_check(cfg, r, &err), FHIRSYNC_OK);
    p = fhirsync_config_report_at(r, 1);
    assert_int_equal(p->severity, FHIRSYNC_CONFIG_WARNING);
    assert_non_null(strstr(p->message, "no endpoints"));
    assert_int_equal(fhirsync_config_report_errors(r), 1);
    fhirsync_config_free(cfg);
    assert_int_equal(fhirsync_config_load_report(source, NULL, &cfg, &err), FHIRSYNC_E_ARG);
    assert_null(cfg);
    fhirsync_config_report_free(r);
}

/* One store may hold one FHIR server: endpoints of two base URLs into one store are an error
 * (unless shared_store = yes); two endpoints of the same server, group and types into one store
 * a warning. Base URLs compare as the store compares them. */
static void test_check_stores(void **state)
{
    (void)state;
    static const char text[] =
        "[defaults]\nclient_id = c\nkey_file = /k.pem\nstore = shared.db\n"
        "[endpoint a]\nbase_url = https://ehr.example.org/fhir/A\n"        /* 5 */
        "[endpoint b]\nbase_url = https://ehr.example.org/fhir/B\n"        /* 7: clash with a */
        "[endpoint a-again]\nbase_url = HTTPS://EHR.example.org/fhir/A/\n" /* 9: repeats a */
        "[endpoint a-group]\nbase_url = https://ehr.example.org/fhir/A\ngroup_id = g1\n"
        "[endpoint own]\nbase_url = https://other.example.org/fhir\nstore = own.db\n" /* 14 */
        "[endpoint own-too]\nbase_url = https://other.example.org/fhir\nstore = own.db\n"
        "types = Patient\n"
        "[endpoint mirror]\nbase_url = https://mirror.example.org/fhir\nstore = s2.db\n"
        "shared_store = yes\n"
        "[endpoint main]\nbase_url = https://main.example.org/fhir\nstore = s2.db\n"
        "shared_store = yes\n";
    fhirsync_config *cfg = NULL;
    fhirsync_error err = {0};
    assert_int_equal(fs_config_load_mem(text, sizeof text - 1, "s.ini", &cfg, &err), FHIRSYNC_OK);
    fhirsync_config_report *r = fhirsync_config_report_new();
    assert_int_equal(fhirsync_config_check(cfg, r, &err), FHIRSYNC_OK);
    /* a, b, a-again and a-group clash (two servers in shared.db); own and own-too do not (one
     * server, different types); mirror and main share s2.db on purpose */
    static const char *const clash[] = {"a", "b", "a-again", "a-group"};
    for (size_t i = 0; i < 4; i++) {
        const fhirsync_config_problem *p = find_problem(r, "s.ini", 4, clash[i], "store");
        if (!p) {
            dump_report(r);
            fail_msg("no store problem for %s", clash[i]);
        }
        assert_int_equal(p->severity, FHIRSYNC_CONFIG_ERROR);
        assert_non_null(strstr(p->message, "shared.db"));
        assert_non_null(strstr(p->message, "shared_store = yes"));
    }
    const fhirsync_config_problem *p = find_problem(r, "s.ini", 4, "b", "store");
    assert_non_null(strstr(p->message, "endpoint a (s.ini:5)"));
    p = find_problem(r, "s.ini", 4, "a", "store");
    assert_non_null(strstr(p->message, "endpoint b (s.ini:7)"));
    p = find_problem(r, "s.ini", 10, "a-again", "base_url");
    assert_non_null(p);
    assert_int_equal(p->severity, FHIRSYNC_CONFIG_WARNING);
    assert_non_null(strstr(p->message, "endpoint a (s.ini:5)"));
    if (fhirsync_config_report_count(r) != 5) {
        dump_report(r);
        fail_msg("%zu problems, wanted 5", fhirsync_config_report_count(r));
    }
    assert_int_equal(fhirsync_config_report_errors(r), 4);
    fhirsync_config_report_free(r);
    fhirsync_config_free(cfg);
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* 500 practices, as a directory of 500 files and as one file of 500 sections, written here:
 * each loads and checks clean, with the shared [defaults] in every endpoint. The time is printed
 * (no test fails on time). */
static void test_500_endpoints(void **state)
{
    fixture *f = *state;
    enum { PRACTICES = 500 };
    char dir[700];
    snprintf(dir, sizeof dir, "%s", make_dir(f, "endpoints.d"));
    char *one = malloc(PRACTICES * 256 + 256);
    assert_non_null(one);
    static const char defaults[] = "[defaults]\nkey_file = /etc/fhirsync/key.pem\n"
                                   "scope = system/*.read\nrate_limit = 100\n";
    write_file(f, "endpoints.d/00-defaults.ini", defaults, 0644);
    size_t used = (size_t)sprintf(one, "%s", defaults);
    for (int i = 0; i < PRACTICES; i++) {
        char section[256], name[64];
        snprintf(section, sizeof section,
                 "\n[endpoint practice-%03d]\n"
                 "base_url = https://fhir4.eclinicalworks.com/fhir/r4/P%05d\n"
                 "client_id = client-%03d\nstore = /var/lib/fhirsync/practice-%03d.db\n",
                 i, i, i, i);
        snprintf(name, sizeof name, "endpoints.d/practice-%03d.ini", i);
        write_file(f, name, section, 0644);
        used += (size_t)sprintf(one + used, "%s", section);
    }
    char one_path[700];
    snprintf(one_path, sizeof one_path, "%s", write_file(f, "one.ini", one, 0644));
    free(one);

    const char *const paths[] = {dir, one_path};
    for (size_t k = 0; k < 2; k++) {
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        fhirsync_config_report *r = fhirsync_config_report_new();
        fhirsync_config *cfg = NULL;
        fhirsync_error err = {0};
        assert_int_equal(fhirsync_config_load_report(paths[k], r, &cfg, &err), FHIRSYNC_OK);
        assert_int_equal(fhirsync_config_check(cfg, r, &err), FHIRSYNC_OK);
        double elapsed = seconds_since(&start);
        if (fhirsync_config_report_count(r) != 0) {
            dump_report(r);
            fail_msg("%zu problems", fhirsync_config_report_count(r));
        }
        assert_int_equal(fhirsync_config_endpoint_count(cfg), PRACTICES);
        fhirsync_endpoint *last = fhirsync_config_endpoint(cfg, "practice-499");
        assert_ptr_equal(last, fhirsync_config_endpoint_at(cfg, PRACTICES - 1));
        assert_string_equal(fhirsync_endpoint_get(last, "client_id"), "client-499");
        assert_string_equal(fhirsync_endpoint_get(last, "key_file"), "/etc/fhirsync/key.pem");
        assert_int_equal(fs_endpoint_long(last, "rate_limit"), 100);
        assert_null(fhirsync_config_endpoint(cfg, "practice-500"));
        print_message("  %d endpoints from %s: loaded and checked in %.1f ms\n", PRACTICES,
                      k == 0 ? "500 files" : "one file", elapsed * 1000);
        /* the strict load agrees */
        fhirsync_config_free(cfg);
        assert_int_equal(fhirsync_config_load(paths[k], &cfg, &err), FHIRSYNC_OK);
        assert_int_equal(fhirsync_config_endpoint_count(cfg), PRACTICES);
        fhirsync_config_free(cfg);
        fhirsync_config_report_free(r);
    }
}

/* Out of memory anywhere in a checking load of a directory and its check: FHIRSYNC_E_NOMEM and
 * nothing leaked (AddressSanitizer), or a complete report. */
static void test_check_alloc_failure_walk(void **state)
{
    fixture *f = *state;
    char dir[700];
    snprintf(dir, sizeof dir, "%s", make_dir(f, "walk.d"));
    write_file(f, "walk.d/a.ini",
               "[defaults]\nkey_file = k.pem\ntimeout = x\n[endpoint a]\n"
               "base_url = https://x.org/a\nclient_id = a\nstore = s.db\n[endpoint b]\n"
               "base_url = https://x.org/b\njunk\n",
               0644);
    write_file(f, "walk.d/b.ini",
               "[endpoint a]\nclient_id = again\n[oops]\n[endpoint c]\n"
               "base_url = https://x.org/b\nstore = s.db\nclient_id = c\n",
               0644);
    /* without failures: every problem (refused timeout, junk, the duplicate a, [oops], and a, b
     * and c into one store from two URLs) */
    fhirsync_config_report *whole = fhirsync_config_report_new();
    fhirsync_config *whole_cfg = NULL;
    fhirsync_error whole_err = {0};
    assert_int_equal(fhirsync_config_load_report(dir, whole, &whole_cfg, &whole_err), FHIRSYNC_OK);
    assert_int_equal(fhirsync_config_check(whole_cfg, whole, &whole_err), FHIRSYNC_OK);
    size_t expected = fhirsync_config_report_count(whole);
    if (expected != 7) {
        dump_report(whole);
        fail_msg("%zu problems, wanted 7", expected);
    }
    fhirsync_config_free(whole_cfg);
    fhirsync_config_report_free(whole);

    bool completed = false;
    size_t full_count = 0;
    unsigned long n;
    for (n = 1; n < 5000 && !completed; n++) {
        fhirsync_config_report *r = NULL;
        fhirsync_config *cfg = NULL;
        fhirsync_error err = {0};
        fs_alloc_fail_at(n);
        fhirsync_code rc = FHIRSYNC_E_NOMEM;
        r = fhirsync_config_report_new();
        if (r)
            rc = fhirsync_config_load_report(dir, r, &cfg, &err);
        if (rc == FHIRSYNC_OK)
            rc = fhirsync_config_check(cfg, r, &err);
        bool fired = fs_alloc_failure_fired();
        fs_alloc_fail_at(0);
        if (rc == FHIRSYNC_OK && !fired) {
            completed = true;
            full_count = fhirsync_config_report_count(r);
        } else if (rc != FHIRSYNC_OK) {
            assert_int_equal(rc, FHIRSYNC_E_NOMEM);
        }
        fhirsync_config_free(cfg);
        fhirsync_config_report_free(r);
    }
    assert_true(completed);
    assert_true(n > 50);
    assert_int_equal(full_count, expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_name_file_line_and_setting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_in_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sections_long_and_indented_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence_file_env_explicit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_repeatable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vendor_detection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durations_and_getters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relative_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failure_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_of_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_across_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_collects_every_problem, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_stores, setup, teardown),
        cmocka_unit_test_setup_teardown(test_500_endpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_alloc_failure_walk, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
