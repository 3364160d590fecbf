package sink_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.yaml.in/yaml/v3"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
	"github.com/inferensys/canaryd/window"
)

const openAPIFile = "../api/openapi.yaml"

func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", openAPIFile, err)
	}
	return doc
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// operation returns the document's operation of method and path, or nil.
func operation(doc map[string]any, method, path string) map[string]any {
	paths, _ := doc["paths"].(map[string]any)
	item, _ := paths[path].(map[string]any)
	op, _ := item[strings.ToLower(method)].(map[string]any)
	return op
}

// TestOpenAPIRoutes: api/openapi.yaml documents exactly the routes the
// server registers (sink.Routes, the list the mux is built from), with the
// security their access needs, and the actions the server accepts.
func TestOpenAPIRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	var documented []string
	for path, item := range doc["paths"].(map[string]any) {
		for m := range item.(map[string]any) {
			if slices.Contains(httpMethods, m) {
				documented = append(documented, strings.ToUpper(m)+" "+path)
			}
		}
	}
	var served []string
	for _, rt := range sink.Routes() {
		served = append(served, rt.Method+" "+rt.Path)
	}
	sort.Strings(documented)
	sort.Strings(served)
	if !slices.Equal(documented, served) {
		t.Errorf("documented routes %q; want the served routes %q", documented, served)
	}

	// Every route is registered: a request to it reaches a handler, not
	// the mux's own 404 or 405.
	h := sink.Handler(statuses{{Rollout: "a"}}, metrics.NewSet(), nil)
	for _, rt := range sink.Routes() {
		path := strings.NewReplacer("{id}", "a", "{action}", "pause", "{file}", "app.js").Replace(rt.Path)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(rt.Method, path, nil))
		if rec.Code == http.StatusMethodNotAllowed || strings.HasPrefix(rec.Body.String(), "404 page not found") {
			t.Errorf("%s %s: %d %q: not registered", rt.Method, path, rec.Code, rec.Body.String())
		}
	}

	// Security by access: probes open, reads open or bearer, writes bearer.
	want := map[sink.Access]string{sink.Probe: "[]", sink.Read: "[{} {bearer:[]}]", sink.Write: "[{bearer:[]}]"}
	for _, rt := range sink.Routes() {
		op := operation(doc, rt.Method, rt.Path)
		sec, ok := op["security"]
		if !ok {
			t.Errorf("%s %s: no security; want %s", rt.Method, rt.Path, want[rt.Access])
			continue
		}
		if got := secString(sec); got != want[rt.Access] {
			t.Errorf("%s %s (%v): security %v; want %s", rt.Method, rt.Path, rt.Access, sec, want[rt.Access])
		}
	}

	// The action enum is sink.Actions.
	op := operation(doc, "POST", "/v1/rollouts/{id}/{action}")
	var enum []string
	for _, p := range op["parameters"].([]any) {
		if p := p.(map[string]any); p["name"] == "action" {
			for _, v := range p["schema"].(map[string]any)["enum"].([]any) {
				enum = append(enum, v.(string))
			}
		}
	}
	if !slices.Equal(enum, sink.Actions) {
		t.Errorf("documented actions %q; want sink.Actions %q", enum, sink.Actions)
	}
}

