package stream

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
)

const testModels = `# prices per million tokens
models:
  - name: gpt-4o*
    context_limit: 128000
    input_usd_per_1m: 2.50
    output_usd_per_1m: 10
  - name: gpt-4o-mini*
    context_limit: 128000
    input_usd_per_1m: 0.15
    output_usd_per_1m: 0.60
  - name: gpt-4o-mini
    context_limit: 64000
    input_usd_per_1m: 1
    output_usd_per_1m: 2
  - name: local-llama
    context_limit: 8192
`

func testTable(t testing.TB) *ModelTable {
	t.Helper()
	mt, err := ParseModelTable("models.yaml", []byte(testModels))
	if err != nil {
		t.Fatal(err)
	}
	return mt
}

func TestModelTableLookup(t *testing.T) {
	mt := testTable(t)
	for _, tc := range []struct {
		name, want string
	}{
		{"gpt-4o-mini", "gpt-4o-mini"},             // exact wins over prefixes
		{"gpt-4o-mini-2024-07-18", "gpt-4o-mini*"}, // longest prefix
		{"gpt-4o-2024-08-06", "gpt-4o*"},           // shorter prefix
		{"gpt-4o", "gpt-4o*"},                      // a prefix matches itself
		{"local-llama", "local-llama"},             // exact
		{"local-llama-2", ""},                      // exact names are not prefixes
		{"gpt-4", ""},                              // shorter than the prefix
		{"GPT-4O", ""},                             // case matters
		{"", ""},
	} {
		m, ok := mt.Lookup([]byte(tc.name))
		got := ""
		if ok {
			got = m.Name
		}
		if got != tc.want {
			t.Errorf("Lookup(%q) = %q; want %q", tc.name, got, tc.want)
		}
	}
}

