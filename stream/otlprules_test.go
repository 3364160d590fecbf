package stream

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
)

// rvk is an event's rollout, version and kind.
type rvk struct{ Rollout, Version, Kind string }

// pythonSDKEvents decodes python-sdk-agent.otlp through
// Sessions(OTLPTraces(cfg)) in encoding enc and returns every event's
// rollout/version/kind and the agent event (assembled from its trace).
func pythonSDKEvents(t *testing.T, cfg OTLPConfig, enc string) ([]rvk, sev, rvk) {
	t.Helper()
	cfg.Encoding = enc
	file := "python-sdk-agent.otlp.pb"
	if enc == EncodingOTLPJSON {
		file = "python-sdk-agent.otlp.json"
	}
	d := Sessions(OTLPTraces(cfg), SessionConfig{Clock: func() time.Time { return time.Unix(1764095656, 0) }})()
	var all []rvk
	var agent sev
	var agentRV rvk
	err := d.Decode(readFixture(t, file), func(e *schemas.Event) {
		r := rvk{string(e.Rollout), string(e.Version), e.Kind.String()}
		all = append(all, r)
		if e.Kind == schemas.KindAgent {
			agent, agentRV = toSev(e), r
		}
	})
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return all, agent, agentRV
}

// TestOTLPRulesPythonSDKOneRollout is the regression test of the default
// rules: an agent instrumented with the OpenTelemetry Python SDK, whose
// invoke_agent span names it support_bot version 2 while its resource says
// service support-agent version v1.5.0. Every event of the trace — the
// spans, and the agent event that Sessions assembles from them — must land
// in rollout support-agent, version v1.5.0.
func TestOTLPRulesPythonSDKOneRollout(t *testing.T) {
	want := map[string]int{"llm": 2, "other": 1, "tool": 1, "agent": 1}
	for _, enc := range []string{EncodingOTLPProto, EncodingOTLPJSON} {
		all, agent, agentRV := pythonSDKEvents(t, OTLPConfig{}, enc)
		kinds := map[string]int{}
		for _, e := range all {
			kinds[e.Kind]++
			if e.Rollout != "support-agent" || e.Version != "v1.5.0" {
				t.Errorf("%s: %s event in %s/%s; want support-agent/v1.5.0", enc, e.Kind, e.Rollout, e.Version)
			}
		}
		if !reflect.DeepEqual(kinds, want) {
			t.Errorf("%s: kinds %v; want %v", enc, kinds, want)
		}
		// The session was assembled: its tool call, the tokens of its two
		// chat calls, its four requests (2 chat, the tool, the HTTP GET).
		if agentRV != (rvk{"support-agent", "v1.5.0", "agent"}) || agent.Tools != "lookup_order" ||
			agent.In != 1432+1561 || agent.Out != 38+187 || agent.Requests != 4 || agent.Name != "support_bot" {
			t.Errorf("%s: agent event %+v %+v; want support-agent/v1.5.0, tools lookup_order, 2993/225 tokens, 4 requests", enc, agentRV, agent)
		}
	}
	// The test can fail: with the rules before issue 12 (span attributes
	// first, gen_ai.agent.* first), the agent and its tool were filed
	// under support_bot/2 and the chat calls under support-agent/v1.5.0.
	old := OTLPConfig{
		Rollout: []string{"gen_ai.agent.name", "service.name"},
		Version: []string{"gen_ai.agent.version", "service.version"},
	}
	all, _, agentRV := pythonSDKEvents(t, old, EncodingOTLPProto)
	split := map[rvk]int{}
	for _, e := range all {
		split[e]++
	}
	if agentRV != (rvk{"support_bot", "2", "agent"}) || split[rvk{"support_bot", "v1.5.0", "tool"}] != 1 || split[rvk{"support-agent", "v1.5.0", "llm"}] != 2 {
		t.Errorf("old rules: %v; want the agent in support_bot/2, the tool in support_bot/v1.5.0, the chat calls in support-agent/v1.5.0", split)
	}
}

