/* view/fhirpath_parse.c: the FHIRPath lexer and recursive-descent parser. One function per
 * precedence level of the FHIRPath grammar (implies < or/xor < and < in/contains < equality <
 * comparison < union < is/as < additive < multiplicative < unary < invocation), building the AST
 * of fhirpath_private.h. Functions and variables are resolved here, so that an expression the
 * evaluator cannot run is refused when the view is read, with the position and the token. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "view/fhirpath_private.h"

/* clang-format off */
static const fp_fn_def functions[] = {
    {"where", FN_WHERE, 1, 1, FP_ARGS_LAMBDA},       {"select", FN_SELECT, 1, 1, FP_ARGS_LAMBDA},
    {"exists", FN_EXISTS, 0, 1, FP_ARGS_LAMBDA},     {"all", FN_ALL, 1, 1, FP_ARGS_LAMBDA},
    {"empty", FN_EMPTY, 0, 0, FP_ARGS_VALUE},        {"first", FN_FIRST, 0, 0, FP_ARGS_VALUE},
    {"last", FN_LAST, 0, 0, FP_ARGS_VALUE},          {"tail", FN_TAIL, 0, 0, FP_ARGS_VALUE},
    {"count", FN_COUNT, 0, 0, FP_ARGS_VALUE},        {"distinct", FN_DISTINCT, 0, 0, FP_ARGS_VALUE},
    {"extension", FN_EXTENSION, 1, 1, FP_ARGS_VALUE}, {"ofType", FN_OF_TYPE, 1, 1, FP_ARGS_TYPE},
    {"is", FN_IS, 1, 1, FP_ARGS_TYPE},               {"as", FN_AS, 1, 1, FP_ARGS_TYPE},
    {"join", FN_JOIN, 0, 1, FP_ARGS_VALUE},          {"not", FN_NOT, 0, 0, FP_ARGS_VALUE},
    {"startsWith", FN_STARTS_WITH, 1, 1, FP_ARGS_VALUE},
    {"endsWith", FN_ENDS_WITH, 1, 1, FP_ARGS_VALUE},
    {"contains", FN_CONTAINS, 1, 1, FP_ARGS_VALUE},  {"substring", FN_SUBSTRING, 1, 2, FP_ARGS_VALUE},
    {"upper", FN_UPPER, 0, 0, FP_ARGS_VALUE},        {"lower", FN_LOWER, 0, 0, FP_ARGS_VALUE},
    {"replace", FN_REPLACE, 2, 2, FP_ARGS_VALUE},    {"length", FN_LENGTH, 0, 0, FP_ARGS_VALUE},
    {"toString", FN_TO_STRING, 0, 0, FP_ARGS_VALUE}, {"toInteger", FN_TO_INTEGER, 0, 0, FP_ARGS_VALUE},
    {"toDecimal", FN_TO_DECIMAL, 0, 0, FP_ARGS_VALUE}, {"hasValue", FN_HAS_VALUE, 0, 0, FP_ARGS_VALUE},
    {"getResourceKey", FN_GET_RESOURCE_KEY, 0, 0, FP_ARGS_VALUE},
    {"getReferenceKey", FN_GET_REFERENCE_KEY, 0, 1, FP_ARGS_TYPE},
    {"lowBoundary", FN_LOW_BOUNDARY, 0, 1, FP_ARGS_VALUE},
    {"highBoundary", FN_HIGH_BOUNDARY, 0, 1, FP_ARGS_VALUE},
    {"iif", FN_IIF, 2, 3, FP_ARGS_LAMBDA},           {"allTrue", FN_ALL_TRUE, 0, 0, FP_ARGS_VALUE},
    {"anyTrue", FN_ANY_TRUE, 0, 0, FP_ARGS_VALUE},
};
/* clang-format on */

const fp_fn_def *fs_fp_function(const char *name)
{
    for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++)
        if (strcmp(functions[i].name, name) == 0)
            return &functions[i];
    return NULL;
}

