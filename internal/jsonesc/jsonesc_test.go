package jsonesc

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// TestDecodeAsEncodingJSON: every escape decodes to what encoding/json
// makes of it, taking the bytes it should, and the bad ones are refused.
func TestDecodeAsEncodingJSON(t *testing.T) {
	for _, esc := range []string{
		`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u0041`, `\u00e9`, `\u20AC`, `\uffff`,
		`\ud83d\ude00`,                                // a surrogate pair
		`\ud83d`, `\ude00`, `\ud83d\u0041`, `\ud83dx`, // lone surrogates
	} {
		var want string
		if err := json.Unmarshal([]byte(`"`+esc+`"`), &want); err != nil {
			t.Fatalf("%s: encoding/json: %v", esc, err)
		}
		r, n, ok := Decode([]byte(esc), 0)
		if !ok {
			t.Errorf("%s: refused", esc)
			continue
		}
		// The rune, then whatever follows the bytes it took, must read as
		// encoding/json reads the whole.
		var rest string
		if err := json.Unmarshal([]byte(`"`+esc[n:]+`"`), &rest); err != nil {
			t.Fatalf("%s: took %d bytes, the rest %q does not parse: %v", esc, n, esc[n:], err)
		}
		if got := string(r) + rest; got != want {
			t.Errorf("%s: %q (took %d bytes), encoding/json %q", esc, got, n, want)
		}
		if utf8.RuneLen(r) > n {
			t.Errorf("%s: rune of %d bytes from a %d-byte escape: not writable in place", esc, utf8.RuneLen(r), n)
		}
	}
	for _, bad := range []string{`\`, `\x`, `\u12`, `\u12g4`, `\U0041`} {
		if _, _, ok := Decode([]byte(bad), 0); ok {
			t.Errorf("%s: accepted", bad)
		}
	}
}