func writeRules(t *testing.T, dir, text string) string {
	t.Helper()
	f := filepath.Join(dir, "otlp-rules.yaml")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestOTLPRulesDeployExample: deploy/otlp-rules.yaml parses and spells out
// the defaults, so that the example and DefaultOTLPRules stay one.
func TestOTLPRulesDeployExample(t *testing.T) {
	r, err := LoadOTLPRules("../deploy/otlp-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	strip := func(fr FieldRules) FieldRules {
		for i := range fr.Keys {
			fr.Keys[i].Line = 0
		}
		return fr
	}
	def := DefaultOTLPRules()
	if got, want := strip(r.Rollout()), def.Rollout(); !reflect.DeepEqual(got, want) {
		t.Errorf("rollout: got %+v; want %+v", got, want)
	}
	if got, want := strip(r.Version()), def.Version(); !reflect.DeepEqual(got, want) {
		t.Errorf("version: got %+v; want %+v", got, want)
	}
	if r.String() != def.String() || !strings.Contains(def.String(), "rollout: service.name (resource), gen_ai.agent.name (any); version: service.version (resource)") {
		t.Errorf("String: %q, defaults %q", r.String(), def.String())
	}
	if r.File() != "../deploy/otlp-rules.yaml" || def.File() != "" {
		t.Errorf("File: %q, defaults %q", r.File(), def.File())
	}
}

// TestOTLPRulesDocExample: the example file in otlp.md parses into the
// rules it describes.
func TestOTLPRulesDocExample(t *testing.T) {
	doc, err := os.ReadFile("otlp.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "### The rules file")
	if !ok {
		t.Fatal("otlp.md has no \"### The rules file\" section")
	}
	_, after, _ = strings.Cut(after, "```yaml\n")
	example, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatal("no yaml block in otlp.md's rules file section")
	}
	r, err := ParseOTLPRules("otlp.md", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	const want = `rollout: k8s.deployment.name (resource), service.name (any), map of 1; version: service.version (resource, trim_prefix "v"), container.image.tag (resource, regex "^v?(\\d+\\.\\d+\\.\\d+)")`
	if r.String() != want {
		t.Errorf("otlp.md example: %s\nwant %s", r, want)
	}
}

// TestParseOTLPRulesErrors: a bad file is refused with its line and field.
func TestParseOTLPRulesErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"", "f.yaml: empty file"},
		{"rollout: [", "f.yaml:1: "},
		{"- a\n", "f.yaml:1: want a mapping with rollout: and/or version:"},
		{"version:\n  keys: [a]\n---\nversion: {}\n", "f.yaml:3: more than one YAML document"},
		{"rollouts:\n  keys: [a]\n", "f.yaml:1: rollouts: unknown field (want rollout, version)"},
		{"rollout:\n  keys: [a]\nrollout:\n  keys: [b]\n", "f.yaml:3: rollout: given twice"},
		{"rollout: service.name\n", "f.yaml:1: rollout: want a mapping (keys, map)"},
		{"rollout:\n  keys: service.name\n", "f.yaml:2: rollout.keys: want a list of keys"},
		{"rollout:\n  keys: []\n", "f.yaml:2: rollout.keys: empty"},
		{"rollout:\n  key: [a]\n", "f.yaml:2: rollout.key: unknown field (want keys, map)"},
		{"version:\n  keys:\n    - key: service.version\n      from: pod\n", `f.yaml:4: version.keys.0.from: "pod": want resource, span or any`},
		{"version:\n  keys:\n    - a\n    - key: b\n      frm: span\n", "f.yaml:5: version.keys.1.frm: unknown field (want key, from, trim_prefix, regex)"},
		{"version:\n  keys:\n    - from: span\n", "f.yaml:3: version.keys.0.key: required"},
		{"version:\n  keys:\n    - key: a\n      key: b\n", "f.yaml:4: version.keys.0.key: given twice"},
		{"version:\n  keys:\n    - [a]\n", "f.yaml:3: version.keys.0: want an attribute key"},
		{"version:\n  keys:\n    - key: [a]\n", "f.yaml:3: version.keys.0.key: want a single value"},
		{"version:\n  keys:\n    - a\n    - b\n    - a\n", `f.yaml:5: version.keys.2.key: "a" is already keys.0 of version`},
		{"version:\n  keys:\n    - 'a\"b'\n", "f.yaml:3: version.keys.0.key: \"a\\\"b\": holds a control character, a quote or a backslash"},
		{"version:\n  keys:\n    - " + strings.Repeat("k", 256) + "\n", "f.yaml:3: version.keys.0.key: empty or longer than 255 bytes"},
		{"version:\n  keys:\n    - key: a\n      trim_prefix: v\n      regex: (x)\n", "f.yaml:3: version.keys.0: both trim_prefix and regex"},
		{"version:\n  keys:\n    - key: a\n      regex: '(x'\n", "f.yaml:3: version.keys.0.regex: missing closing )"},
		{"version:\n  keys:\n    - key: a\n      regex: 'v\\d+'\n", "f.yaml:3: version.keys.0.regex: \"v\\\\d+\" has 0 capturing groups: want exactly one"},
		{"version:\n  keys:\n    - key: a\n      regex: '(v)(\\d+)'\n", "has 2 capturing groups"},
		{"version:\n  keys:\n    - key: a\n      trim_prefix: ''\n", "f.yaml:4: version.keys.0.trim_prefix: empty"},
		{"rollout:\n  map:\n    a: ''\n", "f.yaml:3: rollout.map.a: empty replacement"},
		{"rollout:\n  map:\n    a: b\n    a: c\n", "f.yaml:4: rollout.map.a: given twice"},
		{"rollout:\n  map:\n    a: [b]\n", "f.yaml:3: rollout.map.a: want a single value"},
		{"rollout:\n  map: [a]\n", "f.yaml:2: rollout.map: want a mapping"},
		{"rollout:\n  map:\n    a: " + strings.Repeat("x", 513) + "\n", "f.yaml:3: rollout.map.a: replacement longer than 512 bytes"},
		{"rollout:\n  keys: [" + strings.Repeat("k,", 64) + "k]\n", "f.yaml:2: rollout.keys: 65 keys, at most 64"},
	} {
		_, err := ParseOTLPRules("f.yaml", []byte(tc.text))
		var re *OTLPRulesError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v; want an *OTLPRulesError with %q", tc.text, err, tc.want)
		}
	}
	// Rules made in Go are checked alike.
	if _, err := NewOTLPRules(FieldRules{Keys: []RuleKey{{Key: "a", From: 7}}}, FieldRules{}); err == nil || err.Error() != `otlp rules: rollout.keys.0.from: RuleScope(7): want resource, span or any` {
		t.Errorf("NewOTLPRules with a bad scope: %v", err)
	}
	if _, err := NewOTLPRules(FieldRules{}, FieldRules{Map: map[string]string{"": "x"}}); err == nil || !strings.Contains(err.Error(), "version.map.: empty value to map") {
		t.Errorf("NewOTLPRules with an empty map key: %v", err)
	}
	if _, err := LoadOTLPRules(filepath.Join(t.TempDir(), "none.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadOTLPRules of a missing file: %v", err)
	}
	if err := (OTLPConfig{Rules: NewRulesRef(nil), Rollout: []string{"a"}}).Validate(); err == nil {
		t.Errorf("Validate accepted Rules with Rollout")
	}
}