/* ---- the lexer ------------------------------------------------------------------------------- */

typedef enum tok_kind {
    T_END,
    T_IDENT,
    T_STRING,
    T_NUMBER,
    T_DATE,
    T_VAR,
    T_SPECIAL, /* $this, $index */
    T_PUNCT
} tok_kind;

typedef struct token {
    tok_kind kind;
    size_t pos, len; /* where it is in the text */
    char *text;      /* identifier or variable name, decoded string, number or punctuation */
    bool delimited;  /* a `backtick` identifier (never a keyword) */
} token;

typedef struct parser {
    const char *src;
    size_t at;
    token tok;
    const char *const *vars;
    size_t nvars;
    fhirsync_error *err;
    bool failed;
    unsigned depth;
    size_t nodes;
} parser;

/* Bounds that keep the parser's and the evaluator's recursion shallow on hostile input. */
#define MAX_DEPTH 100
#define MAX_NODES 1000

static bool fail(parser *p, size_t pos, const char *what)
{
    if (!p->failed) {
        const char *t = p->src + pos;
        int n = 0;
        while (t[n] && n < 20 && !isspace((unsigned char)t[n]))
            n++;
        if (n)
            fs_err(p->err, FHIRSYNC_E_VIEW, "%s at %zu ('%.*s')", what, pos, n, t);
        else
            fs_err(p->err, FHIRSYNC_E_VIEW, "%s at %zu (end of expression)", what, pos);
        p->failed = true;
    }
    return false;
}

static bool nomem(parser *p)
{
    if (!p->failed)
        fs_err(p->err, FHIRSYNC_E_NOMEM, "out of memory parsing FHIRPath");
    p->failed = true;
    return false;
}

static bool ident_start(int c)
{
    return isalpha(c) || c == '_';
}

