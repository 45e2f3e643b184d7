/* json/lex.c: the out-of-line part of the JSON lexer core (lex.h): the default texts of its
 * faults. Everything else is inline in the header, specialised in each scanner. */
#include "json/lex.h"

const char *fs_lex_strerror(fs_lex_error e)
{
    switch (e) {
    case FS_LEX_OK: return "no fault";
    case FS_LEX_E_UNTERMINATED: return "an unterminated string";
    case FS_LEX_E_CONTROL: return "a control character in a string";
    case FS_LEX_E_UTF8: return "invalid UTF-8 in a string";
    case FS_LEX_E_ESCAPE: return "an invalid escape in a string";
    case FS_LEX_E_HEX: return "an invalid \\u escape in a string";
    case FS_LEX_E_NUL: return "\\u0000 in a string";
    case FS_LEX_E_LONE_LOW: return "a lone low surrogate escape in a string";
    case FS_LEX_E_LONE_HIGH: return "a high surrogate escape without its low surrogate in a string";
    case FS_LEX_E_END: return "the end of the text where a value was expected";
    case FS_LEX_E_UNEXPECTED: return "an unexpected character";
    case FS_LEX_E_FRACTION: return "a number without digits after its decimal point";
    case FS_LEX_E_EXPONENT: return "a number without digits in its exponent";
    case FS_LEX_E_NAME: return "a missing member name (a string) in an object";
    case FS_LEX_E_COLON: return "a missing ':' after a member name";
    case FS_LEX_E_OBJECT: return "a missing ',' or '}' in an object";
    case FS_LEX_E_ARRAY: return "a missing ',' or ']' in an array";
    case FS_LEX_E_DEPTH: return "nesting deeper than the limit";
    }
    return "invalid JSON";
}
