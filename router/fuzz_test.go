package router

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"
)

// FuzzTableApply feeds arbitrary records to a Table with a key: Apply must
// not panic, must count every record once, and may apply only a record whose
// signature verifies on its bytes and whose seq is above the last.
func FuzzTableApply(f *testing.F) {
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		f.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		f.Fatal(err)
	}
	for _, c := range v.Signatures {
		if c.Key == "secret" {
			f.Add("support-agent", []byte(c.Value))
		}
	}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		tab := NewTable([]byte("secret"))
		for i := range 2 {
			_, err := tab.Apply([]byte(key), value, time.Unix(0, 0))
			var refused *RefusedError
			switch {
			case err == nil:
				if i == 1 {
					t.Fatalf("the same record applied twice: %q", value)
				}
				if verr := Verify(value, []byte("secret")); verr != nil {
					t.Fatalf("applied a record that does not verify (%v): %q", verr, value)
				}
			case errors.As(err, &refused), errors.Is(err, ErrStale), errors.Is(err, ErrDuplicate), errors.Is(err, ErrTombstone):
			default:
				t.Fatalf("Apply: unexpected error %v", err)
			}
		}
		if st := tab.Stats(); st.Records != 2 {
			t.Fatalf("Stats.Records = %d; want 2", st.Records)
		}
	})
}