/* A quoted string or delimited identifier body from `q` to its closing quote, escapes decoded. */
static bool lex_quoted(parser *p, char quote)
{
    const char *s = p->src;
    size_t i = p->at + 1;
    fs_buf b;
    fs_buf_init(&b);
    for (;;) {
        char c = s[i];
        if (!c) {
            fs_buf_free(&b);
            return fail(p, p->at, "unterminated string");
        }
        if (c == quote)
            break;
        if (c == '\\') {
            char e = s[i + 1], out;
            switch (e) {
            case '\'':
            case '"':
            case '`':
            case '\\':
            case '/': out = e; break;
            case 'n': out = '\n'; break;
            case 'r': out = '\r'; break;
            case 't': out = '\t'; break;
            case 'f': out = '\f'; break;
            case 'u': {
                unsigned cp = 0;
                for (int k = 0; k < 4; k++) {
                    int h = fs_hex_value((unsigned char)s[i + 2 + k]);
                    if (h < 0) {
                        fs_buf_free(&b);
                        return fail(p, i, "bad \\u escape");
                    }
                    cp = cp * 16 + (unsigned)h;
                }
                char u[4];
                size_t n = 0;
                if (cp < 0x80) {
                    u[n++] = (char)cp;
                } else if (cp < 0x800) {
                    u[n++] = (char)(0xc0 | (cp >> 6));
                    u[n++] = (char)(0x80 | (cp & 0x3f));
                } else {
                    u[n++] = (char)(0xe0 | (cp >> 12));
                    u[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    u[n++] = (char)(0x80 | (cp & 0x3f));
                }
                if (cp == 0 || !fs_buf_append(&b, u, n)) {
                    fs_buf_free(&b);
                    return cp == 0 ? fail(p, i, "\\u0000 in a string") : nomem(p);
                }
                i += 6;
                continue;
            }
            default: fs_buf_free(&b); return fail(p, i, "bad escape");
            }
            if (!fs_buf_append(&b, &out, 1)) {
                fs_buf_free(&b);
                return nomem(p);
            }
            i += 2;
            continue;
        }
        if (!fs_buf_append(&b, &c, 1)) {
            fs_buf_free(&b);
            return nomem(p);
        }
        i++;
    }
    p->tok.text = b.data ? fs_buf_steal(&b) : fs_strdup("");
    if (!p->tok.text)
        return nomem(p);
    p->tok.len = i + 1 - p->at;
    return true;
}

/* Read the next token into p->tok (the previous one is freed). */
static bool next(parser *p)
{
    fs_free(p->tok.text);
    memset(&p->tok, 0, sizeof p->tok);
    const char *s = p->src;
    for (;;) {
        while (isspace((unsigned char)s[p->at]))
            p->at++;
        if (s[p->at] == '/' && s[p->at + 1] == '/') {
            while (s[p->at] && s[p->at] != '\n')
                p->at++;
            continue;
        }
        if (s[p->at] == '/' && s[p->at + 1] == '*') {
            const char *close = strstr(s + p->at + 2, "*/");
            if (!close)
                return fail(p, p->at, "unterminated comment");
            p->at = (size_t)(close - s) + 2;
            continue;
        }
        break;
    }
    size_t start = p->at;
    p->tok.pos = start;
    unsigned char c = (unsigned char)s[start];
    size_t i = start;
    if (!c) {
        p->tok.kind = T_END;
        return true;
    }
    if (ident_start(c)) {
        while (isalnum((unsigned char)s[i]) || s[i] == '_')
            i++;
        p->tok.kind = T_IDENT;
    } else if (c == '`' || c == '\'') {
        p->tok.kind = c == '`' ? T_IDENT : T_STRING;
        p->tok.delimited = c == '`';
        if (!lex_quoted(p, (char)c))
            return false;
        p->at = start + p->tok.len;
        return true;
    } else if (isdigit(c)) {
        while (isdigit((unsigned char)s[i]))
            i++;
        if (s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
            i++;
            while (isdigit((unsigned char)s[i]))
                i++;
        }
        p->tok.kind = T_NUMBER;
    } else if (c == '@') {
        i++;
        while (s[i] && (isalnum((unsigned char)s[i]) || strchr("-:+", s[i]) ||
                        (s[i] == '.' && isdigit((unsigned char)s[i + 1]))))
            i++;
        if (i == start + 1)
            return fail(p, start, "a date, dateTime or time expected after '@'");
        p->tok.kind = T_DATE;
        start++;
    } else if (c == '%') {
        if (s[i + 1] == '`' || s[i + 1] == '\'') {
            p->at = start + 1;
            if (!lex_quoted(p, s[i + 1]))
                return false;
            p->tok.kind = T_VAR;
            p->tok.pos = start;
            p->at = start + 1 + p->tok.len;
            p->tok.len++;
            return true;
        }
        i++;
        if (!ident_start((unsigned char)s[i]))
            return fail(p, start, "a variable name expected after '%'");
        while (isalnum((unsigned char)s[i]) || s[i] == '_')
            i++;
        p->tok.kind = T_VAR;
        start++;
    } else if (c == '$') {
        i++;
        while (isalnum((unsigned char)s[i]))
            i++;
        p->tok.kind = T_SPECIAL;
    } else {
        static const char *const two[] = {"<=", ">=", "!=", "!~"};
        p->tok.kind = T_PUNCT;
        i++;
        for (size_t k = 0; k < 4; k++)
            if (strncmp(s + start, two[k], 2) == 0)
                i = start + 2;
        if (i == start + 1 && !strchr(".()[],+-*/&|=~<>{}", c))
            return fail(p, start, "unexpected character");
    }
    p->tok.len = i - p->tok.pos;
    p->tok.text = fs_strndup(s + start, i - start);
    p->at = i;
    return p->tok.text ? true : nomem(p);
}

static bool is_punct(const parser *p, const char *text)
{
    return p->tok.kind == T_PUNCT && strcmp(p->tok.text, text) == 0;
}

/* An operator keyword: an undelimited identifier. */
static bool is_word(const parser *p, const char *word)
{
    return p->tok.kind == T_IDENT && !p->tok.delimited && strcmp(p->tok.text, word) == 0;
}

/* ---- the AST --------------------------------------------------------------------------------- */

static void node_free(fp_node *n)
{
    if (!n)
        return;
    node_free(n->src);
    for (size_t i = 0; i < n->nargs; i++)
        node_free(n->args[i]);
    fs_free(n->args);
    fs_free(n->name);
    fs_free(n);
}

static fp_node *node_new(parser *p, fp_node_kind kind, size_t pos)
{
    if (++p->nodes > MAX_NODES) {
        fail(p, pos, "expression too long");
        return NULL;
    }
    fp_node *n = fs_calloc(1, sizeof *n);
    if (!n) {
        nomem(p);
        return NULL;
    }
    n->kind = kind;
    n->pos = pos;
    return n;
}

/* Append `arg` to n's arguments; false on out of memory, `arg` then still the caller's. */
static bool add_arg(parser *p, fp_node *n, fp_node *arg)
{
    fp_node **args = fs_realloc(n->args, (n->nargs + 1) * sizeof *args);
    if (!args)
        return nomem(p);
    n->args = args;
    n->args[n->nargs++] = arg;
    return true;
}

static fp_node *binary(parser *p, fp_op op, size_t pos, fp_node *left, fp_node *right)
{
    if (!left || !right) {
        node_free(left);
        node_free(right);
        return NULL;
    }
    fp_node *n = node_new(p, FP_BINARY, pos);
    if (!n || !add_arg(p, n, left)) {
        node_free(left);
        node_free(right);
        fs_free(n);
        return NULL;
    }
    if (!add_arg(p, n, right)) {
        node_free(n);
        node_free(right);
        return NULL;
    }
    n->op = op;
    return n;
}

/* ---- the grammar ----------------------------------------------------------------------------- */

static fp_node *parse_expr(parser *p);

/* A type specifier (`Quantity`, `FHIR.Patient`, `System.String`): its last name. */
static char *type_name(parser *p)
{
    if (p->tok.kind != T_IDENT) {
        fail(p, p->tok.pos, "a type name expected");
        return NULL;
    }
    char *name = p->tok.text;
    p->tok.text = NULL;
    if (!next(p)) {
        fs_free(name);
        return NULL;
    }
    while (is_punct(p, ".")) {
        if (!next(p) || p->tok.kind != T_IDENT) {
            fs_free(name);
            fail(p, p->tok.pos, "a type name expected after '.'");
            return NULL;
        }
        fs_free(name);
        name = p->tok.text;
        p->tok.text = NULL;
        if (!next(p)) {
            fs_free(name);
            return NULL;
        }
    }
    return name;
}

/* After an identifier: a member, or a function call when '(' follows. */
static fp_node *invocation(parser *p, fp_node *src)
{
    if (p->tok.kind != T_IDENT) {
        node_free(src);
        fail(p, p->tok.pos, "a name expected");
        return NULL;
    }
    size_t pos = p->tok.pos;
    char *name = p->tok.text;
    p->tok.text = NULL;
    if (!next(p)) {
        fs_free(name);
        node_free(src);
        return NULL;
    }
    fp_node *n;
    if (!is_punct(p, "(")) {
        n = node_new(p, FP_MEMBER, pos);
        if (!n) {
            fs_free(name);
            node_free(src);
            return NULL;
        }
        n->name = name;
        n->src = src;
        return n;
    }
    const fp_fn_def *fn = fs_fp_function(name);
    if (!fn) {
        char msg[160];
        snprintf(msg, sizeof msg, "unknown or unsupported function '%.100s'", name);
        fs_free(name);
        node_free(src);
        fail(p, pos, msg);
        return NULL;
    }
    n = node_new(p, FP_CALL, pos);
    if (!n) {
        fs_free(name);
        node_free(src);
        return NULL;
    }
    n->name = name;
    n->fn = fn;
    n->src = src;
    if (!next(p))
        goto bad;
    if (!is_punct(p, ")")) {
        for (;;) {
            fp_node *arg;
            if (fn->mode == FP_ARGS_TYPE) {
                arg = node_new(p, FP_LITERAL, p->tok.pos);
                if (!arg)
                    goto bad;
                if (!(arg->name = type_name(p))) {
                    node_free(arg);
                    goto bad;
                }
            } else if (!(arg = parse_expr(p))) {
                goto bad;
            }
            if (!add_arg(p, n, arg)) {
                node_free(arg);
                goto bad;
            }
            if (!is_punct(p, ","))
                break;
            if (!next(p))
                goto bad;
        }
        if (!is_punct(p, ")")) {
            fail(p, p->tok.pos, "')' or ',' expected");
            goto bad;
        }
    }
    if (n->nargs < fn->min_args || n->nargs > fn->max_args) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s() takes %u to %u arguments, not %zu", fn->name, fn->min_args,
                 fn->max_args, n->nargs);
        fail(p, pos, msg);
        goto bad;
    }
    if (!next(p))
        goto bad;
    return n;
