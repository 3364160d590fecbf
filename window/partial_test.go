package window

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// TestPartialRoundTrip: a closed window published as a partial and read back
// is the same window, byte for byte in its aggregates' encoding (the
// sketches, error types, bigrams, session medians and new sessions), so that
// stage 2 judges exactly what one process would have.
func TestPartialRoundTrip(t *testing.T) {
	var got []Closed
	p := NewPartition(3, Options{Width: 10 * time.Second, Lateness: time.Second, Source: "otlp_spans", Emit: func(c Closed) { got = append(got, c) }})
	t0 := time.Unix(1_700_000_000, 0)
	p.SetNow(t0)
	for i := range 200 {
		e := ev("r", []string{"v1", "v2"}[i%2], []schemas.Kind{schemas.KindTool, schemas.KindLLM, schemas.KindAgent}[i%3], []string{"search", "gpt", "fetch"}[i%3],
			t0.Add(time.Duration(i)*40*time.Millisecond), float64(10+i), i%7 == 0)
		e.SessionID = []byte{'s', byte('a' + i%13)}
		if i%7 == 0 && i%2 == 0 {
			e.ErrorType = []byte("rate_limit")
		}
		if err := p.Add(e, int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if err := p.Add(ev("r", "v1", schemas.KindTool, "search", t0.Add(15*time.Second), 1, false), int64(300+i)); err != nil {
			t.Fatal(err)
		}
	}
	p.SetNow(t0.Add(15 * time.Second))
	p.Advance()
	if len(got) != 1 {
		t.Fatalf("%d windows closed; want 1", len(got))
	}
	c := got[0]
	b, err := EncodePartial(c)
	if err != nil {
		t.Fatal(err)
	}
	d, err := DecodePartial(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a partial of %d series: %d bytes", len(c.Series), len(b))
	if d.Rollout != c.Rollout || d.Source != c.Source || d.Partition != c.Partition || d.Start != c.Start || d.End != c.End ||
		d.Watermark != c.Watermark || d.Wall != c.Wall {
		t.Fatalf("identity %+v; want %+v", d, c)
	}
	if !reflect.DeepEqual(d.ErrorTypes, c.ErrorTypes) || !reflect.DeepEqual(d.Bigrams, c.Bigrams) {
		t.Fatalf("names %v %v; want %v %v", d.ErrorTypes, d.Bigrams, c.ErrorTypes, c.Bigrams)
	}
	if len(d.Series) != len(c.Series) {
		t.Fatalf("%d series; want %d", len(d.Series), len(c.Series))
	}
	for i, s := range c.Series {
		ds := d.Series[i]
		if ds.Version != s.Version || ds.Segment != s.Segment {
			t.Fatalf("series %d is %v %v; want %v %v", i, ds.Version, ds.Segment, s.Version, s.Segment)
		}
		if w, g := s.Agg.AppendBinary(nil), ds.Agg.AppendBinary(nil); !bytes.Equal(w, g) {
			t.Errorf("series %d (%s %v): aggregate differs after the round trip", i, s.Version, s.Segment)
		}
	}

	// Not a partial, a truncated one, a table of another window's rows.
	for name, v := range map[string][]byte{"empty": nil, "garbage": []byte("not arrow"), "truncated": b[:len(b)/2]} {
		if _, err := DecodePartial(v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v; want ErrCorrupt", name, err)
		}
	}
	other := c
	other.Rollout = ""
	if b, err := EncodePartial(other); err != nil {
		t.Fatal(err)
	} else if _, err := DecodePartial(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a partial without rollout: err %v; want ErrCorrupt", err)
	}
}
