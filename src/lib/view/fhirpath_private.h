/* view/fhirpath_private.h: the FHIRPath AST and the function table, shared by the parser
 * (fhirpath_parse.c) and the evaluator (fhirpath_eval.c) only. */
#ifndef FS_VIEW_FHIRPATH_PRIVATE_H
#define FS_VIEW_FHIRPATH_PRIVATE_H

#include "view/fhirpath.h"

typedef enum fp_node_kind {
    FP_LITERAL, /* lit */
    FP_EMPTY,   /* {} */
    FP_THIS,    /* $this */
    FP_INDEX,   /* $index */
    FP_VAR,     /* %name: var >= 0 an index into env->vars, else one of the FP_VAR_* */
    FP_MEMBER,  /* src.name (src NULL: the focus) */
    FP_CALL,    /* src.fn(args) (src NULL: the focus) */
    FP_INDEXER, /* src[args[0]] */
    FP_BINARY,  /* args[0] op args[1] */
    FP_NEGATE,  /* -args[0] */
    FP_TYPE_OP  /* args[0] is/as name */
} fp_node_kind;

enum { FP_VAR_RESOURCE = -1, FP_VAR_ROW_INDEX = -2 };

typedef enum fp_op {
    FP_OP_MUL,
    FP_OP_DIV,
    FP_OP_IDIV,
    FP_OP_MOD,
    FP_OP_ADD,
    FP_OP_SUB,
    FP_OP_CONCAT,
    FP_OP_UNION,
    FP_OP_LT,
    FP_OP_LE,
    FP_OP_GT,
    FP_OP_GE,
    FP_OP_EQ,
    FP_OP_NE,
    FP_OP_EQUIV,
    FP_OP_NEQUIV,
    FP_OP_IN,
    FP_OP_CONTAINS,
    FP_OP_AND,
    FP_OP_OR,
    FP_OP_XOR,
    FP_OP_IMPLIES,
    FP_OP_IS,
    FP_OP_AS
} fp_op;

/* How a function reads its arguments. */
typedef enum fp_arg_mode {
    FP_ARGS_VALUE,  /* evaluated once, with the expression's input as their focus */
    FP_ARGS_LAMBDA, /* evaluated per item of the input, that item as $this */
    FP_ARGS_TYPE    /* a type name (an identifier), kept as text */
} fp_arg_mode;

typedef enum fp_fn {
    FN_WHERE,
    FN_SELECT,
    FN_EXISTS,
    FN_ALL,
    FN_EMPTY,
    FN_FIRST,
    FN_LAST,
    FN_TAIL,
    FN_COUNT,
    FN_DISTINCT,
    FN_EXTENSION,
    FN_OF_TYPE,
    FN_IS,
    FN_AS,
    FN_JOIN,
    FN_NOT,
    FN_STARTS_WITH,
    FN_ENDS_WITH,
    FN_CONTAINS,
    FN_SUBSTRING,
    FN_UPPER,
    FN_LOWER,
    FN_REPLACE,
    FN_LENGTH,
    FN_TO_STRING,
    FN_TO_INTEGER,
    FN_TO_DECIMAL,
    FN_HAS_VALUE,
    FN_GET_RESOURCE_KEY,
    FN_GET_REFERENCE_KEY,
    FN_LOW_BOUNDARY,
    FN_HIGH_BOUNDARY,
    FN_IIF,
    FN_ALL_TRUE,
    FN_ANY_TRUE
} fp_fn;

typedef struct fp_fn_def {
    const char *name;
    fp_fn fn;
    unsigned min_args, max_args;
    fp_arg_mode mode;
} fp_fn_def;

/* The function named `name`, NULL when not supported. */
const fp_fn_def *fs_fp_function(const char *name);

typedef struct fp_node fp_node;
struct fp_node {
    fp_node_kind kind;
    size_t pos; /* byte offset in the text, for messages */
    fs_fp_item lit;
    char *name; /* member, type or function name; literal text */
    const fp_fn_def *fn;
    fp_op op;
    int var;
    fp_node *src;
    fp_node **args;
    size_t nargs;
};

struct fs_fp_expr {
    fp_node *root;
    char *text;
};

#endif