bad:
    node_free(n);
    return NULL;
}

static fp_node *literal(parser *p, fs_fp_kind kind, const char *type)
{
    fp_node *n = node_new(p, FP_LITERAL, p->tok.pos);
    if (!n)
        return NULL;
    n->name = p->tok.text;
    p->tok.text = NULL;
    n->lit.kind = kind;
    n->lit.type = type;
    n->lit.s = n->name;
    n->lit.len = strlen(n->name);
    if (kind == FS_FP_INTEGER) {
        errno = 0;
        char *end;
        long long v = strtoll(n->name, &end, 10);
        if (errno || *end) {
            fail(p, n->pos, "integer literal out of range");
            node_free(n);
            return NULL;
        }
        n->lit.i = v;
    }
    if (!next(p)) {
        node_free(n);
        return NULL;
    }
    return n;
}

static int var_index(parser *p, const char *name)
{
    if (strcmp(name, "resource") == 0 || strcmp(name, "rootResource") == 0 ||
        strcmp(name, "context") == 0)
        return FP_VAR_RESOURCE;
    if (strcmp(name, "rowIndex") == 0)
        return FP_VAR_ROW_INDEX;
    for (size_t i = 0; i < p->nvars; i++)
        if (strcmp(p->vars[i], name) == 0)
            return (int)i;
    return FP_VAR_ROW_INDEX - 1;
}

