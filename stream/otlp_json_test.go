package stream

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

// The OTLP/JSON decoder reads compact JSON, as the exporter writes it,
// through fast paths that compare eight bytes at a time; anything else goes
// through the general scanner. These tests check the word-at-a-time helpers
// against byte-by-byte definitions, and the fast paths against the general
// ones: the same record compact (fast) and indented (general) must decode
// alike.

func TestOTLPJSONDigits8(t *testing.T) {
	f := func(s string) {
		t.Helper()
		got, ok := digits8(le64([]byte(s)))
		want, err := strconv.ParseUint(s, 10, 64)
		if ok != (err == nil) || ok && got != want {
			t.Fatalf("digits8(%q) = %d, %v; want %d, %v", s, got, ok, want, err == nil)
		}
	}
	f("00000000")
	f("99999999")
	f("12345678")
	f("17640956")
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		b := []byte(strconv.FormatUint(rng.Uint64N(1e8)+1e8, 10)[1:])
		if rng.IntN(2) == 0 {
			b[rng.IntN(8)] = byte(rng.IntN(256))
		}
		f(string(b))
	}
	for c := range 256 {
		for at := range 8 {
			b := []byte("55555555")
			b[at] = byte(c)
			f(string(b))
		}
	}
}

func TestOTLPJSONLowerHex(t *testing.T) {
	want := func(b []byte) bool {
		for _, c := range b {
			if hexClass[c] != 0 {
				return false
			}
		}
		return true
	}
	for c := range 256 {
		for at := range 8 {
			b := []byte("0123abcd")
			b[at] = byte(c)
			if got := lowerHex(le64(b)); got != want(b) {
				t.Fatalf("lowerHex(%q) = %v; want %v", b, got, !got)
			}
		}
	}
}

func TestOTLPJSONStrEnd(t *testing.T) {
	want := func(b []byte, i int) int {
		for i < len(b) && plain[b[i]] {
			i++
		}
		return i
	}
	alphabet := []byte("ab\"\\\x00\x1f \x7f\x80\xffé")
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100_000 {
		b := make([]byte, rng.IntN(40))
		for k := range b {
			if rng.IntN(8) == 0 {
				b[k] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[k] = 'a' + byte(rng.IntN(26))
			}
		}
		i := rng.IntN(len(b) + 1)
		got, ok := strEndWords(b, i)
		if !ok {
			got = strEndTail(b, got)
		}
		if w := want(b, i); got != w {
			t.Fatalf("strEnd(%q, %d) = %d; want %d", b, i, got, w)
		}
		// skipStr: the closing quote is the first one not escaped.
		s := jsonScan{b: append([]byte{'"'}, b...)}
		end, esc := -1, false
		for k := 1; k < len(s.b); k++ {
			if esc {
				esc = false
			} else if s.b[k] == '\\' {
				esc = true
			} else if s.b[k] == '"' {
				end = k + 1
				break
			}
		}
		if ok := s.skipStr(); ok != (end >= 0) || ok && s.i != end || !ok && s.i != 0 {
			t.Fatalf("skipStr(%q) = %v at %d; want closing quote before %d", s.b, ok, s.i, end)
		}
	}
}

// TestOTLPJSONCompactIndent decodes each JSON fixture compact and indented.
func TestOTLPJSONCompactIndent(t *testing.T) {
	files := globFixtures(t, filepath.Join("testdata", "otlp", "*.json"))
	for _, name := range files {
		checkCompactIndent(t, readFixture(t, filepath.Base(name)))
	}
}

// FuzzOTLPJSONCompactIndent: any JSON value decodes compact as it does
// indented, to the same events or the same error (but for its offset).
func FuzzOTLPJSONCompactIndent(f *testing.F) {
	files := globFixtures(f, filepath.Join("testdata", "otlp", "*.json"))
	for _, name := range files {
		f.Add(readFixture(f, filepath.Base(name)))
	}
	f.Fuzz(checkCompactIndent)
}

func checkCompactIndent(t *testing.T, b []byte) {
	t.Helper()
	var compact, indented bytes.Buffer
	if json.Compact(&compact, b) != nil || json.Indent(&indented, compact.Bytes(), "", "\t") != nil {
		return
	}
	cfg := jsonCfg(OTLPConfig{})
	for _, newDec := range []func(OTLPConfig) NewDecoder{OTLPTraces, OTLPLogs} {
		fast, ferr := decode(newDec(cfg)(), compact.Bytes())
		slow, serr := decode(newDec(cfg)(), indented.Bytes())
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%s: compact events\n%+v\nindented\n%+v", compact.Bytes(), fast, slow)
		}
		var fe, se *OTLPError
		if (ferr == nil) != (serr == nil) ||
			ferr != nil && (!errors.As(ferr, &fe) || !errors.As(serr, &se) || fe.Field != se.Field || fe.Reason != se.Reason) {
			t.Fatalf("%s: compact error %v; indented %v", compact.Bytes(), ferr, serr)
		}
	}
}
