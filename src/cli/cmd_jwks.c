/* cli/cmd_jwks.c: `fhirsync jwks`: print the public JWK Set of existing private keys. With several
 * keys this is how keys are rotated: publish old and new together, switch the client to the new
 * key, then drop the old one once the EHR has fetched the new set. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define MAX_KEYS 16

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: fhirsync jwks --key FILE [--key FILE ...] [--alg ALG ...] [--out FILE]\n"
        "\n"
        "Print the public JWK Set of one or more private keys, for registration by value or\n"
        "for hosting at the registered JWKS URL. Nothing private is ever printed.\n"
        "\n"
        "  --key FILE   a private key (PEM or JWK, mode 0600); repeat to publish several keys,\n"
        "               e.g. the old and the new key while rotating\n"
        "  --alg ALG    the \"alg\" to announce: RS384, ES384, RS256, RS512, ES256 or PS384.\n"
        "               Once for every key, or once per --key in the same order.\n"
        "               Default: RS384 for RSA keys, ES384 / ES256 for EC keys\n"
        "  --out FILE   write the JWK Set to FILE (replaced atomically, mode 0644) instead\n"
        "               of standard output\n"
        "  -h, --help   this help\n");
}

/* Print "WHAT PATH: reason" as a local file error; returns the exit code for it. */
int cmd_jwks(int argc, char **argv)
{
    static const struct option options[] = {{"key", required_argument, NULL, 'k'},
                                            {"alg", required_argument, NULL, 'a'},
                                            {"out", required_argument, NULL, 'o'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *key_files[MAX_KEYS];
    fhirsync_alg algs[MAX_KEYS];
    size_t key_count = 0, alg_count = 0;
    const char *out_path = NULL;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "+:h", options, NULL)) != -1) {
        switch (opt) {
        case 'k':
            if (key_count == MAX_KEYS)
                return cli_usage_error("jwks", "at most %d keys", MAX_KEYS);
            key_files[key_count++] = optarg;
            break;
        case 'a':
            if (alg_count == MAX_KEYS)
                return cli_usage_error("jwks", "at most %d algorithms", MAX_KEYS);
            if ((algs[alg_count++] = fhirsync_alg_from_name(optarg)) == FHIRSYNC_ALG_NONE)
                return cli_usage_error("jwks",
                                       "unknown algorithm '%s' (choose RS384, ES384, "
                                       "RS256, RS512, ES256 or PS384)",
                                       optarg);
            break;
        case 'o': out_path = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage_error("jwks", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("jwks", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("jwks", "unexpected argument '%s' (give key files with --key)",
                               argv[optind]);
    if (key_count == 0)
        return cli_usage_error("jwks", "give at least one --key FILE");
    if (alg_count > 1 && alg_count != key_count)
        return cli_usage_error("jwks",
                               "%zu --alg for %zu --key: give one --alg for all keys, "
                               "or one per key",
                               alg_count, key_count);
    for (size_t i = 1; alg_count == 1 && i < key_count; i++)
        algs[i] = algs[0];

    int status = 0;
    fhirsync_key *keys[MAX_KEYS] = {NULL};
    fhirsync_error err = {0};
    char *jwks = NULL;
    for (size_t i = 0; i < key_count; i++)
        if (fhirsync_key_load_file(key_files[i], &keys[i], &err) != FHIRSYNC_OK) {
            status = cli_fail(&err);
            goto out;
        }
    if (fhirsync_jwks_build((const fhirsync_key *const *)keys, alg_count ? algs : NULL, key_count,
                            &jwks, &err) != FHIRSYNC_OK) {
        status = cli_fail(&err);
        goto out;
    }
    if (!out_path) {
        printf("%s\n", jwks);
        if (fflush(stdout) != 0)
            status = cli_io_error("cannot write", "standard output", errno);
        goto out;
    }
    if ((status = cli_write_public_file(out_path, jwks, true)) != 0)
        goto out;
    printf("Wrote the public JWK Set of %zu key%s to %s:\n", key_count, key_count == 1 ? "" : "s",
           out_path);
    for (size_t i = 0; i < key_count; i++)
        printf("  kid %s  (%s)\n", fhirsync_key_kid(keys[i]), key_files[i]);
out:
    fhirsync_free(jwks);
    for (size_t i = 0; i < key_count; i++)
        fhirsync_key_free(keys[i]);
    return status;
}