static fp_node *term(parser *p)
{
    size_t pos = p->tok.pos;
    fp_node *n = NULL;
    switch (p->tok.kind) {
    case T_END: fail(p, pos, "an expression expected"); return NULL;
    case T_STRING: return literal(p, FS_FP_STRING, "string");
    case T_NUMBER:
        return strchr(p->tok.text, '.') ? literal(p, FS_FP_DECIMAL, "decimal")
                                        : literal(p, FS_FP_INTEGER, "integer");
    case T_DATE:
        return literal(p, FS_FP_STRING,
                       p->tok.text[0] == 'T'      ? "time"
                       : strchr(p->tok.text, 'T') ? "dateTime"
                                                  : "date");
    case T_VAR: {
        int v = var_index(p, p->tok.text);
        if (v < FP_VAR_ROW_INDEX) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown variable '%%%.100s'", p->tok.text);
            fail(p, pos, msg);
            return NULL;
        }
        if (!(n = node_new(p, FP_VAR, pos)))
            return NULL;
        n->var = v;
        break;
    }
    case T_SPECIAL:
        if (strcmp(p->tok.text, "$this") == 0)
            n = node_new(p, FP_THIS, pos);
        else if (strcmp(p->tok.text, "$index") == 0)
            n = node_new(p, FP_INDEX, pos);
        else
            return fail(p, pos, "unknown special variable"), NULL;
        if (!n)
            return NULL;
        break;
    case T_PUNCT:
        if (is_punct(p, "(")) {
            if (!next(p) || !(n = parse_expr(p)))
                return NULL;
            if (!is_punct(p, ")")) {
                node_free(n);
                fail(p, p->tok.pos, "')' expected");
                return NULL;
            }
            break;
        }
        if (is_punct(p, "{")) {
            if (!next(p))
                return NULL;
            if (!is_punct(p, "}")) {
                fail(p, p->tok.pos, "'}' expected (only {} is supported)");
                return NULL;
            }
            if (!(n = node_new(p, FP_EMPTY, pos)))
                return NULL;
            break;
        }
        fail(p, pos, "an expression expected");
        return NULL;
    case T_IDENT:
        if (!p->tok.delimited && (is_word(p, "true") || is_word(p, "false"))) {
            bool value = is_word(p, "true");
            if (!(n = literal(p, FS_FP_BOOLEAN, "boolean")))
                return NULL;
            n->lit.b = value;
            return n;
        }
        return invocation(p, NULL);
    }
    if (!next(p)) {
        node_free(n);
        return NULL;
    }
    return n;
}

