package stream

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
)

// The payloads in testdata/otlp: the *.json fixtures are copies of
// ../shared/testdata/otlp (see README.md there); the *.pb files and the
// generated *.json (bench-, multi-, eval-) are written by testdata/otlpgen
// with the Collector's pdata marshalers.

// ev is an Event with its byte slices as strings, comparable with ==.
type ev struct {
	Rollout, Version, Kind, Name string
	TS                           int64
	DurationMS                   float64
	HasDuration                  bool
	Error                        bool
	ErrorType                    string
	In, Out                      int64
	Cost                         float64
	HasCost                      bool
	Trace, Span, Parent, Session string
	HasOutcome                   bool
	Score                        float64
	HasScore                     bool
	Success, HasSuccess          bool
	Halluc, HasHalluc            bool
}

func toEv(e *schemas.Event) ev {
	return ev{
		Rollout: string(e.Rollout), Version: string(e.Version), Kind: e.Kind.String(), Name: string(e.Name),
		TS: e.TS, DurationMS: math.Round(e.DurationMS*1e6) / 1e6, HasDuration: e.HasDuration,
		Error: e.Error, ErrorType: string(e.ErrorType), In: e.InputTokens, Out: e.OutputTokens,
		Cost: e.CostUSD, HasCost: e.HasCost,
		Trace: string(e.TraceID), Span: string(e.SpanID), Parent: string(e.ParentSpanID), Session: string(e.SessionID),
		HasOutcome: e.HasOutcome, Score: e.OutcomeScore, HasScore: e.HasOutcomeScore,
		Success: e.OutcomeSuccess, HasSuccess: e.HasOutcomeSuccess,
		Halluc: e.OutcomeHallucinated, HasHalluc: e.HasHallucination,
	}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "otlp", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decode runs one Decode and copies out the events.
func decode(d Decoder, b []byte) ([]ev, error) {
	var out []ev
	err := d.Decode(b, func(e *schemas.Event) { out = append(out, toEv(e)) })
	return out, err
}

func jsonCfg(c OTLPConfig) OTLPConfig { c.Encoding = EncodingOTLPJSON; return c }

// decodeBoth decodes fixture base in OTLP/JSON (base+".json") and protobuf
// (base+".pb"), checks that both give the same events, and returns them.
func decodeBoth(t *testing.T, newDec func(OTLPConfig) NewDecoder, cfg OTLPConfig, base string) []ev {
	t.Helper()
	js, err := decode(newDec(jsonCfg(cfg))(), readFixture(t, base+".json"))
	if err != nil {
		t.Fatalf("%s.json: %v", base, err)
	}
	cfg.Encoding = EncodingOTLPProto
	pb, err := decode(newDec(cfg)(), readFixture(t, base+".pb"))
	if err != nil {
		t.Fatalf("%s.pb: %v", base, err)
	}
	if !reflect.DeepEqual(js, pb) {
		t.Fatalf("%s: protobuf events differ from JSON ones:\njson  %+v\nproto %+v", base, js, pb)
	}
	return js
}

func checkEvents(t *testing.T, got, want []ev) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events; want %d:\n%+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d:\ngot  %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestOTLPFixtures(t *testing.T) {
	for _, tc := range []struct {
		base string
		want []ev
	}{{
		// GenAI chat client span: kind from gen_ai.operation.name, name from
		// gen_ai.request.model (not the dated response model), rollout from
		// service.name (no gen_ai.agent.name), version from service.version.
		base: "genai-chat-span.otlp",
		want: []ev{{
			Rollout: "weather-agent", Version: "1.4.0", Kind: "llm", Name: "gpt-4",
			TS: 1723000001234000000, DurationMS: 1234, HasDuration: true,
			In: 52, Out: 47,
			Trace: "4bf92f3577b34da6a3ce929d0e0e4736", Span: "00f067aa0ba902b7",
		}},
	}, {
		// Two tool spans; the resource's service.name wins the rollout over
		// gen_ai.agent.name on the span. The second failed: status ERROR,
		// error.type before exception.type.
		base: "genai-execute-tool-span.otlp",
		want: []ev{{
			Rollout: "weather-agent", Version: "1.5.0-rc.1", Kind: "tool", Name: "get_weather",
			TS: 1723000002180000000, DurationMS: 180, HasDuration: true,
			Trace: "5b8efff798038103d269b633813fc60c", Span: "a1b2c3d4e5f60718", Parent: "0102030405060708",
			Session: "conv_5j66UpCpwteGg4YSxUnt7lPY",
		}, {
			Rollout: "weather-agent", Version: "1.5.0-rc.1", Kind: "tool", Name: "get_weather",
			TS: 1723000008000000000, DurationMS: 5000, HasDuration: true,
			Error: true, ErrorType: "timeout",
			Trace: "5b8efff798038103d269b633813fc60c", Span: "a1b2c3d4e5f60719", Parent: "0102030405060708",
			Session: "conv_5j66UpCpwteGg4YSxUnt7lPY",
		}},
	}, {
		// OpenInference LLM span: llm.model_name, llm.token_count.*; no
		// version anywhere, so "unknown".
		base: "openinference-llm-span.otlp",
		want: []ev{{
			Rollout: "llama-index-app", Version: "unknown", Kind: "llm", Name: "gpt-3.5-turbo-0613",
			TS: 1705016718517638912, DurationMS: 534.780928, HasDuration: true,
			In: 229, Out: 21,
			Trace: "409df945e0584829b240cfbdd2ff4488", Span: "01fa961201b84358", Parent: "2fe8a7932cf142d7",
		}},
	}, {
		// OpenLLMetry with legacy names: llm.request.type, gen_ai.system,
		// gen_ai.usage.prompt_tokens / completion_tokens.
		base: "openllmetry-openai-chat.otlp",
		want: []ev{{
			Rollout: "/usr/local/lib/python3.11/dist-packages/colab_kernel_launcher.py", Version: "unknown",
			Kind: "llm", Name: "gpt-3.5-turbo",
			TS: 1738144121353287966, DurationMS: 1444.194058, HasDuration: true,
			In: 14, Out: 173,
			Trace: "e4ef45025c9b40924bff175e2b125b5b", Span: "aabf16e416ae4952",
		}},
	}, {
		// A generic server span: kind other, its name, duration and status;
		// upper-case hex ids come out in lower case.
		base: "otlp-proto-examples-trace",
		want: []ev{{
			Rollout: "my.service", Version: "unknown", Kind: "other", Name: "I'm a server span",
			TS: 1544712661000000000, DurationMS: 1000, HasDuration: true,
			Trace: "5b8efff798038103d269b633813fc60c", Span: "eee19b7ec3c1b174", Parent: "eee19b7ec3c1b173",
		}},
	}, {
		// Evaluation results as span events: one eval event each, at the
		// event's time (else the span's end), with the span's ids.
		base: "eval-span-event.otlp",
		want: []ev{{
			Rollout: "weather-agent", Version: "1.5.0-rc.1", Kind: "llm", Name: "gpt-4",
			TS: 1764095653234000000, DurationMS: 1234, HasDuration: true,
			Trace: "4bf92f3577b34da6a3ce929d0e0e4736", Span: "00f067aa0ba902b7",
		}, {
			Rollout: "weather-agent", Version: "1.5.0-rc.1", Kind: "eval", Name: "relevance",
			TS:    1764095654000000000,
			Trace: "4bf92f3577b34da6a3ce929d0e0e4736", Span: "00f067aa0ba902b7",
			HasOutcome: true, Score: 0.75, HasScore: true, Success: true, HasSuccess: true,
		}, {
			Rollout: "weather-agent", Version: "1.5.0-rc.1", Kind: "eval", Name: "hallucination",
			TS:    1764095653234000000,
			Trace: "4bf92f3577b34da6a3ce929d0e0e4736", Span: "00f067aa0ba902b7",
			HasOutcome: true, Halluc: true, HasHalluc: true,
		}},
	}} {
		t.Run(tc.base, func(t *testing.T) {
			checkEvents(t, decodeBoth(t, OTLPTraces, OTLPConfig{}, tc.base), tc.want)
		})
	}
}

// The shared fixtures as written (indented, as in ../shared) and
// re-marshalled by pdata decode alike; the copies here are the originals.
func TestOTLPFixturesMatchShared(t *testing.T) {
	// The shared fixtures sit beside the clone (../shared, as in CI); a
	// missing folder fails rather than passing with nothing compared.
	shared := globFixtures(t, "../../shared/testdata/otlp/*.json")
	for _, f := range shared {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := readFixture(t, filepath.Base(f)); !bytes.Equal(got, want) {
			t.Errorf("testdata/otlp/%s differs from %s", filepath.Base(f), f)
		}
	}
}

func TestOTLPLogs(t *testing.T) {
	set := metrics.NewSet()
	got := decodeBoth(t, OTLPLogs, OTLPConfig{Metrics: set}, "eval-logs.otlp")
	checkEvents(t, got, []ev{{
		// event_name form; the label "relevant" is not a pass/fail word.
		Rollout: "weather-agent", Version: "1.5.0-rc.1", Kind: "eval", Name: "relevance",
		TS:    1764095652000000000,
		Trace: "4bf92f3577b34da6a3ce929d0e0e4736", Span: "00f067aa0ba902b7",
		HasOutcome: true, Score: 0.83, HasScore: true,
	}, {
		// event.name attribute form; the resource's service.name wins the
		// rollout over gen_ai.agent.name on the record; an int score;
		// "factual" is not hallucinated.
		Rollout: "weather-agent", Version: "1.5.0-rc.1", Kind: "eval", Name: "hallucination",
		TS:    1764095653000000000,
		Trace: "5b8efff798038103d269b633813fc60c", Span: "a1b2c3d4e5f60718",
		HasOutcome: true, Score: 0, HasScore: true, HasHalluc: true,
	}, {
		// The evaluation failed to run: error, no outcome, observed time.
		Rollout: "weather-agent", Version: "1.5.0-rc.1", Kind: "eval", Name: "relevance",
		TS: 1764095656000000000, Error: true, ErrorType: "timeout",
	}})
	// Both decodes counted: the plain log line is ignored, the score of 4
	// skipped.
	if n := set.GetOrCreateCounter(`canaryd_otlp_ignored_total{signal="logs"}`).Get(); n != 2 {
		t.Errorf("ignored = %d; want 2", n)
	}
	if n := set.GetOrCreateCounter(`canaryd_otlp_skipped_total{signal="logs",reason="invalid_score"}`).Get(); n != 2 {
		t.Errorf("skipped invalid_score = %d; want 2", n)
	}
	// A traces record is not a logs record.
	if _, err := decode(OTLPLogs(OTLPConfig{})(), readFixture(t, "genai-chat-span.otlp.pb")); err == nil {
		t.Errorf("traces record decoded as logs: no error")
	}
	if _, err := decode(OTLPLogs(jsonCfg(OTLPConfig{}))(), readFixture(t, "genai-chat-span.otlp.json")); err == nil {
		t.Errorf("traces JSON decoded as logs: no error")
	}
}

func TestOTLPManyResources(t *testing.T) {
	// 3 resources × 2 scopes × (chat, tool, HTTP server); in the JSON the
	// second resource's scopes stand before its resource.
	got := decodeBoth(t, OTLPTraces, OTLPConfig{}, "multi-resource.otlp")
	if len(got) != 18 {
		t.Fatalf("got %d events; want 18", len(got))
	}
	count := map[string]int{}
	for _, e := range got {
		count[e.Version+" "+e.Kind]++
		if e.Rollout != "weather-agent" {
			t.Errorf("rollout %q; want weather-agent", e.Rollout)
		}
	}
	// The third resource has no service.version: the pod template hash
	// is the next rule.
	want := map[string]int{}
	for _, v := range []string{"1.4.0", "1.5.0", "7c9d5b7f6d"} {
		for _, k := range []string{"llm", "tool", "other"} {
			want[v+" "+k] = 2
		}
	}
	if !reflect.DeepEqual(count, want) {
		t.Errorf("events by version and kind: got %v; want %v", count, want)
	}
	// The bench record: 50 spans, all emitted; turn 7's failing tool call.
	// The invoke_agent spans name the agent support_assistant, the resource
	// the service support-agent: every span goes to the service's rollout.
	got = decodeBoth(t, OTLPTraces, OTLPConfig{}, "bench-genai-50.otlp")
	if len(got) != 50 {
		t.Fatalf("bench: got %d events; want 50", len(got))
	}
	kinds := map[string]int{}
	for _, e := range got {
		kinds[e.Rollout+" "+e.Kind]++
		if e.Error && (e.ErrorType != "timeout" || e.Span != "b7ad6b7169203373") {
			t.Errorf("bench: unexpected error event %+v", e)
		}
	}
	if want := map[string]int{"support-agent agent": 10, "support-agent llm": 20, "support-agent tool": 20}; !reflect.DeepEqual(kinds, want) {
		t.Errorf("bench kinds: got %v; want %v", kinds, want)
	}
}

func TestOTLPRules(t *testing.T) {
	// Custom rules: version from a pod label, rollout from the deployment.
	cfg := OTLPConfig{Rollout: []string{"k8s.deployment.name"}, Version: []string{"k8s.pod.label.role"}}
	for base, want := range map[string]string{"genai-chat-span.otlp": "stable", "genai-execute-tool-span.otlp": "canary"} {
		for _, e := range decodeBoth(t, OTLPTraces, cfg, base) {
			if e.Version != want || e.Rollout != "weather-agent" {
				t.Errorf("%s: rollout/version %s/%s; want weather-agent/%s", base, e.Rollout, e.Version, want)
			}
		}
	}
	// Unresolvable: the configured Unknown, counted.
	set := metrics.NewSet()
	cfg = OTLPConfig{Version: []string{"k8s.pod.label.role"}, Rollout: []string{"nope"}, Unknown: "n/a", Metrics: set}
	for _, e := range decodeBoth(t, OTLPTraces, cfg, "openllmetry-openai-chat.otlp") {
		if e.Version != "n/a" || e.Rollout != "n/a" {
			t.Errorf("rollout/version %s/%s; want n/a/n/a", e.Rollout, e.Version)
		}
	}
	for _, f := range []string{"rollout", "version"} {
		if n := set.GetOrCreateCounter(`canaryd_otlp_unattributed_total{signal="spans",field="` + f + `"}`).Get(); n != 2 {
			t.Errorf("unattributed %s = %d; want 2", f, n)
		}
	}
}

// span builds an OTLP/JSON traces record of one resource with the given
// resource attributes and spans (JSON objects).
func spansJSON(resAttrs string, spans ...string) []byte {
	return []byte(`{"resourceSpans":[{"resource":{"attributes":[` + resAttrs + `]},"scopeSpans":[{"spans":[` +
		strings.Join(spans, ",") + `]}]}]}`)
}

func strAttr(k, v string) string {
	b, _ := json.Marshal(v)
	return `{"key":"` + k + `","value":{"stringValue":` + string(b) + `}}`
}

func intAttr(k string, v int64) string {
	return fmt.Sprintf(`{"key":%q,"value":{"intValue":"%d"}}`, k, v)
}

func jspan(name string, start, end int64, attrs ...string) string {
	return fmt.Sprintf(`{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","name":%q,`+
		`"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":[%s]}`, name, start, end, strings.Join(attrs, ","))
}

func TestOTLPValues(t *testing.T) {
	res := strAttr("service.name", "svc") + "," + strAttr("service.version", "v1")
	long := strings.Repeat("é", 400) // 800 bytes
	set := metrics.NewSet()
	d := OTLPTraces(OTLPConfig{Encoding: EncodingOTLPJSON, Metrics: set})()
	rec := spansJSON(res,
		jspan("ok", 1e18, 1e18+2e6, strAttr("gen_ai.operation.name", "chat"), strAttr("gen_ai.request.model", "m"), intAttr("gen_ai.usage.input_tokens", 5)),
		jspan("negative tokens", 1e18, 1e18+2e6, strAttr("gen_ai.operation.name", "chat"), intAttr("gen_ai.usage.input_tokens", -5)),
		jspan("absurd tokens", 1e18, 1e18+2e6, intAttr("llm.token_count.prompt", schemas.MaxTokens+1)),
		jspan("end before start", 1e18, 1e18-1),
		jspan("no end", 1e18, 0),
		jspan("too long", 1e18, 1e18+2*86_400e9),
		jspan("cost", 1e18, 1e18+1, `{"key":"llm.cost.total","value":{"doubleValue":-1}}`),
		jspan(long, 0, 1e18, strAttr("error.type", long), strAttr("session.id", "s\u00e9\"q")),
	)
	got, err := decode(d, rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d events; want 2: %+v", len(got), got)
	}
	if got[0].Name != "m" || got[0].In != 5 || got[0].DurationMS != 2 {
		t.Errorf("event 0: %+v", got[0])
	}
	// Strings are cut to MaxStringBytes on a rune boundary; no start time
	// means no duration; escapes are decoded.
	if e := got[1]; len(e.Name) != 512 || !utf8.ValidString(e.Name) || e.HasDuration || e.Session != "sé\"q" || e.Error {
		t.Errorf("event 1: name %d bytes, %+v", len(e.Name), e)
	}
	for reason, want := range map[string]uint64{"invalid_tokens": 2, "end_before_start": 1, "no_time": 1, "duration_too_long": 1, "invalid_cost": 1} {
		if n := set.GetOrCreateCounter(`canaryd_otlp_skipped_total{signal="spans",reason="` + reason + `"}`).Get(); n != want {
			t.Errorf("skipped %s = %d; want %d", reason, n, want)
		}
	}

	// A rollout value longer than MaxStringBytes is unknown, not cut (and
	// not passed over for a later rule).
	got, err = decode(d, spansJSON(strAttr("service.name", strings.Repeat("x", 600)), jspan("s", 1, 2, strAttr("gen_ai.agent.name", ""))))
	if err != nil || len(got) != 1 || got[0].Rollout != "unknown" {
		t.Errorf("long rollout: %+v, %v", got, err)
	}
	// Non-string rule values are formatted; the first of duplicate keys
	// wins; for a key from any scope, span attributes before resource
	// attributes; a key from the resource is not read on the span.
	got, err = decode(d, spansJSON(strAttr("service.name", "svc")+","+intAttr("gen_ai.agent.version", 7),
		jspan("s", 1, 2, intAttr("service.version", 3), `{"key":"gen_ai.agent.version","value":{"doubleValue":2.5}}`, intAttr("gen_ai.agent.version", 9))))
	if err != nil || len(got) != 1 || got[0].Version != "2.5" {
		t.Errorf("formatted version: %+v, %v", got, err)
	}
	// The resource's service.version wins over gen_ai.agent.version.
	got, err = decode(d, spansJSON(res+","+intAttr("gen_ai.agent.version", 7),
		jspan("s", 1, 2, intAttr("service.version", 3), intAttr("gen_ai.agent.version", 9))))
	if err != nil || len(got) != 1 || got[0].Version != "v1" {
		t.Errorf("resource version: %+v, %v", got, err)
	}
	// Status ERROR without error.type: the exception event's type, else "error".
	got, err = decode(d, spansJSON(res,
		strings.TrimSuffix(jspan("a", 1, 2), "}")+`,"status":{"code":"STATUS_CODE_ERROR"},"events":[{"name":"exception","attributes":[`+strAttr("exception.type", "ValueError")+`]}]}`,
		strings.TrimSuffix(jspan("b", 1, 2), "}")+`,"status":{"code":2,"message":"x"}}`,
		strings.TrimSuffix(jspan("c", 1, 2), "}")+`,"status":{"code":1}}`,
	))
	if err != nil || len(got) != 3 || got[0].ErrorType != "ValueError" || got[1].ErrorType != "error" || !got[1].Error || got[2].Error {
		t.Errorf("status: %+v, %v", got, err)
	}
	// snake_case field names, as pdata also accepts; key after value.
	got, err = decode(d, []byte(`{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"4BF92F3577B34DA6A3CE929D0E0E4736",`+
		`"end_time_unix_nano":5,"attributes":[{"value":{"string_value":"execute_tool"},"key":"gen_ai.operation.name"}]}]}],`+
		`"resource":{"attributes":[{"key":"service.name","value":{"string_value":"svc"}}]}}]}`))
	if err != nil || len(got) != 1 || got[0].Kind != "tool" || got[0].Rollout != "svc" || got[0].TS != 5 || got[0].Trace != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("snake_case: %+v, %v", got, err)
	}
	// GenAIOnly drops spans without GenAI attributes.
	set = metrics.NewSet()
	got, err = decode(OTLPTraces(OTLPConfig{Encoding: EncodingOTLPJSON, GenAIOnly: true, Metrics: set})(), readFixture(t, "multi-resource.otlp.json"))
	if err != nil || len(got) != 12 || set.GetOrCreateCounter(`canaryd_otlp_ignored_total{signal="spans"}`).Get() != 6 {
		t.Errorf("GenAIOnly: %d events, %v", len(got), err)
	}
	// An empty request is valid and empty.
	for _, c := range []struct {
		enc string
		rec string
	}{{EncodingOTLPJSON, `{}`}, {EncodingOTLPJSON, ` {"resourceSpans":[]} `}, {EncodingOTLPProto, ``}} {
		if got, err := decode(OTLPTraces(OTLPConfig{Encoding: c.enc})(), []byte(c.rec)); err != nil || len(got) != 0 {
			t.Errorf("%s %q: %v, %v", c.enc, c.rec, got, err)
		}
	}
}