func TestLoadModelTableExample(t *testing.T) {
	mt, err := LoadModelTable(filepath.Join("..", "deploy", "models.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := mt.Lookup([]byte("gpt-4o-mini-2024-07-18"))
	if !ok || m.Name != "gpt-4o-mini*" || m.ContextLimit != 128000 || !m.HasPrices {
		t.Errorf("gpt-4o-mini-2024-07-18 → %+v, %v", m, ok)
	}
	if _, err := LoadModelTable(filepath.Join(t.TempDir(), "none.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v; want ErrNotExist", err)
	}
}

func TestModelTableErrors(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string
	}{
		{"", "m.yaml: empty file"},
		{"models: [", "m.yaml:1: "},
		{"models:\n  - name: a\n    context_limit: 10\n  - name: b\n    context_limt: 10\n", "m.yaml:5: models.1.context_limt: unknown field"},
		{"models:\n  - name: a\n    context_limit: -1\n", "m.yaml:3: models.0.context_limit: \"-1\": want a whole number"},
		{"models:\n  - name: a\n    context_limit: 1.5\n", "m.yaml:3: models.0.context_limit:"},
		{"models:\n  - name: a\n    input_usd_per_1m: x\n    output_usd_per_1m: 1\n", "m.yaml:3: models.0.input_usd_per_1m: \"x\""},
		{"models:\n  - name: a\n    input_usd_per_1m: 1\n    output_usd_per_1m: -2\n", "m.yaml:4: models.0.output_usd_per_1m:"},
		{"models:\n  - name: a\n    input_usd_per_1m: 1e9\n    output_usd_per_1m: 1\n", "m.yaml:3: models.0.input_usd_per_1m:"},
		{"models:\n  - name: a\n    input_usd_per_1m: 1\n", "m.yaml:3: models.0: give both"},
		{"models:\n  - name: a\n", "m.yaml:2: models.0: neither context_limit nor prices"},
		{"models:\n  - context_limit: 5\n", "m.yaml:2: models.0.name: required"},
		{"models:\n  - name: '*'\n    context_limit: 5\n", "m.yaml:2: models.0.name: required"},
		{"models:\n  - name: a*b\n    context_limit: 5\n", "m.yaml:2: models.0.name: \"a*b\": * is allowed only at the end"},
		{"models:\n  - name: a\n    context_limit: 5\n  - name: a\n    context_limit: 6\n", "m.yaml:4: models.1.name: \"a\" is already listed at line 2"},
		{"models:\n  - name: a\n    name: b\n    context_limit: 5\n", "m.yaml:3: models.0.name: given twice"},
		{"models:\n  - name: [a]\n", "m.yaml:2: models.0.name: want a single value"},
		{"models:\n  - a\n", "m.yaml:2: models.0: want a mapping"},
		{"models: {}\n", "m.yaml:1: models: want a list"},
		{"model:\n  - name: a\n", "m.yaml:1: model: unknown field"},
		{"- name: a\n", "m.yaml:1: want a mapping"},
		{"models: []\n---\nmodels: []\n", "m.yaml:2: more than one YAML document"},
	} {
		_, err := ParseModelTable("m.yaml", []byte(tc.yaml))
		var me *ModelTableError
		if !errors.As(err, &me) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: got %v; want an error starting %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := ParseModelTable("m.yaml", []byte("models: []\n")); err != nil {
		t.Errorf("empty list: %v; want none", err)
	}
}

// enrichJSON decodes agent events v1 through Enrich(JSONDecoder).
func enrichJSON(t *testing.T, mt *ModelTable, set *metrics.Set, recs ...string) []schemas.Event {
	t.Helper()
	d := Enrich(JSONDecoder, mt, set)()
	var out []schemas.Event
	for _, r := range recs {
		if err := d.Decode([]byte(r), func(e *schemas.Event) {
			c := *e
			c.Name = append([]byte(nil), e.Name...)
			out = append(out, c)
		}); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
	}
	return out
}

func TestEnrich(t *testing.T) {
	set := metrics.NewSet()
	rec := func(fields string) string {
		return `{"rollout":"r","version":"v1","ts":"2025-11-25T18:00:00Z",` + fields + `}`
	}
	got := enrichJSON(t, testTable(t), set,
		// 0: priced by the longest prefix; context use = input tokens / limit.
		rec(`"kind":"llm","name":"gpt-4o-mini-2024-07-18","input_tokens":10000,"output_tokens":2000`),
		// 1: carries its cost and context: unchanged.
		rec(`"kind":"llm","name":"gpt-4o","input_tokens":1000,"output_tokens":100,"cost_usd":0.5,"context_tokens":3000,"context_limit":4000`),
		// 2: carries context tokens but no limit: the limit is filled, the tokens stand.
		rec(`"kind":"llm","name":"gpt-4o","input_tokens":1000,"output_tokens":0,"context_tokens":64000`),
		// 3: a model without prices: context only.
		rec(`"kind":"llm","name":"local-llama","input_tokens":4096,"output_tokens":10`),
		// 4: unknown model: nothing, counted.
		rec(`"kind":"llm","name":"mystery-1","input_tokens":5,"output_tokens":5`),
		// 5: no tokens: nothing to price, no context use of 0.
		rec(`"kind":"llm","name":"gpt-4o"`),
		// 6: not an llm event, although its name is a model.
		rec(`"kind":"agent","name":"gpt-4o","input_tokens":5,"output_tokens":5`),
		// 7: the same model again (cache), exact entry.
		rec(`"kind":"llm","name":"gpt-4o-mini","input_tokens":1000000,"output_tokens":1000000`),
	)
	type want struct {
		cost         float64
		hasCost      bool
		ctxT, ctxLim int64
	}
	for i, w := range []want{
		{cost: (10000*0.15 + 2000*0.60) / 1e6, hasCost: true, ctxT: 10000, ctxLim: 128000},
		{cost: 0.5, hasCost: true, ctxT: 3000, ctxLim: 4000},
		{cost: 1000 * 2.5 / 1e6, hasCost: true, ctxT: 64000, ctxLim: 128000},
		{ctxT: 4096, ctxLim: 8192},
		{},
		{},
		{},
		{cost: 3, hasCost: true, ctxT: 1000000, ctxLim: 64000},
	} {
		e := &got[i]
		if math.Abs(e.CostUSD-w.cost) > 1e-12 || e.HasCost != w.hasCost || e.ContextTokens != w.ctxT || e.ContextLimit != w.ctxLim {
			t.Errorf("event %d (%s): cost %v/%v context %d/%d; want %v/%v %d/%d", i, e.Name,
				e.CostUSD, e.HasCost, e.ContextTokens, e.ContextLimit, w.cost, w.hasCost, w.ctxT, w.ctxLim)
		}
	}
	for name, want := range map[string]uint64{
		"canaryd_models_cost_filled_total":    3,
		"canaryd_models_context_filled_total": 4,
		"canaryd_models_unknown_total":        1,
	} {
		if n := set.GetOrCreateCounter(name).Get(); n != want {
			t.Errorf("%s = %d; want %d", name, n, want)
		}
	}
	if nd := Enrich(JSONDecoder, nil, nil); nd() == nil {
		t.Errorf("Enrich with no table: nil decoder")
	}
	// A decode error passes through and emits nothing.
	d := Enrich(JSONDecoder, testTable(t), nil)()
	if err := d.Decode([]byte(`{"rollout":`), func(*schemas.Event) { t.Errorf("emitted on error") }); err == nil {
		t.Errorf("bad record: no error")
	}
}

// TestEnrichOTLPSessions: wrapped before Sessions, the priced chat spans'
// costs add up on their agent events, in both encodings.
func TestEnrichOTLPSessions(t *testing.T) {
	mt := testTable(t)
	clock := SessionConfig{Clock: func() time.Time { return time.Unix(1764095656, 0) }}
	for _, tc := range []struct{ enc, file string }{
		{EncodingOTLPProto, "bench-genai-50.otlp.pb"},
		{EncodingOTLPJSON, "bench-genai-50.otlp.json"},
	} {
		d := Sessions(Enrich(OTLPTraces(OTLPConfig{Encoding: tc.enc}), mt, nil), clock)()
		var agents, chats int
		err := d.Decode(readFixture(t, tc.file), func(e *schemas.Event) {
			switch e.Kind {
			case schemas.KindLLM: // gpt-4o-mini, exact entry: 1805 in, 201 out
				chats++
				if want := (1805*1.0 + 201*2.0) / 1e6; !e.HasCost || math.Abs(e.CostUSD-want) > 1e-12 || e.ContextLimit != 64000 || e.ContextTokens != 1805 {
					t.Errorf("%s chat: cost %v/%v context %d/%d", tc.enc, e.CostUSD, e.HasCost, e.ContextTokens, e.ContextLimit)
				}
			case schemas.KindAgent: // two chats each
				agents++
				if want := 2 * (1805*1.0 + 201*2.0) / 1e6; !e.HasCost || math.Abs(e.CostUSD-want) > 1e-12 || e.ContextLimit != 0 {
					t.Errorf("%s agent: cost %v/%v context limit %d", tc.enc, e.CostUSD, e.HasCost, e.ContextLimit)
				}
			}
		})
		if err != nil || agents != 10 || chats != 20 {
			t.Errorf("%s: %v, %d agents, %d chats; want 10 and 20", tc.enc, err, agents, chats)
		}
	}
}

// TestEnrichAllocs: the wrapper allocates nothing on a warm decoder.
func TestEnrichAllocs(t *testing.T) {
	mt := testTable(t)
	rec := []byte(`{"rollout":"r","version":"v1","ts":"2025-11-25T18:00:00Z","kind":"llm","name":"gpt-4o-2024-08-06","input_tokens":100,"output_tokens":20}`)
	other := []byte(`{"rollout":"r","version":"v1","ts":"2025-11-25T18:00:00Z","kind":"llm","name":"gpt-4o-mini","input_tokens":100,"output_tokens":20}`)
	d := Enrich(JSONDecoder, mt, nil)()
	emit := func(*schemas.Event) {}
	_ = d.Decode(rec, emit)
	_ = d.Decode(other, emit)
	if n := testing.AllocsPerRun(100, func() {
		_ = d.Decode(rec, emit)
		_ = d.Decode(other, emit) // a cache miss each time
	}); n > 0 {
		t.Fatalf("%v allocations per pair of records; want 0", n)
	}
	pb := readFixture(t, "bench-genai-50.otlp.pb")
	od := Sessions(Enrich(OTLPTraces(OTLPConfig{}), mt, nil), SessionConfig{Clock: func() time.Time { return time.Unix(1764095656, 0) }})()
	for range 10 {
		_ = od.Decode(pb, emit)
	}
	if n := testing.AllocsPerRun(100, func() { _ = od.Decode(pb, emit) }); n > 0 {
		t.Fatalf("OTLP: %v allocations per record; want 0", n)
	}
}

// BenchmarkEnrichJSONPath is BenchmarkJSONPath through Enrich: the 50 bench
// events as agent events v1, their 20 chat events priced.
func BenchmarkEnrichJSONPath(b *testing.B) {
	var recs [][]byte
	err := OTLPTraces(OTLPConfig{})().Decode(readFixture(b, "bench-genai-50.otlp.pb"), func(e *schemas.Event) {
		recs = append(recs, schemas.AppendEvent(nil, e))
	})
	if err != nil {
		b.Fatal(err)
	}
	d := Enrich(JSONDecoder, testTable(b), nil)()
	priced := 0
	emit := func(e *schemas.Event) {
		if e.HasCost {
			priced++
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := d.Decode(recs[i%len(recs)], emit); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if priced == 0 {
		b.Fatal("nothing priced")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkEnrichOTLPProto is BenchmarkOTLPProto through Enrich.
func BenchmarkEnrichOTLPProto(b *testing.B) {
	rec := readFixture(b, "bench-genai-50.otlp.pb")
	benchDecode(b, Enrich(OTLPTraces(OTLPConfig{}), testTable(b), nil)(), rec)
}