/* A term followed by `.name`, `.fn(...)` and `[index]`. */
static fp_node *postfix(parser *p)
{
    fp_node *n = term(p);
    if (!n)
        return NULL;
    for (;;) {
        if (is_punct(p, ".")) {
            if (!next(p)) {
                node_free(n);
                return NULL;
            }
            if (!(n = invocation(p, n)))
                return NULL;
        } else if (is_punct(p, "[")) {
            size_t pos = p->tok.pos;
            fp_node *idx = NULL, *ix = node_new(p, FP_INDEXER, pos);
            if (!ix || !next(p) || !(idx = parse_expr(p))) {
                node_free(ix);
                node_free(n);
                return NULL;
            }
            ix->src = n;
            n = ix;
            if (!add_arg(p, n, idx)) {
                node_free(n);
                node_free(idx);
                return NULL;
            }
            if (!is_punct(p, "]")) {
                node_free(n);
                fail(p, p->tok.pos, "']' expected");
                return NULL;
            }
            if (!next(p)) {
                node_free(n);
                return NULL;
            }
        } else {
            return n;
        }
    }
}

static fp_node *unary(parser *p)
{
    if (is_punct(p, "-") || is_punct(p, "+")) {
        bool minus = is_punct(p, "-");
        size_t pos = p->tok.pos;
        if (!next(p))
            return NULL;
        if (++p->depth > MAX_DEPTH) {
            fail(p, pos, "expression nested too deeply");
            return NULL;
        }
        fp_node *operand = unary(p);
        p->depth--;
        if (!operand || !minus)
            return operand;
        fp_node *n = node_new(p, FP_NEGATE, pos);
        if (!n || !add_arg(p, n, operand)) {
            fs_free(n);
            node_free(operand);
            return NULL;
        }
        return n;
    }
    return postfix(p);
}

typedef struct op_word {
    const char *text;
    bool word;
    fp_op op;
} op_word;

/* One binary level: operands from `operand`, operators from `ops`. */
static fp_node *level(parser *p, fp_node *(*operand)(parser *), const op_word *ops, size_t nops)
{
    fp_node *left = operand(p);
    while (left) {
        const op_word *hit = NULL;
        for (size_t i = 0; i < nops && !hit; i++)
            if (ops[i].word ? is_word(p, ops[i].text) : is_punct(p, ops[i].text))
                hit = &ops[i];
        if (!hit)
            break;
        size_t pos = p->tok.pos;
        if (!next(p)) {
            node_free(left);
            return NULL;
        }
        left = binary(p, hit->op, pos, left, operand(p));
    }
    return left;
}

static fp_node *multiplicative(parser *p)
{
    static const op_word ops[] = {{"*", false, FP_OP_MUL},
                                  {"/", false, FP_OP_DIV},
                                  {"div", true, FP_OP_IDIV},
                                  {"mod", true, FP_OP_MOD}};
    return level(p, unary, ops, 4);
}