// Protobuf building blocks for hand-made records.
func pbTag(b []byte, num, wt int) []byte { return binary.AppendUvarint(b, uint64(num<<3|wt)) }
func pbBytes(b []byte, num int, v []byte) []byte {
	return append(binary.AppendUvarint(pbTag(b, num, wtLen), uint64(len(v))), v...)
}
func pbFixed64(b []byte, num int, v uint64) []byte {
	return binary.LittleEndian.AppendUint64(pbTag(b, num, wtI64), v)
}

// pbTraces wraps span bytes into a traces record of one resource and scope.
func pbTraces(span []byte) []byte {
	return pbBytes(nil, 1, pbBytes(nil, 2, pbBytes(nil, 2, span)))
}

func TestOTLPErrors(t *testing.T) {
	proto := OTLPTraces(OTLPConfig{})()
	js := OTLPTraces(OTLPConfig{Encoding: EncodingOTLPJSON})()
	tool := readFixture(t, "genai-execute-tool-span.otlp.pb")
	goodSpan := pbFixed64(pbBytes(nil, 1, bytes.Repeat([]byte{1}, 16)), 8, 5)
	for _, c := range []struct {
		name string
		d    Decoder
		rec  []byte
		want string // in the error
	}{
		{"garbage", proto, []byte{0xff, 0xff, 0xff, 0xff}, "truncated"},
		{"text", proto, []byte("hello, world"), "otlp_proto"},
		{"varint overflow", proto, bytes.Repeat([]byte{0x80}, 11), "varint"},
		{"field 0", proto, []byte{0x02, 0x00}, "field number 0"},
		{"JSON given to proto", proto, readFixture(t, "genai-chat-span.otlp.json"), "otlp_proto"},
		{"agent event given to proto", proto, []byte(`{"rollout":"a","version":"1","ts":1}`), "otlp_proto"},
		{"wrong wire type", proto, pbTraces(pbFixed64(nil, 1, 7)), "span.trace_id: wrong wire type"},
		{"trace id length", proto, pbTraces(pbBytes(nil, 1, make([]byte, 15))), "span.trace_id: length not 16 bytes"},
		{"span id length", proto, pbTraces(pbBytes(goodSpan, 2, make([]byte, 16))), "span.span_id: length not 8 bytes"},
		{"end group", proto, pbTraces(pbTag(goodSpan, 99, wtEndGroup)), "end of group"},
		{"logs given to traces", proto, readFixture(t, "eval-logs.otlp.pb"), "wrong wire type"},
		{"too large", proto, make([]byte, MaxOTLPRecordBytes+1), "larger than"},

		{"not JSON", js, []byte("\x0a\x0b"), "invalid JSON"},
		{"proto given to JSON", js, tool, "otlp_json"},
		{"array", js, []byte(`[]`), "not an object"},
		{"string", js, []byte(`"x"`), "not an object"},
		{"agent event", js, []byte(`{"rollout":"a","version":"1","ts":1}`), "no resourceSpans"},
		{"logs given to traces", js, readFixture(t, "eval-logs.otlp.json"), "no resourceSpans"},
		{"resourceSpans object", js, []byte(`{"resourceSpans":{}}`), "resource_spans: not an array"},
		{"span not object", js, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[1]}]}]}`), "span: not an object"},
		{"trace id number", js, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":12}]}]}]}`), "span.trace_id: not a string"},
		{"trace id hex", js, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}`), "span.trace_id: wrong length"},
		{"trace id not hex", js, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"00f067aa0ba902bz"}]}]}]}`), "span.span_id: not hex"},
		{"time", js, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"endTimeUnixNano":"-1"}]}]}]}`), "not an integer"},
		{"time float", js, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"endTimeUnixNano":1.5}]}]}]}`), "not an integer"},
		{"status enum", js, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"status":{"code":"BROKEN"}}]}]}]}`), "unknown enum"},
		{"attr value type", js, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"gen_ai.usage.input_tokens","value":{"intValue":true}}]}]}]}]}`), "not a number"},
		{"truncated", js, readFixture(t, "genai-chat-span.otlp.json")[:500], "unexpected end"},
		{"trailing", js, []byte(`{"resourceSpans":[]} x`), "data after"},
		{"trailing comma", js, []byte(`{"resourceSpans":[],}`), "invalid JSON"},
		{"bad escape", js, spansJSON(strAttr("service.name", "a")[:len(strAttr("service.name", "a"))-4] + `\x"}}`), "invalid string"},
		{"raw control", js, spansJSON(`{"key":"service.name","value":{"stringValue":"a` + "\x01" + `"}}`), "invalid string"},
		{"deep", js, []byte(`{"x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`), "nested too deep"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := 0
			err := c.d.Decode(c.rec, func(*schemas.Event) { n++ })
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v; want one containing %q", err, c.want)
			}
			var oe *OTLPError
			if !errors.As(err, &oe) {
				t.Errorf("err is %T; want *OTLPError", err)
			}
			if n != 0 {
				t.Errorf("emitted %d events with an error", n)
			}
		})
	}
	// Every strict prefix of a protobuf record is truncated: its one
	// top-level field is cut.
	for n := 1; n < len(tool); n++ {
		if _, err := decode(proto, tool[:n]); err == nil {
			t.Fatalf("prefix of %d/%d bytes: no error", n, len(tool))
		}
	}
	// The decoder is still good after errors.
	if got, err := decode(proto, tool); err != nil || len(got) != 2 {
		t.Fatalf("after errors: %d events, %v", len(got), err)
	}
}

