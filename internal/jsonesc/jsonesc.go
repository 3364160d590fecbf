// Package jsonesc decodes the escape sequences of JSON strings for canaryd's
// hand-written OTLP/JSON scanner (stream), exactly as encoding/json does.
// schemas' event decoder keeps its own copy of these lines: calling this
// package from its hot path measured 10% slower (see its strEscaped).
package jsonesc

import (
	"unicode/utf16"
	"unicode/utf8"
)

// Decode decodes the escape sequence that starts at b[i] (a backslash). It
// returns the rune and the number of bytes the sequence takes: 2 for \n and
// the other one-letter escapes, 6 for \uXXXX, 12 for a surrogate pair
// written as two \u escapes. A lone surrogate decodes as utf8.RuneError, as
// encoding/json does. ok is false when the escape is invalid or cut short.
//
// The rune's UTF-8 encoding is never longer than the sequence, so a caller
// may write it in place, behind the bytes it reads.
func Decode(b []byte, i int) (r rune, n int, ok bool) {
	if i+1 >= len(b) {
		return 0, 0, false
	}
	switch c := b[i+1]; c {
	case '"', '\\', '/':
		return rune(c), 2, true
	case 'b':
		return '\b', 2, true
	case 'f':
		return '\f', 2, true
	case 'n':
		return '\n', 2, true
	case 'r':
		return '\r', 2, true
	case 't':
		return '\t', 2, true
	case 'u':
	default:
		return 0, 0, false
	}
	r, ok = hex4(b, i+2)
	if !ok {
		return 0, 0, false
	}
	if !utf16.IsSurrogate(r) {
		return r, 6, true
	}
	j := i + 6
	r2 := rune(-1)
	if r < 0xdc00 && j+6 <= len(b) && b[j] == '\\' && b[j+1] == 'u' {
		r2, _ = hex4(b, j+2)
	}
	if r2 >= 0xdc00 && r2 < 0xe000 {
		return utf16.DecodeRune(r, r2), 12, true
	}
	return utf8.RuneError, 6, true
}

// hex4 parses the 4 hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