static fp_node *additive(parser *p)
{
    static const op_word ops[] = {
        {"+", false, FP_OP_ADD}, {"-", false, FP_OP_SUB}, {"&", false, FP_OP_CONCAT}};
    return level(p, multiplicative, ops, 3);
}

static fp_node *type_op(parser *p)
{
    fp_node *left = additive(p);
    while (left && (is_word(p, "is") || is_word(p, "as"))) {
        fp_op op = is_word(p, "is") ? FP_OP_IS : FP_OP_AS;
        fp_node *n = node_new(p, FP_TYPE_OP, p->tok.pos);
        if (!n || !next(p) || !(n->name = type_name(p)) || !add_arg(p, n, left)) {
            node_free(n);
            node_free(left);
            return NULL;
        }
        n->op = op;
        left = n;
    }
    return left;
}

static fp_node *union_level(parser *p)
{
    static const op_word ops[] = {{"|", false, FP_OP_UNION}};
    return level(p, type_op, ops, 1);
}

static fp_node *comparison(parser *p)
{
    static const op_word ops[] = {{"<=", false, FP_OP_LE},
                                  {">=", false, FP_OP_GE},
                                  {"<", false, FP_OP_LT},
                                  {">", false, FP_OP_GT}};
    return level(p, union_level, ops, 4);
}

static fp_node *equality(parser *p)
{
    static const op_word ops[] = {{"=", false, FP_OP_EQ},
                                  {"!=", false, FP_OP_NE},
                                  {"~", false, FP_OP_EQUIV},
                                  {"!~", false, FP_OP_NEQUIV}};
    return level(p, comparison, ops, 4);
}

static fp_node *membership(parser *p)
{
    static const op_word ops[] = {{"in", true, FP_OP_IN}, {"contains", true, FP_OP_CONTAINS}};
    return level(p, equality, ops, 2);
}

static fp_node *and_level(parser *p)
{
    static const op_word ops[] = {{"and", true, FP_OP_AND}};
    return level(p, membership, ops, 1);
}

static fp_node *or_level(parser *p)
{
    static const op_word ops[] = {{"or", true, FP_OP_OR}, {"xor", true, FP_OP_XOR}};
    return level(p, and_level, ops, 2);
}

static fp_node *implies_level(parser *p)
{
    static const op_word ops[] = {{"implies", true, FP_OP_IMPLIES}};
    return level(p, or_level, ops, 1);
}

static fp_node *parse_expr(parser *p)
{
    if (++p->depth > MAX_DEPTH) {
        fail(p, p->tok.pos, "expression nested too deeply");
        p->depth--;
        return NULL;
    }
    fp_node *n = implies_level(p);
    p->depth--;
    return n;
}

fs_fp_expr *fs_fp_parse(const char *text, const char *const *vars, size_t nvars,
                        fhirsync_error *err)
{
    parser p = {.src = text ? text : "", .vars = vars, .nvars = nvars, .err = err};
    fs_fp_expr *e = fs_calloc(1, sizeof *e);
    if (!e) {
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory parsing FHIRPath");
        return NULL;
    }
    fp_node *root = NULL;
    if (next(&p) && (root = parse_expr(&p)) && p.tok.kind != T_END) {
        fail(&p, p.tok.pos, "unexpected token after the expression");
        node_free(root);
        root = NULL;
    }
    fs_free(p.tok.text);
    if (!root) {
        if (!p.failed)
            fs_err(err, FHIRSYNC_E_VIEW, "invalid FHIRPath");
        fs_free(e);
        return NULL;
    }
    if (!(e->text = fs_strdup(p.src))) {
        node_free(root);
        fs_free(e);
        fs_err(err, FHIRSYNC_E_NOMEM, "out of memory parsing FHIRPath");
        return NULL;
    }
    e->root = root;
    return e;
}

void fs_fp_free(fs_fp_expr *expr)
{
    if (!expr)
        return;
    node_free(expr->root);
    fs_free(expr->text);
    fs_free(expr);
}