// TestOTLPRulesFile: scopes, transforms and maps from a file, decoded in
// both encodings.
func TestOTLPRulesFile(t *testing.T) {
	r, err := ParseOTLPRules("rules.yaml", []byte(`
rollout:
  keys:
    - key: k8s.deployment.name
      from: resource
    - key: gen_ai.agent.name
      from: span
  map:
    weather-agent: weather
version:
  keys:
    - key: k8s.pod.label.role
      from: span           # on the resource in the fixtures: never read
    - key: service.version
      regex: '^(\d+)\.'    # the major version
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := OTLPConfig{Rules: NewRulesRef(r)}
	for _, base := range []string{"genai-chat-span.otlp", "genai-execute-tool-span.otlp"} {
		for _, e := range decodeBoth(t, OTLPTraces, cfg, base) {
			if e.Rollout != "weather" || e.Version != "1" {
				t.Errorf("%s: %s/%s; want weather/1 (mapped deployment, major version)", base, e.Rollout, e.Version)
			}
		}
	}
	// from: span reads only the span; a regex that does not match, and a
	// trimmed value that is empty, fall through to the next key; the map
	// replaces only what it lists; values over MaxStringBytes make the
	// field unknown.
	r, err = NewOTLPRules(
		FieldRules{Keys: []RuleKey{{Key: "team", From: FromSpan}, {Key: "service.name", From: FromResource}}, Map: map[string]string{"svc": "svc-id"}},
		FieldRules{Keys: []RuleKey{{Key: "image", Regex: `:v?(\d+\.\d+\.\d+)$`}, {Key: "tag", TrimPrefix: "release-"}, {Key: "service.version", From: FromResource, TrimPrefix: "v"}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	set := metrics.NewSet()
	d := OTLPTraces(OTLPConfig{Encoding: EncodingOTLPJSON, Rules: NewRulesRef(r), Metrics: set})()
	res := strAttr("service.name", "svc") + "," + strAttr("service.version", "v2.0.1") + "," + strAttr("team", "on-resource")
	for _, tc := range []struct {
		attrs   []string
		rollout string
		version string
	}{
		{nil, "svc-id", "2.0.1"},
		{[]string{strAttr("team", "payments")}, "payments", "2.0.1"},
		{[]string{strAttr("image", "reg/agent:v1.7.3")}, "svc-id", "1.7.3"},
		{[]string{strAttr("image", "reg/agent:latest")}, "svc-id", "2.0.1"},
		{[]string{strAttr("tag", "release-42")}, "svc-id", "42"},
		{[]string{strAttr("tag", "release-")}, "svc-id", "2.0.1"},
		{[]string{strAttr("tag", "nightly")}, "svc-id", "nightly"},
		{[]string{strAttr("service.version", "9")}, "svc-id", "2.0.1"},
		{[]string{strAttr("image", strings.Repeat("x", 513))}, "svc-id", "unknown"},
	} {
		// Twice: the second time from the decoder's regex cache.
		for range 2 {
			got, err := decode(d, spansJSON(res, jspan("s", 1, 2, tc.attrs...)))
			if err != nil || len(got) != 1 || got[0].Rollout != tc.rollout || got[0].Version != tc.version {
				t.Errorf("%v: %+v, %v; want %s/%s", tc.attrs, got, err, tc.rollout, tc.version)
			}
		}
	}
}

// TestOTLPRulesRegexCache: the decoder's cache of regex results gives what
// the regex gives, whatever the order and mix of values.
func TestOTLPRulesRegexCache(t *testing.T) {
	const expr = `^(?:v|release-)?(\d+(?:\.\d+)*)`
	r, err := NewOTLPRules(FieldRules{}, FieldRules{Keys: []RuleKey{{Key: "v", Regex: expr}}})
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(expr)
	d := OTLPTraces(OTLPConfig{Encoding: EncodingOTLPJSON, Rules: NewRulesRef(r)})()
	values := []string{"v1", "1.2.3", "release-7", "x", "v1.5.0", "v1.5", "", "v", "12", "release-12.0.1-rc", "1.2.3"}
	for i := range 200 {
		v := values[(i*7+i/3)%len(values)]
		got, err := decode(d, spansJSON(strAttr("service.name", "s"), jspan("s", 1, 2, strAttr("v", v))))
		want := "unknown"
		if m := re.FindStringSubmatch(v); m != nil && m[1] != "" {
			want = m[1]
		}
		if err != nil || len(got) != 1 || got[0].Version != want {
			t.Fatalf("value %q: %+v, %v; want version %q", v, got, err, want)
		}
	}
}

// TestOTLPRulesReload: Store and Reload change the rules of running
// decoders from their next record; a bad file keeps the rules in force.
func TestOTLPRulesReload(t *testing.T) {
	dir := t.TempDir()
	f := writeRules(t, dir, "rollout:\n  keys: [k8s.deployment.name]\n")
	r, err := LoadOTLPRules(f)
	if err != nil {
		t.Fatal(err)
	}
	ref := NewRulesRef(r)
	set := metrics.NewSet()
	spans := OTLPTraces(OTLPConfig{Rules: ref, Metrics: set})()
	logs := OTLPLogs(OTLPConfig{Rules: ref, Metrics: set})()
	rec, logRec := readFixture(t, "genai-execute-tool-span.otlp.pb"), readFixture(t, "eval-logs.otlp.pb")
	rollouts := func() (string, string) {
		t.Helper()
		s, err := decode(spans, rec)
		if err != nil || len(s) == 0 {
			t.Fatal(err)
		}
		l, err := decode(logs, logRec)
		if err != nil || len(l) == 0 {
			t.Fatal(err)
		}
		return s[0].Rollout + "/" + s[0].Version, l[0].Rollout + "/" + l[0].Version
	}
	if s, l := rollouts(); s != "weather-agent/1.5.0-rc.1" || l != "weather-agent/1.5.0-rc.1" {
		t.Fatalf("from the file: spans %s, logs %s", s, l)
	}
	// The file changes: Reload reads it again.
	writeRules(t, dir, "rollout:\n  keys: [gen_ai.tool.name]\nversion:\n  keys: [k8s.pod.label.role]\n")
	if got, err := ref.Reload(); err != nil || got == r || ref.Load() != got {
		t.Fatalf("Reload: %v, %v", got, err)
	}
	if s, l := rollouts(); s != "get_weather/canary" || l != "unknown/canary" {
		t.Fatalf("after Reload: spans %s, logs %s", s, l)
	}
	// A bad file: the error names it, the rules in force stay.
	writeRules(t, dir, "rollout:\n  keys: [a, a]\n")
	before := ref.Load()
	if got, err := ref.Reload(); err == nil || !strings.Contains(err.Error(), "otlp-rules.yaml:2: rollout.keys.1.key") || got != before || ref.Load() != before {
		t.Fatalf("Reload of a bad file: %v, %v", got, err)
	}
	if s, _ := rollouts(); s != "get_weather/canary" {
		t.Fatalf("after a bad file: spans %s", s)
	}
	// Store, as from Go; nil is the defaults, which have no file to reload.
	ref.Store(nil)
	if s, l := rollouts(); s != "weather-agent/1.5.0-rc.1" || l != "weather-agent/1.5.0-rc.1" {
		t.Fatalf("defaults: spans %s, logs %s", s, l)
	}
	if _, err := ref.Reload(); !errors.Is(err, ErrRulesNoFile) {
		t.Fatalf("Reload of the defaults: %v", err)
	}
	var zero RulesRef
	if zero.Load() != DefaultOTLPRules() {
		t.Fatalf("zero RulesRef does not hold the defaults")
	}
}

// TestOTLPRulesStoreWhileDecoding: rules stored while decoders run apply
// to whole records: every record's events are all under one rule set.
func TestOTLPRulesStoreWhileDecoding(t *testing.T) {
	a, err := NewOTLPRules(FieldRules{Keys: []RuleKey{{Key: "service.name", From: FromResource}}}, FieldRules{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewOTLPRules(FieldRules{Keys: []RuleKey{{Key: "k8s.pod.label.role", From: FromResource}}, Map: map[string]string{"canary": "b"}}, FieldRules{})
	if err != nil {
		t.Fatal(err)
	}
	ref := NewRulesRef(a)
	rec := readFixture(t, "bench-genai-50.otlp.pb")
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := OTLPTraces(OTLPConfig{Rules: ref})()
			seen := map[string]bool{}
			for range 300 {
				got, err := decode(d, rec)
				if err != nil {
					errs <- err
					return
				}
				first := got[0].Rollout
				for _, e := range got {
					if e.Rollout != first {
						errs <- errors.New("one record decoded under two rule sets: " + first + " and " + e.Rollout)
						return
					}
				}
				seen[first] = true
			}
			if !seen["support-agent"] && !seen["b"] {
				errs <- errors.New("neither rule set seen")
			}
		}()
	}
	// Swap the rules until both decoders are done.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for i := 0; ; i++ {
		select {
		case <-done:
		default:
			ref.Store([]*OTLPRules{a, b}[i%2])
			continue
		}
		break
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestOTLPResolvedCounts: canaryd_otlp_resolved_total counts, per field,
// the rule that resolved each emitted event ("trace" for a join, "none"
// for the unresolved); a refused record counts nothing.
func TestOTLPResolvedCounts(t *testing.T) {
	set := metrics.NewSet()
	idx := NewTraceIndex(16, set)
	spans := OTLPTraces(OTLPConfig{Encoding: EncodingOTLPJSON, Metrics: set, Traces: idx})()
	logs := OTLPLogs(OTLPConfig{Encoding: EncodingOTLPJSON, Metrics: set, Traces: idx})()
	count := func(signal, field, rule string) uint64 {
		return set.GetOrCreateCounter(`canaryd_otlp_resolved_total{signal="` + signal + `",field="` + field + `",rule="` + rule + `"}`).Get()
	}
	// The counters of the rules exist at 0 before any record.
	var text strings.Builder
	set.WritePrometheus(&text)
	for _, line := range []string{
		`canaryd_otlp_resolved_total{signal="spans",field="rollout",rule="service.name"} 0`,
		`canaryd_otlp_resolved_total{signal="spans",field="version",rule="none"} 0`,
		`canaryd_otlp_resolved_total{signal="logs",field="version",rule="trace"} 0`,
	} {
		if !strings.Contains(text.String(), line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}

	// 5 spans of the Python SDK agent: all by the resource's keys.
	if _, err := decode(spans, readFixture(t, "python-sdk-agent.otlp.json")); err != nil {
		t.Fatal(err)
	}
	// A span whose resource has no service (the SDK logger's): rollout by
	// gen_ai.agent.name; version by gen_ai.agent.version; and one with
	// nothing: none.
	if _, err := decode(spans, spansJSON("",
		jspan("a", 1, 2, strAttr("gen_ai.agent.name", "bot"), strAttr("gen_ai.agent.version", "3")),
		jspan("b", 1, 2))); err != nil {
		t.Fatal(err)
	}
	// A record refused whole (a bad id after a good span) counts nothing.
	if _, err := decode(spans, spansJSON(strAttr("service.name", "x"), jspan("a", 1, 2),
		`{"traceId":"zz","spanId":"00f067aa0ba902b7","endTimeUnixNano":"5"}`)); err == nil {
		t.Fatal("bad record accepted")
	}
	// Evaluation logs: one by the trace of the agent's spans, one by its
	// own resource, one unknown.
	if _, err := decode(logs, logsJSON(strAttr("service.name", "evaluator"),
		evalLog("8f1d3c5e7a9b2d4f6a8c0e1f3b5d7f90", "relevance", 0.9),
		evalLog("0123456789abcdef0123456789abcdef", "relevance", 0.4, strAttr("gen_ai.agent.version", "7")),
		evalLog("", "relevance", 0.5))); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		signal, field, rule string
		want                uint64
	}{
		{"spans", "rollout", "service.name", 5},
		{"spans", "rollout", "gen_ai.agent.name", 1},
		{"spans", "rollout", "none", 1},
		{"spans", "version", "service.version", 5},
		{"spans", "version", "gen_ai.agent.version", 1},
		{"spans", "version", "none", 1},
		{"spans", "version", "container.image.tag", 0},
		{"logs", "rollout", "trace", 1},
		{"logs", "version", "trace", 1},
		{"logs", "rollout", "service.name", 2},
		{"logs", "version", "gen_ai.agent.version", 1},
		{"logs", "version", "none", 1},
		{"logs", "rollout", "none", 0},
	} {
		if n := count(tc.signal, tc.field, tc.rule); n != tc.want {
			t.Errorf("resolved{%s,%s,%s} = %d; want %d", tc.signal, tc.field, tc.rule, n, tc.want)
		}
	}
	// Per field, the rules' counts add up to the events emitted, and the
	// none counts equal the unattributed ones.
	for _, signal := range []string{"spans", "logs"} {
		for _, field := range []string{"rollout", "version"} {
			sum := uint64(0)
			for _, rule := range []string{"service.name", "gen_ai.agent.name", "service.version", "k8s.pod.label.app.kubernetes.io/version",
				"container.image.tag", "k8s.pod.label.rollouts-pod-template-hash", "gen_ai.agent.version", "traceloop.entity.version", "trace", "none"} {
				if signal == "spans" && rule == "trace" {
					continue
				}
				sum += count(signal, field, rule)
			}
			if want := map[string]uint64{"spans": 7, "logs": 3}[signal]; sum != want {
				t.Errorf("%s %s: rules add up to %d; want %d events", signal, field, sum, want)
			}
			if u := set.GetOrCreateCounter(`canaryd_otlp_unattributed_total{signal="` + signal + `",field="` + field + `"}`).Get(); u != count(signal, field, "none") {
				t.Errorf("%s %s: unattributed %d, none %d", signal, field, u, count(signal, field, "none"))
			}
		}
	}
	// After new rules, their keys are counted; the old counters keep their counts.
	spansRef := NewRulesRef(nil)
	d := OTLPTraces(OTLPConfig{Encoding: EncodingOTLPJSON, Metrics: set, Rules: spansRef})()
	r, err := NewOTLPRules(FieldRules{Keys: []RuleKey{{Key: "team"}}}, FieldRules{})
	if err != nil {
		t.Fatal(err)
	}
	spansRef.Store(r)
	if _, err := decode(d, spansJSON(strAttr("team", "t"), jspan("a", 1, 2))); err != nil {
		t.Fatal(err)
	}
	if n := count("spans", "rollout", "team"); n != 1 || count("spans", "rollout", "service.name") != 5 {
		t.Errorf("after new rules: team %d, service.name %d; want 1, 5", n, count("spans", "rollout", "service.name"))
	}
}

// TestOTLPRulesAllocs: a warm decoder with every kind of rule (scopes,
// trim_prefix, regex, map) allocates nothing, nor does switching back to
// rules it used before once their counters exist.
func TestOTLPRulesAllocs(t *testing.T) {
	r, err := NewOTLPRules(
		FieldRules{Keys: []RuleKey{{Key: "k8s.deployment.name", From: FromResource}}, Map: map[string]string{"support-agent": "support"}},
		FieldRules{Keys: []RuleKey{{Key: "k8s.pod.name", From: FromResource, Regex: `-([0-9a-f]{10})-`}, {Key: "service.version", TrimPrefix: "1."}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	ref := NewRulesRef(r)
	for _, enc := range []string{EncodingOTLPProto, EncodingOTLPJSON} {
		ext := map[string]string{EncodingOTLPProto: ".pb", EncodingOTLPJSON: ".json"}[enc]
		recs := [][]byte{readFixture(t, "bench-genai-50.otlp"+ext), readFixture(t, "multi-resource.otlp"+ext)}
		d := Sessions(OTLPTraces(OTLPConfig{Encoding: enc, Rules: ref}), SessionConfig{Clock: func() time.Time { return time.Unix(1764095656, 0) }})()
		var got []string
		emit := func(e *schemas.Event) {
			if len(got) < 2 {
				got = append(got, string(e.Rollout)+"/"+string(e.Version))
			}
		}
		for range 5 {
			for _, rec := range recs {
				if err := d.Decode(rec, emit); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !slices.Equal(got, []string{"support/7c9d5b7f6d", "support/7c9d5b7f6d"}) {
			t.Fatalf("%s: events %v", enc, got)
		}
		if n := testing.AllocsPerRun(50, func() {
			for _, rec := range recs {
				_ = d.Decode(rec, emit)
			}
		}); n > 0 {
			t.Errorf("%s: %v allocations per run; want 0", enc, n)
		}
	}
}

// FuzzParseOTLPRules: no input panics; an error is an *OTLPRulesError;
// accepted rules compile into a decoder that runs.
func FuzzParseOTLPRules(f *testing.F) {
	for _, s := range []string{
		"rollout:\n  keys: [service.name]\n",
		"version:\n  keys:\n    - key: v\n      from: span\n      regex: '^v(\\d+)'\n  map: {a: b}\n",
		"rollout:\n  keys:\n    - key: a\n      trim_prefix: x\n",
	} {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile("../deploy/otlp-rules.yaml"); err == nil {
		f.Add(b)
	}
	rec := readFixture(f, "python-sdk-agent.otlp.pb")
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseOTLPRules("f.yaml", b)
		if err != nil {
			var re *OTLPRulesError
			if !errors.As(err, &re) {
				t.Fatalf("error %T %v; want *OTLPRulesError", err, err)
			}
			return
		}
		_ = r.String()
		if _, err := decode(OTLPTraces(OTLPConfig{Rules: NewRulesRef(r)})(), rec); err != nil {
			t.Fatal(err)
		}
	})
}