func TestOTLPConfigValidate(t *testing.T) {
	if err := (OTLPConfig{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	if err := DefaultOTLPConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	for _, c := range []OTLPConfig{
		{Encoding: "json"},
		{Version: []string{""}},
		{Rollout: []string{strings.Repeat("k", 256)}},
		{Version: make([]string, 65)},
		{Unknown: strings.Repeat("u", schemas.MaxStringBytes+1)},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	defer func() {
		if recover() == nil {
			t.Errorf("OTLPTraces with a bad config did not panic")
		}
	}()
	OTLPTraces(OTLPConfig{Encoding: "xml"})
}

// Events point into the record and the decoder's buffers: decoding another
// record must not disturb what a third decode returns, and a warm decoder
// allocates nothing.
func TestOTLPReuseAndAllocs(t *testing.T) {
	for _, enc := range []string{EncodingOTLPProto, EncodingOTLPJSON} {
		ext := ".pb"
		if enc == EncodingOTLPJSON {
			ext = ".json"
		}
		d := OTLPTraces(OTLPConfig{Encoding: enc})()
		a := readFixture(t, "genai-execute-tool-span.otlp"+ext)
		b := readFixture(t, "bench-genai-50.otlp"+ext)
		first, _ := decode(d, a)
		if _, err := decode(d, b); err != nil {
			t.Fatal(err)
		}
		again, _ := decode(d, a)
		if !reflect.DeepEqual(first, again) {
			t.Errorf("%s: events changed after reuse", enc)
		}
		emit := func(*schemas.Event) {}
		if n := testing.AllocsPerRun(100, func() {
			if err := d.Decode(b, emit); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: %.1f allocations per record; want 0", enc, n)
		}
	}
}

// checkEvent checks the invariants every emitted event keeps.
func checkEvent(t *testing.T, e *schemas.Event) {
	for _, s := range [][]byte{e.Rollout, e.Version, e.Name, e.ErrorType, e.SessionID} {
		if len(s) > schemas.MaxStringBytes || !utf8.Valid(s) {
			t.Fatalf("string %q: too long or not UTF-8", s)
		}
	}
	if len(e.Rollout) == 0 || len(e.Version) == 0 || e.TS <= 0 {
		t.Fatalf("event without rollout, version or time: %+v", e)
	}
	if e.InputTokens < 0 || e.InputTokens > schemas.MaxTokens || e.OutputTokens < 0 || e.OutputTokens > schemas.MaxTokens ||
		e.HasDuration && !(e.DurationMS >= 0 && e.DurationMS <= schemas.MaxDurationMS) ||
		e.HasCost && !(e.CostUSD >= 0 && e.CostUSD <= schemas.MaxCostUSD) ||
		e.HasOutcomeScore && !(e.OutcomeScore >= 0 && e.OutcomeScore <= 1) {
		t.Fatalf("value out of range: %+v", e)
	}
	for _, id := range [][]byte{e.TraceID, e.SpanID, e.ParentSpanID} {
		for _, c := range id {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				t.Fatalf("id %q not lower-case hex", id)
			}
		}
	}
}

// globFixtures returns the files matching pattern, failing t on a bad
// pattern or when nothing matches: a test over zero fixtures checks nothing.
func globFixtures(t testing.TB, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatalf("glob %s: %v", pattern, err)
	}
	if len(files) == 0 {
		abs, _ := filepath.Abs(pattern)
		t.Fatalf("no fixtures match %s (%s); got 0 files; want at least 1", pattern, abs)
	}
	return files
}

func fuzzOTLP(f *testing.F, cfg OTLPConfig, ext string) {
	files := globFixtures(f, filepath.Join("testdata", "otlp", "*"+ext))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	traces, logs := OTLPTraces(cfg)(), OTLPLogs(cfg)()
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, d := range []Decoder{traces, logs} {
			n := 0
			err := d.Decode(b, func(e *schemas.Event) { n++; checkEvent(t, e) })
			if err != nil && n > 0 {
				t.Fatalf("emitted %d events and returned %v", n, err)
			}
		}
	})
}

func FuzzOTLPProto(f *testing.F) { fuzzOTLP(f, OTLPConfig{}, ".pb") }
func FuzzOTLPJSON(f *testing.F)  { fuzzOTLP(f, OTLPConfig{Encoding: EncodingOTLPJSON}, ".json") }