// TestOpenAPIResponses: real responses of the server — a judged rollout's
// status, the list, an action's reply and each kind of refusal — have a
// documented status code, and their JSON bodies match the documented
// schema: required properties present, types and enums right, and no
// property the document does not name.
func TestOpenAPIResponses(t *testing.T) {
	doc := loadOpenAPI(t)
	judged := judgedStatus(t)
	freshSpec := judged.spec
	freshSpec.Rollout = "fresh-agent"
	fresh := detector.NewJudge(freshSpec).Status() // no data yet: null totals, empty verdict
	if len(judged.st.Verdict.Tests) == 0 || len(judged.st.Totals) == 0 || judged.st.Final == "" {
		t.Fatalf("judged status has no tests, totals or final verdict: %+v", judged.st)
	}
	src := &actSource{statuses: statuses{judged.st, fresh}}
	file := writeFile(t, filepath.Join(t.TempDir(), "token"), tokenA)
	h, err := sink.NewHandler(src, metrics.NewSet(), nil, sink.TokenFile(file))
	if err != nil {
		t.Fatal(err)
	}
	off := sink.Handler(src, metrics.NewSet(), nil)
	protected, err := sink.NewHandler(src, metrics.NewSet(), nil, sink.TokenFile(file), sink.ProtectReads(true))
	if err != nil {
		t.Fatal(err)
	}
	hist := sink.Handler(historySource{statuses{judged.st}, historyOf(judged.st)}, metrics.NewSet(), nil)
	for _, tc := range []struct {
		h            http.Handler
		route, path  string
		token, body  string
		code         int
		wantProperty string // a property the body must have (it proves the case reached what it tests)
	}{
		{h, "GET /v1/rollouts/{id}", "/v1/rollouts/" + judged.st.Rollout, "", "", 200, "final"},
		{h, "GET /v1/rollouts/{id}", "/v1/rollouts/" + fresh.Rollout, "", "", 200, "verdict"},
		{h, "GET /v1/rollouts/{id}", "/v1/rollouts/nope", "", "", 404, "error"},
		{h, "GET /v1/rollouts", "/v1/rollouts", "", "", 200, "rollouts"},
		{sink.Handler(statuses{}, nil, nil), "GET /v1/rollouts", "/v1/rollouts", "", "", 200, "rollouts"},
		{protected, "GET /v1/rollouts/{id}", "/v1/rollouts/" + judged.st.Rollout, "", "", 401, "error"},
		{protected, "GET /v1/rollouts/{id}/windows", "/v1/rollouts/x/windows", tokenA, "", 404, "error"},
		{h, "POST /v1/rollouts/{id}/{action}", "/v1/rollouts/" + judged.st.Rollout + "/abort", tokenA, `{"reason":"r","by":"ci","canary":"v2"}`, 200, "status"},
		{h, "POST /v1/rollouts/{id}/{action}", "/v1/rollouts/a/frobnicate", tokenA, "", 400, "error"},
		{h, "POST /v1/rollouts/{id}/{action}", "/v1/rollouts/a/pause", "", "", 401, "error"},
		{off, "POST /v1/rollouts/{id}/{action}", "/v1/rollouts/a/pause", tokenA, "", 403, "error"},
		{sink.Handler(statuses{}, nil, nil), "POST /v1/rollouts/{id}/{action}", "/v1/rollouts/a/pause", "", "", 403, "error"},
		{h, "GET /v1/rollouts/{id}/judge", "/v1/rollouts/" + judged.st.Rollout + "/judge", "", "", 200, "e_values"},
		{h, "GET /v1/rollouts/{id}/judge", "/v1/rollouts/" + fresh.Rollout + "/judge?controller=argo", "", "", 200, "verdict"},
		{h, "GET /v1/rollouts/{id}/judge", "/v1/rollouts/a/judge?weight=120", "", "", 400, "error"},
		{h, "GET /v1/rollouts/{id}/judge", "/v1/rollouts/nope/judge", "", "", 404, "error"},
		{h, "GET /v1/rollouts/{id}/judge", "/v1/rollouts/" + fresh.Rollout + "/judge?weight=20", "", "", 409, "error"},
		{h, "POST /v1/rollouts/{id}/judge", "/v1/rollouts/" + judged.st.Rollout + "/judge", "", `{"controller":"argo"}`, 200, "final"},
		{h, "POST /v1/rollouts/{id}/judge", "/v1/rollouts/a/judge", "", `{"weight":"x"}`, 400, "error"},
		{h, "POST /v1/flagger/{hook}", "/v1/flagger/frobnicate", "", `{"name":"a","namespace":"n"}`, 400, "error"},
		{h, "GET /v1/rollouts/{id}/history", "/v1/rollouts/" + judged.st.Rollout + "/history", "", "", 404, "error"}, // no HistorySource
		{hist, "GET /v1/rollouts/{id}/history", "/v1/rollouts/" + judged.st.Rollout + "/history", "", "", 200, "points"},
		{hist, "GET /v1/rollouts/{id}/history", "/v1/rollouts/nope/history", "", "", 404, "error"},
		{h, "GET /ui/{file}", "/ui/nope.js", "", "", 404, "error"},
	} {
		name := tc.route + " " + tc.path
		code, body := call(t, tc.h, strings.Fields(tc.route)[0], tc.path, tc.token, tc.body)
		if code != tc.code {
			t.Errorf("%s: %d; want %d", name, code, tc.code)
			continue
		}
		method, path, _ := strings.Cut(tc.route, " ")
		op := operation(doc, method, path)
		resp, ok := op["responses"].(map[string]any)[fmt.Sprint(code)].(map[string]any)
		if !ok {
			t.Errorf("%s: status %d is not documented", name, code)
			continue
		}
		resp = resolve(t, doc, resp)
		schema, _ := resp["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any)
		if schema == nil {
			t.Errorf("%s: %d has no documented application/json schema", name, code)
			continue
		}
		if _, ok := body[tc.wantProperty]; !ok {
			t.Errorf("%s: body %v has no %q", name, body, tc.wantProperty)
		}
		for _, err := range checkSchema(t, doc, schema, any(body), "$") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestOpenAPISchemaCheckFails: the schema check finds what it should, so
// TestOpenAPIResponses can fail.
func TestOpenAPISchemaCheckFails(t *testing.T) {
	doc := loadOpenAPI(t)
	status := map[string]any{"$ref": "#/components/schemas/Status"}
	var st map[string]any
	b, _ := json.Marshal(judgedStatus(t).st)
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if errs := checkSchema(t, doc, status, st, "$"); len(errs) != 0 {
		t.Fatalf("a real status fails: %v", errs)
	}
	for _, tc := range []struct {
		name   string
		change func(m map[string]any)
		want   string
	}{
		{"missing required", func(m map[string]any) { delete(m, "watermark") }, "$: no required property watermark"},
		{"nested missing", func(m map[string]any) { delete(m["verdict"].(map[string]any), "reason") }, "$.verdict: no required property reason"},
		{"undocumented", func(m map[string]any) { m["phase"] = "paused" }, "$: property phase is not documented"},
		{"wrong type", func(m map[string]any) { m["step"] = "2" }, "$.step: got string; want integer"},
		{"bad enum", func(m map[string]any) { m["final"] = "superseded" }, `$.final: "superseded" is not one of`},
		{"null not nullable", func(m map[string]any) { m["canary"] = nil }, "$.canary: null; want string"},
		{"in array", func(m map[string]any) { m["totals"].([]any)[0].(map[string]any)["requests"] = 1.5 }, "$.totals[0].requests: got number 1.5; want integer"},
	} {
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		tc.change(m)
		errs := checkSchema(t, doc, status, m, "$")
		if !slices.ContainsFunc(errs, func(e error) bool { return strings.Contains(e.Error(), tc.want) }) {
			t.Errorf("%s: errors %v; want one containing %q", tc.name, errs, tc.want)
		}
	}
}

// resolve follows a local $ref.
func resolve(t *testing.T, doc, node map[string]any) map[string]any {
	t.Helper()
	for {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		cur := any(doc)
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, _ := cur.(map[string]any)
			cur = m[part]
		}
		next, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("unresolved $ref %s", ref)
		}
		node = next
	}
}

// checkSchema checks v (decoded JSON) against an OpenAPI 3.0 schema: type,
// nullable, enum, format date-time, required, properties (undocumented
// ones are errors unless additionalProperties allows them), items,
// minimum/maximum.
func checkSchema(t *testing.T, doc, schema map[string]any, v any, at string) []error {
	schema = resolve(t, doc, schema)
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(at+": "+format, a...)) }
	if v == nil {
		if nullable, _ := schema["nullable"].(bool); !nullable {
			bad("null; want %v", schema["type"])
		}
		return errs
	}
	if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, v) {
		bad("%q is not one of %q", v, enum)
	}
	switch typ, _ := schema["type"].(string); typ {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("got %T; want object", v)
			return errs
		}
		for _, r := range asSlice(schema["required"]) {
			if _, ok := m[r.(string)]; !ok {
				bad("no required property %s", r)
			}
		}
		props, _ := schema["properties"].(map[string]any)
		for k, pv := range m {
			if ps, ok := props[k].(map[string]any); ok {
				errs = append(errs, checkSchema(t, doc, ps, pv, at+"."+k)...)
				continue
			}
			switch ap := schema["additionalProperties"].(type) {
			case map[string]any:
				errs = append(errs, checkSchema(t, doc, ap, pv, at+"."+k)...)
			case bool:
				if !ap {
					bad("property %s is not allowed", k)
				}
			default:
				bad("property %s is not documented", k)
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("got %T; want array", v)
			return errs
		}
		items, _ := schema["items"].(map[string]any)
		for i, e := range a {
			errs = append(errs, checkSchema(t, doc, items, e, fmt.Sprintf("%s[%d]", at, i))...)
		}
	case "string":
		s, ok := v.(string)
		if !ok {
			bad("got %T; want string", v)
		} else if schema["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				bad("%q is not a date-time", s)
			}
		}
	case "integer", "number":
		f, ok := v.(float64)
		if !ok {
			bad("got %s; want %s", jsonType(v), typ)
			return errs
		}
		if typ == "integer" && f != float64(int64(f)) {
			bad("got number %v; want integer", f)
		}
		if lo, ok := schema["minimum"].(int); ok && f < float64(lo) {
			bad("%v below the minimum %d", f, lo)
		}
		if hi, ok := schema["maximum"].(int); ok && f > float64(hi) {
			bad("%v above the maximum %d", f, hi)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("got %T; want boolean", v)
		}
	default:
		bad("schema without a type I can check: %v", schema)
	}
	return errs
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

