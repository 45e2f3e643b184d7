/* cli/cmd_keygen.c: `fhirsync keygen`: make the signing key pair a backend client registers with
 * an EHR. Writes the private key as PKCS#8 PEM (mode 0600) and the public JWK Set next to it,
 * prints the key's kid and what to do next. Never overwrites a file: a key that was registered
 * somewhere must not silently disappear. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fhirsync keygen --out DIR [--alg ALG] [--bits N] [--name BASENAME]\n"
            "\n"
            "Generate a private signing key and the public JWK Set to register with an EHR.\n"
            "\n"
            "  --out DIR        directory for the files (created with mode 0700 if missing)\n"
            "  --alg ALG        RS384 (default), ES384, RS256, RS512, ES256 or PS384;\n"
            "                   SMART servers must accept RS384 and ES384, and some accept only\n"
            "                   RS384\n"
            "  --bits N         RSA key size: 2048 (default), 3072 or 4096\n"
            "  --name BASENAME  name of the key file, DIR/BASENAME.key.pem\n"
            "                   (default: fhirsync-<alg>-<start of the kid>)\n"
            "  -h, --help       this help\n"
            "\n"
            "Writes DIR/BASENAME.key.pem (private, mode 0600) and DIR/jwks.json (public).\n"
            "Existing files are never overwritten. To publish several keys at once (rotation),\n"
            "use 'fhirsync jwks --key OLD.key.pem --key NEW.key.pem'.\n");
}

/* Print a local file error (one line, truncated if a path is absurdly long); returns the exit
 * code for it. */
static int io_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int io_error(const char *fmt, ...)
{
    fhirsync_error err = {.code = FHIRSYNC_E_IO};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof err.message, fmt, ap);
    va_end(ap);
    return cli_fail(&err);
}

/* mkdir -p with mode 0700 for every directory created; existing ones are left as they are. */
static int make_dirs(const char *dir)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return io_error("directory name too long: %s", dir);
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return io_error("cannot create directory %s: %s", path, strerror(errno));
        *p = saved;
        if (saved == '\0')
            break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return io_error("%s is not a directory", dir);
    return 0;
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option options[] = {
        {"alg", required_argument, NULL, 'a'}, {"bits", required_argument, NULL, 'b'},
        {"out", required_argument, NULL, 'o'}, {"name", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},      {NULL, 0, NULL, 0}};
    fhirsync_alg alg = FHIRSYNC_ALG_RS384;
    const char *out_dir = NULL, *name = NULL;
    int bits = 0;
    char *end = NULL;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "+:h", options, NULL)) != -1) {
        switch (opt) {
        case 'a':
            alg = fhirsync_alg_from_name(optarg);
            if (alg == FHIRSYNC_ALG_NONE)
                return cli_usage_error("keygen",
                                       "unknown algorithm '%s' (choose RS384, ES384, "
                                       "RS256, RS512, ES256 or PS384)",
                                       optarg);
            break;
        case 'b':
            bits = (int)strtol(optarg, &end, 10);
            if (*end || (bits != 2048 && bits != 3072 && bits != 4096))
                return cli_usage_error("keygen", "--bits must be 2048, 3072 or 4096, not '%s'",
                                       optarg);
            break;
        case 'o': out_dir = optarg; break;
        case 'n': name = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':': return cli_usage_error("keygen", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("keygen", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("keygen", "unexpected argument '%s'", argv[optind]);
    if (!out_dir || !*out_dir)
        return cli_usage_error("keygen", "--out DIR is required (where to write the key files)");
    bool rsa = alg != FHIRSYNC_ALG_ES384 && alg != FHIRSYNC_ALG_ES256;
    if (bits && !rsa)
        return cli_usage_error("keygen",
                               "--bits applies to RSA algorithms only; %s uses a "
                               "fixed curve",
                               fhirsync_alg_name(alg));
    if (name && (!*name || strchr(name, '/') || name[0] == '.'))
        return cli_usage_error("keygen", "--name must be a plain file name, not '%s'", name);

    int status = make_dirs(out_dir);
    if (status != 0)
        return status;
    char jwks_path[PATH_MAX], key_path[PATH_MAX];
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", out_dir);
    if (access(jwks_path, F_OK) == 0)
        return io_error("%s already exists: fhirsync never overwrites it. Choose another --out "
                        "directory, or publish several keys with 'fhirsync jwks --key OLD --key "
                        "NEW'",
                        jwks_path);

    fhirsync_error err = {0};
    fhirsync_key *key = NULL;
    char *jwks = NULL;
    if (fhirsync_key_generate(alg, bits, &key, &err) != FHIRSYNC_OK)
        return cli_fail(&err);
    const char *kid = fhirsync_key_kid(key);
    char default_name[64], alg_lower[8];
    snprintf(alg_lower, sizeof alg_lower, "%s", fhirsync_alg_name(alg));
    for (char *c = alg_lower; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    snprintf(default_name, sizeof default_name, "fhirsync-%s-%.8s", alg_lower, kid);
    if (snprintf(key_path, sizeof key_path, "%s/%s.key.pem", out_dir, name ? name : default_name) >=
        (int)sizeof key_path) {
        fhirsync_key_free(key);
        return io_error("path too long: %s", out_dir);
    }
    const fhirsync_key *keys[] = {key};
    if (fhirsync_key_write_pem(key, key_path, &err) != FHIRSYNC_OK) {
        status = cli_fail(&err);
        goto out;
    }
    /* from here on a failure removes the key just written: a key without its published half
     * would only confuse */
    if (fhirsync_jwks_build(keys, &alg, 1, &jwks, &err) != FHIRSYNC_OK) {
        status = cli_fail(&err);
        unlink(key_path);
        goto out;
    }
    if ((status = cli_write_public_file(jwks_path, jwks, false)) != 0) {
        unlink(key_path);
        goto out;
    }
    char what[32];
    if (rsa)
        snprintf(what, sizeof what, "RSA %d-bit", fhirsync_key_bits(key));
    else
        snprintf(what, sizeof what, "EC P-%d", fhirsync_key_bits(key));
    printf("New %s signing key (%s)\n"
           "  kid:          %s\n"
           "  private key:  %s\n"
           "                (mode 0600: keep it secret, never commit it, back it up safely)\n"
           "  public JWKS:  %s\n"
           "\n"
           "Next steps:\n"
           "  1. Register the public key with the EHR: host jwks.json at an https URL that is\n"
           "     reachable without authentication (preferred: it lets you rotate keys), or paste\n"
           "     its contents into the vendor's developer portal.\n"
           "  2. Note the client_id the EHR issues for this registration.\n"
           "  3. Tell fhirsync about the key, in fhirsync.ini (or with --key and --alg):\n"
           "       key_file = %s\n"
           "       alg = %s\n"
           "     then check everything with 'fhirsync doctor'.\n",
           fhirsync_alg_name(alg), what, kid, key_path, jwks_path, key_path,
           fhirsync_alg_name(alg));
out:
    fhirsync_free(jwks);
    fhirsync_key_free(key);
    return status;
}