// secString writes a security requirement list as [{} {bearer:[]}].
func secString(sec any) string {
	var parts []string
	for _, req := range asSlice(sec) {
		var kv []string
		for k, v := range req.(map[string]any) {
			kv = append(kv, fmt.Sprintf("%s:%v", k, v))
		}
		sort.Strings(kv)
		parts = append(parts, "{"+strings.Join(kv, " ")+"}")
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// historySource serves one history for each of its statuses.
type historySource struct {
	statuses
	h sink.History
}

func (s historySource) History(id string) (sink.History, bool) {
	if _, ok := s.Status(id); !ok {
		return sink.History{}, false
	}
	return s.h, true
}

// historyOf makes a history of two points from a status's verdict: a
// continue before it (with a baseline that has no p95 yet: null) and it.
func historyOf(st detector.Status) sink.History {
	v := st.Verdict
	p := sink.HistoryPoint{At: v.At, Step: v.Step, Weight: v.Weight, Action: string(v.Action), Reason: v.Reason,
		Baseline: sink.HistoryArm{Requests: v.Baseline.Requests, ErrorRate: v.Baseline.ErrorRate, P95MS: v.Baseline.P95MS},
		Canary:   sink.HistoryArm{Requests: v.Canary.Requests, ErrorRate: v.Canary.ErrorRate, P95MS: v.Canary.P95MS}}
	for _, t := range v.Tests {
		p.Tests = append(p.Tests, sink.HistoryTest{Name: t.Name, Role: t.Role, EValue: t.EValue, Threshold: t.Threshold, Passed: t.Passed})
	}
	before := p
	before.At, before.Action, before.Reason = v.At.Add(-time.Second), "continue", ""
	before.Baseline.P95MS = detector.Num(math.NaN())
	return sink.History{Rollout: st.Rollout, Baseline: st.Baseline, Canary: st.Canary, Capacity: 240, Stride: 1,
		Points: []sink.HistoryPoint{before, p}}
}

type judged struct {
	spec detector.Spec
	st   detector.Status
}

// judgedStatus runs a real judge on simulated windows until it rolls back a
// canary that fails four times as often as its baseline, and returns its
// status: a verdict with tests, totals with error types.
func judgedStatus(t *testing.T) judged {
	t.Helper()
	specs, err := detector.ParseSpecs("openapi.yaml", []byte(`
rollout: openapi-agent
baseline: v1
canary: v2
steps:
  - {weight: 50, min_duration: 30s, min_canary_events: 100}
  - {weight: 100}
`))
	if err != nil {
		t.Fatal(err)
	}
	j := detector.NewJudge(specs[0])
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	const width = 10 * time.Second
	for i := range 200 {
		ws := start.Add(time.Duration(i) * width)
		c := window.Closed{Rollout: "openapi-agent", Start: ws.UnixNano(), End: ws.Add(width).UnixNano(), Watermark: ws.Add(width).UnixNano(),
			ErrorTypes: []string{window.OtherName, "timeout"}}
		for _, arm := range []struct {
			version string
			errRate float64
		}{{"v1", 0.02}, {"v2", 0.08}} {
			agg := window.NewAgg()
			var ev schemas.Event
			for range 100 {
				ev.Reset()
				ev.Kind = schemas.KindTool
				ev.Error = rng.Float64() < arm.errRate
				ev.HasDuration = true
				ev.DurationMS = 100 + 50*rng.Float64()
				et := 0
				if ev.Error {
					et = 1
				}
				agg.Add(&ev, et)
			}
			c.Series = append(c.Series, window.Series{Version: arm.version, Segment: window.Segment{Kind: schemas.KindTool, Name: "search"}, Agg: agg})
		}
		j.Observe(c)
		if v, _ := j.Decide(c.Watermark); v.Action == schemas.ActionRollback {
			st := j.Status()
			// What canaryd's daemon adds from the routers' acks.
			at := start.Add(time.Hour)
			st.Routers = []schemas.RouterAck{
				{Router: "gw-1", Weight: 0, Action: schemas.ActionRollback, CommandID: "c79f7b88cdb2ecacc0adc74685878e36", Seq: 3, AppliedAt: at, Since: at, LatestSeq: 3},
				{Router: "gw-2", Weight: 50, Action: schemas.ActionSetWeight, CommandID: "0a9f7b88cdb2ecacc0adc74685878e36", Seq: 2, AppliedAt: at, Since: start, Lagging: true, LatestSeq: 3},
			}
			return judged{specs[0], st}
		}
	}
	t.Fatalf("no rollback after 200 windows: %+v", j.Status().Verdict)
	return judged{}
}
