package route

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/inferensys/canaryd/schemas"
)

// fakeAPI is an API server for one object, enough to test what Kube sends
// and how it reads answers: GET returns the object; an apply PATCH is
// recorded and, unless an error is queued, merged the way the real server
// merges canaryd's apply (the applied spec list replaces the stored one:
// the lists are atomic; annotations are merged key by key) with a new
// resourceVersion. The integration module (integrations/kube) runs the
// same adapter against a real kube-apiserver.
type fakeAPI struct {
	t    *testing.T
	path string

	mu      sync.Mutex
	obj     map[string]any
	patches []fakePatch
	errs    []fakeErr // answered instead, first to last, one per request
	gets    int
	tokens  []string
}

type fakePatch struct {
	query       string
	contentType string
	body        map[string]any
}

type fakeErr struct {
	code int
	body string
}

func newFakeAPI(t *testing.T, path, obj string) (*fakeAPI, *httptest.Server) {
	f := &fakeAPI{t: t, path: path, obj: decodeObj(t, obj)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func decodeObj(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return m
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, r.Header.Get("Authorization"))
	if len(f.errs) > 0 {
		e := f.errs[0]
		f.errs = f.errs[1:]
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(e.code)
		io.WriteString(w, e.body)
		return
	}
	if r.URL.Path != f.path {
		http.Error(w, `{"kind":"Status","reason":"NotFound","message":"not found","code":404}`, 404)
		return
	}
	switch r.Method {
	case http.MethodGet:
		f.gets++
	case http.MethodPatch:
		var body map[string]any
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		f.patches = append(f.patches, fakePatch{r.URL.RawQuery, r.Header.Get("Content-Type"), body})
		meta := f.obj["metadata"].(map[string]any)
		bmeta := body["metadata"].(map[string]any)
		if bmeta["resourceVersion"] != meta["resourceVersion"] {
			w.WriteHeader(409)
			io.WriteString(w, `{"kind":"Status","reason":"Conflict","message":"the object has been modified"}`)
			return
		}
		for k, v := range body["spec"].(map[string]any) {
			f.obj["spec"].(map[string]any)[k] = v
		}
		if ann, ok := bmeta["annotations"].(map[string]any); ok {
			have, _ := meta["annotations"].(map[string]any)
			if have == nil {
				have = map[string]any{}
				meta["annotations"] = have
			}
			for k, v := range ann {
				have[k] = v
			}
		}
		rv, _ := strconv.Atoi(meta["resourceVersion"].(string))
		meta["resourceVersion"] = strconv.Itoa(rv + 1)
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(f.obj)
}

func (f *fakeAPI) state() (obj map[string]any, patches []fakePatch, gets int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return deepCopyJSON(f.obj).(map[string]any), append([]fakePatch(nil), f.patches...), f.gets
}

func (f *fakeAPI) queue(code int, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fakeErr{code, body})
}

const httpRouteJSON = `{
  "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
  "metadata": {"name": "agent", "namespace": "prod", "resourceVersion": "7",
    "labels": {"app": "agent"}, "annotations": {"team": "ml"}},
  "spec": {
    "parentRefs": [{"name": "gw"}],
    "hostnames": ["agent.example.com"],
    "rules": [
      {"name": "health", "matches": [{"path": {"type": "PathPrefix", "value": "/healthz"}}],
       "backendRefs": [{"name": "agent-v1", "port": 80, "weight": 1}]},
      {"name": "main", "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
       "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-a", "value": "b"}]}}],
       "backendRefs": [
         {"group": "", "kind": "Service", "name": "agent-v1", "port": 80, "weight": 90},
         {"group": "", "kind": "Service", "name": "agent-v2", "port": 80, "weight": 10},
         {"group": "", "kind": "Service", "name": "agent-shadow", "port": 80, "weight": 0}]}
    ]
  }
}`

const virtualServiceJSON = `{
  "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
  "metadata": {"name": "agent", "namespace": "prod", "resourceVersion": "3"},
  "spec": {
    "hosts": ["agent"],
    "http": [
      {"name": "primary", "retries": {"attempts": 3},
       "route": [
         {"destination": {"host": "agent", "subset": "v1"}, "weight": 100},
         {"destination": {"host": "agent", "subset": "v2"}, "weight": 0,
          "headers": {"request": {"set": {"x-canary": "1"}}}}]}
    ]
  }
}`

const trafficSplitJSON = `{
  "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
  "metadata": {"name": "agent", "namespace": "prod", "resourceVersion": "11"},
  "spec": {"service": "agent", "backends": [
    {"service": "agent-v1", "weight": 500}, {"service": "agent-v2", "weight": 500}]}
}`

func intp(i int) *int { return &i }

var (
	httpRoute = KubeRoute{Kind: KindHTTPRoute, Namespace: "prod", Name: "agent", RuleName: "main",
		Baseline: KubeBackend{Service: "agent-v1"}, Canary: KubeBackend{Service: "agent-v2"}}
	virtualService = KubeRoute{Kind: KindVirtualService, Namespace: "prod", Name: "agent", Rule: intp(0),
		Baseline: KubeBackend{Host: "agent", Subset: "v1"}, Canary: KubeBackend{Host: "agent", Subset: "v2"}}
	trafficSplit = KubeRoute{Kind: KindTrafficSplit, Namespace: "prod", Name: "agent",
		Baseline: KubeBackend{Service: "agent-v1"}, Canary: KubeBackend{Service: "agent-v2"}}
)

// newTestKube is a Kube for the server at url with a token file; it returns
// the token file's path too.
func newTestKube(t *testing.T, url string, routes map[string]KubeRoute) (*Kube, string) {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := NewKube(KubeConfig{Server: url, TokenFile: tok}, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k, tok
}

func target(w int) Target {
	return Target{Rollout: "agent", Baseline: "v1", Canary: "v2", CanaryWeight: w, Action: schemas.ActionSetWeight,
		Seq: 42, CommandID: "cmd-42", DeploymentID: "dep-1", Commit: "abc123"}
}

// list returns obj's rule list (spec.rules, spec.http or spec.backends).
func specList(obj map[string]any, key string) []any {
	return obj["spec"].(map[string]any)[key].([]any)
}

// weightsAt returns the weights at path (indexes into the list) for each
// backend.
func kubeSetWeights(list []any, kind string, rule int, w map[KubeBackend]int) []any {
	list = deepCopyJSON(list).([]any)
	backends := list
	if kind != KindTrafficSplit {
		key := "backendRefs"
		if kind == KindVirtualService {
			key = "route"
		}
		backends = list[rule].(map[string]any)[key].([]any)
	}
	for _, b := range backends {
		m := b.(map[string]any)
		if v, ok := w[backendID(kind, m)]; ok {
			m["weight"] = json.Number(strconv.Itoa(v))
		}
	}
	return list
}

func TestKubeApply(t *testing.T) {
	for _, tc := range []struct {
		name, path, obj, key string
		route                KubeRoute
		rule                 int
	}{
		{"HTTPRoute", "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/agent", httpRouteJSON, "rules", httpRoute, 1},
		{"VirtualService", "/apis/networking.istio.io/v1/namespaces/prod/virtualservices/agent", virtualServiceJSON, "http", virtualService, 0},
		{"TrafficSplit", "/apis/split.smi-spec.io/v1alpha2/namespaces/prod/trafficsplits/agent", trafficSplitJSON, "backends", trafficSplit, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFakeAPI(t, tc.path, tc.obj)
			k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": tc.route})
			before, _, _ := f.state()
			if err := k.Apply(context.Background(), target(25)); err != nil {
				t.Fatal(err)
			}
			after, patches, _ := f.state()
			if len(patches) != 1 {
				t.Fatalf("got %d PATCHes; want 1", len(patches))
			}
			p := patches[0]
			if p.query != "fieldManager=canaryd&force=true" {
				t.Errorf("query %q; want fieldManager=canaryd&force=true", p.query)
			}
			if p.contentType != "application/apply-patch+yaml" {
				t.Errorf("content type %q", p.contentType)
			}
			// The applied list is the list as read with only the two weights
			// changed: every other field and rule as it was.
			want := kubeSetWeights(specList(before, tc.key), tc.route.Kind, tc.rule,
				map[KubeBackend]int{tc.route.Baseline: 75, tc.route.Canary: 25})
			if got := specList(p.body, tc.key); !reflect.DeepEqual(got, want) {
				t.Errorf("applied %s:\n got %v\nwant %v", tc.key, got, want)
			}
			// Nothing else in spec; metadata holds name, namespace,
			// resourceVersion and canaryd's annotations only.
			if len(p.body["spec"].(map[string]any)) != 1 {
				t.Errorf("applied spec %v; want only %s", p.body["spec"], tc.key)
			}
			wantMeta := map[string]any{"name": "agent", "namespace": "prod",
				"resourceVersion": before["metadata"].(map[string]any)["resourceVersion"],
				"annotations": map[string]any{AnnotationCommandID: "cmd-42", AnnotationDeploymentID: "dep-1",
					AnnotationCommit: "abc123", AnnotationSeq: "42", AnnotationAction: "set_weight"}}
			if !reflect.DeepEqual(p.body["metadata"], wantMeta) {
				t.Errorf("applied metadata %v; want %v", p.body["metadata"], wantMeta)
			}
			if p.body["apiVersion"] != before["apiVersion"] || p.body["kind"] != tc.route.Kind {
				t.Errorf("applied %v %v", p.body["apiVersion"], p.body["kind"])
			}
			if got := specList(after, tc.key); !reflect.DeepEqual(got, want) {
				t.Errorf("stored %s %v; want %v", tc.key, got, want)
			}

			// The same target again: already in force, nothing written.
			if err := k.Apply(context.Background(), target(25)); err != nil {
				t.Fatal(err)
			}
			if _, patches, gets := f.state(); len(patches) != 1 || gets != 2 {
				t.Errorf("again: %d PATCHes, %d GETs; want 1 and 2", len(patches), gets)
			}
			// A promote: canary 100, baseline 0.
			tg := target(100)
			tg.Seq, tg.CommandID, tg.Action = 43, "cmd-43", schemas.ActionPromote
			if err := k.Apply(context.Background(), tg); err != nil {
				t.Fatal(err)
			}
			after, _, _ = f.state()
			want = kubeSetWeights(specList(before, tc.key), tc.route.Kind, tc.rule,
				map[KubeBackend]int{tc.route.Baseline: 0, tc.route.Canary: 100})
			if got := specList(after, tc.key); !reflect.DeepEqual(got, want) {
				t.Errorf("after promote %s %v; want %v", tc.key, got, want)
			}
		})
	}
}

// TestKubeApplyWeightsUnchanged: a new command with the weights already in
// force still records itself (the annotations), with the list unchanged.
func TestKubeApplyWeightsUnchanged(t *testing.T) {
	f, srv := newFakeAPI(t, "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/agent", httpRouteJSON)
	k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": httpRoute})
	before, _, _ := f.state()
	if err := k.Apply(context.Background(), target(10)); err != nil {
		t.Fatal(err)
	}
	_, patches, _ := f.state()
	if len(patches) != 1 {
		t.Fatalf("%d PATCHes; want 1 (the annotations)", len(patches))
	}
	if got, want := specList(patches[0].body, "rules"), specList(before, "rules"); !reflect.DeepEqual(got, want) {
		t.Errorf("applied rules %v; want them as read %v", got, want)
	}
}

func TestKubeApplyPermanent(t *testing.T) {
	const hrPath = "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/agent"
	mod := func(edit func(r []any)) string {
		obj := decodeObj(t, httpRouteJSON)
		edit(specList(obj, "rules"))
		b, _ := json.Marshal(obj)
		return string(b)
	}
	refs := func(r []any) []any { return r[1].(map[string]any)["backendRefs"].([]any) }
	for _, tc := range []struct {
		name  string
		obj   string
		route KubeRoute
		want  string
	}{
		{"no such rule name", httpRouteJSON, func() KubeRoute { r := httpRoute; r.RuleName = "nope"; return r }(),
			`no rule in spec.rules is named "nope"`},
		{"rule index out of range", httpRouteJSON, func() KubeRoute { r := httpRoute; r.RuleName, r.Rule = "", intp(2); return r }(),
			"rule 2 not found: spec.rules has 2"},
		{"no rule said, two rules", httpRouteJSON, func() KubeRoute { r := httpRoute; r.RuleName = ""; return r }(),
			"spec.rules has 2 rules; say which with rule or rule_name"},
		{"canary missing", mod(func(r []any) {
			b := refs(r)
			r[1].(map[string]any)["backendRefs"] = []any{b[0], b[2]}
		}), httpRoute, "no canary backend agent-v2"},
		{"baseline missing", mod(func(r []any) {
			b := refs(r)
			r[1].(map[string]any)["backendRefs"] = []any{b[1], b[2]}
		}), httpRoute, "no baseline backend agent-v1"},
		{"canary twice", mod(func(r []any) {
			b := refs(r)
			r[1].(map[string]any)["backendRefs"] = append(b, deepCopyJSON(b[1]))
		}), httpRoute, "the canary backend agent-v2 is there twice"},
		{"third backend with traffic", mod(func(r []any) {
			refs(r)[2].(map[string]any)["weight"] = json.Number("5")
		}), httpRoute, "a third backend agent-shadow has weight 5"},
		{"third backend without weight (1 by default)", mod(func(r []any) {
			delete(refs(r)[2].(map[string]any), "weight")
		}), httpRoute, "a third backend agent-shadow has weight 1"},
		{"third weight not a number", mod(func(r []any) {
			refs(r)[2].(map[string]any)["weight"] = "0m"
		}), httpRoute, "backend agent-shadow: weight 0m is not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFakeAPI(t, hrPath, tc.obj)
			k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": tc.route})
			err := k.Apply(context.Background(), target(30))
			if err == nil || !IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (permanent %v); want a permanent error containing %q", err, IsPermanent(err), tc.want)
			}
			if !strings.Contains(err.Error(), "HTTPRoute prod/agent") {
				t.Errorf("%v: want the object named", err)
			}
			if _, patches, _ := f.state(); len(patches) != 0 {
				t.Errorf("%d PATCHes; want none", len(patches))
			}
		})
	}

	t.Run("unknown rollout", func(t *testing.T) {
		f, srv := newFakeAPI(t, hrPath, httpRouteJSON)
		k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": httpRoute})
		tg := target(10)
		tg.Rollout = "other"
		err := k.Apply(context.Background(), tg)
		if !errors.Is(err, ErrUnknownRollout) || !IsPermanent(err) || !strings.Contains(err.Error(), `"other"`) {
			t.Fatalf("got %v; want a permanent ErrUnknownRollout naming the rollout", err)
		}
		if _, _, gets := f.state(); gets != 0 {
			t.Errorf("%d GETs; want none", gets)
		}
	})
	t.Run("weight out of range", func(t *testing.T) {
		_, srv := newFakeAPI(t, hrPath, httpRouteJSON)
		k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": httpRoute})
		for _, w := range []int{-1, 101} {
			if err := k.Apply(context.Background(), target(w)); !IsPermanent(err) || !strings.Contains(err.Error(), "not in 0..100") {
				t.Errorf("weight %d: got %v", w, err)
			}
		}
	})
	t.Run("VirtualService third destination", func(t *testing.T) {
		obj := decodeObj(t, virtualServiceJSON)
		rule := specList(obj, "http")[0].(map[string]any)
		rule["route"] = append(rule["route"].([]any),
			map[string]any{"destination": map[string]any{"host": "agent", "subset": "v3"}, "weight": json.Number("1")},
			map[string]any{"destination": map[string]any{"host": "agent", "subset": "v4"}}) // no weight: 0 in Istio
		b, _ := json.Marshal(obj)
		_, srv := newFakeAPI(t, "/apis/networking.istio.io/v1/namespaces/prod/virtualservices/agent", string(b))
		k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": virtualService})
		err := k.Apply(context.Background(), target(30))
		if !IsPermanent(err) || !strings.Contains(err.Error(), "a third backend agent subset v3 has weight 1") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestKubeApplyStatus(t *testing.T) {
	const hrPath = "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/agent"
	status := func(code int, reason, msg string) string {
		return fmt.Sprintf(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"reason":%q,"code":%d}`, msg, reason, code)
	}
	for _, tc := range []struct {
		name      string
		onPatch   bool // the error answers the PATCH, not the GET
		code      int
		body      string
		permanent bool
		want      string
	}{
		{"not found", false, 404, status(404, "NotFound", `httproutes.gateway.networking.k8s.io "agent" not found`), true,
			"GET " + hrPath + ": 404 NotFound"},
		{"forbidden", false, 403, status(403, "Forbidden", "forbidden"), true,
			"RBAC: canaryd's service account needs get and patch on httproutes.gateway.networking.k8s.io in namespace prod"},
		{"forbidden patch", true, 403, status(403, "Forbidden", "forbidden"), true, "needs get and patch"},
		{"unauthorized", false, 401, status(401, "Unauthorized", "Unauthorized"), true, "check token_file"},
		{"invalid", true, 422, status(422, "Invalid", `HTTPRoute.gateway.networking.k8s.io "agent" is invalid: spec.rules[1].backendRefs[1].weight: Invalid value`), true,
			"422 Invalid: HTTPRoute.gateway.networking.k8s.io \"agent\" is invalid: spec.rules[1].backendRefs[1].weight"},
		{"conflict", true, 409, status(409, "Conflict", "the object has been modified"), false, "409 Conflict"},
		{"too many requests", false, 429, status(429, "TooManyRequests", "slow down"), false, "429"},
		{"unavailable", false, 503, "upstream connect error", false, "503: upstream connect error"},
		{"internal", true, 500, status(500, "InternalError", "etcdserver: leader changed"), false, "etcdserver: leader changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFakeAPI(t, hrPath, httpRouteJSON)
			k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": httpRoute})
			if tc.onPatch {
				// The GET succeeds; the PATCH is refused.
				srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodPatch {
						f.queue(tc.code, tc.body)
					}
					f.ServeHTTP(w, r)
				})
			} else {
				f.queue(tc.code, tc.body)
			}
			err := k.Apply(context.Background(), target(30))
			if err == nil || IsPermanent(err) != tc.permanent || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (permanent %v); want permanent=%v containing %q", err, IsPermanent(err), tc.permanent, tc.want)
			}
			var se *KubeStatusError
			if !errors.As(err, &se) || se.Code != tc.code {
				t.Errorf("got %#v; want a KubeStatusError with code %d", se, tc.code)
			}
			obj, _, _ := f.state()
			if w := specList(obj, "rules")[1].(map[string]any)["backendRefs"].([]any)[1].(map[string]any)["weight"]; w != json.Number("10") {
				t.Errorf("canary weight %v after a refusal; want 10 as before", w)
			}
		})
	}

	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		k, _ := newTestKube(t, "http://"+addr, map[string]KubeRoute{"agent": httpRoute})
		err = k.Apply(context.Background(), target(30))
		if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "GET "+hrPath) {
			t.Fatalf("got %v; want a retriable error naming the GET", err)
		}
	})

	t.Run("stale resourceVersion", func(t *testing.T) {
		// Someone writes between our GET and our PATCH: the apply is refused
		// (409, retriable) and the next Apply reads afresh and succeeds.
		f, srv := newFakeAPI(t, hrPath, httpRouteJSON)
		k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": httpRoute})
		var once sync.Once
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPatch {
				once.Do(func() {
					f.mu.Lock()
					f.obj["metadata"].(map[string]any)["resourceVersion"] = "8"
					f.obj["spec"].(map[string]any)["hostnames"] = []any{"other.example.com"}
					f.mu.Unlock()
				})
			}
			f.ServeHTTP(w, r)
		})
		err := k.Apply(context.Background(), target(30))
		var se *KubeStatusError
		if !errors.As(err, &se) || se.Code != 409 || IsPermanent(err) {
			t.Fatalf("got %v; want a retriable 409", err)
		}
		if err := k.Apply(context.Background(), target(30)); err != nil {
			t.Fatal(err)
		}
		_, patches, _ := f.state()
		if rv := patches[len(patches)-1].body["metadata"].(map[string]any)["resourceVersion"]; rv != "8" {
			t.Errorf("retry applied with resourceVersion %v; want 8", rv)
		}
	})
}

// TestKubeToken: the token file is read before every request, so a token
// the kubelet rotated is used at once.
func TestKubeToken(t *testing.T) {
	f, srv := newFakeAPI(t, "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/agent", httpRouteJSON)
	k, tok := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": httpRoute})
	if err := k.Apply(context.Background(), target(20)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tok, []byte("tok-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(context.Background(), target(30)); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	got := f.tokens
	f.mu.Unlock()
	want := []string{"Bearer tok-1", "Bearer tok-1", "Bearer tok-2", "Bearer tok-2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Authorization headers %q; want %q", got, want)
	}
}

// TestKubeTLS: the CA file is what the server's certificate is checked
// against; without it the system roots refuse httptest's certificate.
func TestKubeTLS(t *testing.T) {
	f := &fakeAPI{t: t, path: "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/agent",
		obj: decodeObj(t, httpRouteJSON)}
	srv := httptest.NewUnstartedServer(f)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemCert, 0o600); err != nil {
		t.Fatal(err)
	}
	routes := map[string]KubeRoute{"agent": httpRoute}
	k, err := NewKube(KubeConfig{Server: srv.URL, CAFile: ca}, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(context.Background(), target(20)); err != nil {
		t.Fatal(err)
	}
	k, err = NewKube(KubeConfig{Server: srv.URL}, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = k.Apply(context.Background(), target(30))
	if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: got %v; want a certificate error", err)
	}
}

func TestKubeInCluster(t *testing.T) {
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
	c, err := KubeConfig{}.resolved(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := KubeConfig{Server: "https://[fd00::1]:443", TokenFile: InClusterTokenFile, CAFile: InClusterCAFile, Timeout: DefaultKubeTimeout}
	if c != want {
		t.Errorf("got %+v; want %+v", c, want)
	}
	if _, err := (KubeConfig{}).resolved(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Errorf("outside a pod: got %v", err)
	}
	// An explicit server keeps the files as given.
	c, _ = KubeConfig{Server: "https://k:6443", Timeout: 3e9}.resolved(func(k string) string { return env[k] })
	if c.TokenFile != "" || c.CAFile != "" || c.Timeout != 3e9 {
		t.Errorf("explicit server: %+v", c)
	}
}

func TestKubeConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  KubeConfig
		want string
	}{
		{KubeConfig{Server: "ftp://x"}, "server:"},
		{KubeConfig{Server: "https://"}, "server:"},
		{KubeConfig{Server: "https://k?x=1"}, "server:"},
		{KubeConfig{CertFile: "c"}, "cert_file and key_file"},
		{KubeConfig{Timeout: -1}, "timeout:"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v; want %q", tc.cfg, err, tc.want)
		}
	}
	if err := (KubeConfig{Server: "https://k:6443", CertFile: "c", KeyFile: "k", Timeout: 1}).Validate(); err != nil {
		t.Error(err)
	}
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	for _, cfg := range []KubeConfig{
		{Server: "https://k", TokenFile: missing},
		{Server: "https://k", CAFile: missing},
		{Server: "https://k", CertFile: missing, KeyFile: missing},
	} {
		if _, err := NewKube(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("%+v: got %v; want the missing file named", cfg, err)
		}
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := NewKube(KubeConfig{Server: "https://k", CAFile: empty}, nil, nil); err == nil || !strings.Contains(err.Error(), "no PEM") {
		t.Errorf("empty CA: got %v", err)
	}
	if _, err := NewKube(KubeConfig{Server: "https://k", TokenFile: empty}, nil, nil); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token: got %v", err)
	}
}

func TestKubeRouteValidate(t *testing.T) {
	ok := []KubeRoute{httpRoute, virtualService, trafficSplit,
		func() KubeRoute {
			r := virtualService
			r.Baseline, r.Canary = KubeBackend{Host: "a"}, KubeBackend{Host: "b"}
			return r
		}(),
		func() KubeRoute { r := trafficSplit; r.APIVersion = "split.smi-spec.io/v1alpha4"; return r }(),
	}
	for _, r := range ok {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	edit := func(r KubeRoute, f func(*KubeRoute)) KubeRoute { f(&r); return r }
	for _, tc := range []struct {
		r    KubeRoute
		want string
	}{
		{edit(httpRoute, func(r *KubeRoute) { r.Kind = "Ingress" }), "kind:"},
		{edit(httpRoute, func(r *KubeRoute) { r.APIVersion = "networking.istio.io/v1" }), "api_version:"},
		{edit(trafficSplit, func(r *KubeRoute) { r.APIVersion = "split.smi-spec.io/v1alpha1" }), "api_version:"},
		{edit(httpRoute, func(r *KubeRoute) { r.Namespace = "" }), "namespace:"},
		{edit(httpRoute, func(r *KubeRoute) { r.Name = "a/b" }), "name:"},
		{edit(httpRoute, func(r *KubeRoute) { r.Rule = intp(0) }), "rule and rule_name"},
		{edit(virtualService, func(r *KubeRoute) { r.Rule = intp(-1) }), "rule:"},
		{edit(trafficSplit, func(r *KubeRoute) { r.Rule = intp(0) }), "rule, rule_name: a TrafficSplit has no rules"},
		{edit(httpRoute, func(r *KubeRoute) { r.Canary = KubeBackend{Host: "x"} }), "canary:"},
		{edit(virtualService, func(r *KubeRoute) { r.Baseline = KubeBackend{Service: "x"} }), "baseline:"},
		{edit(trafficSplit, func(r *KubeRoute) { r.Canary = r.Baseline }), "baseline and canary: both are agent-v1"},
	} {
		if err := tc.r.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: got %v; want %q...", tc.r, err, tc.want)
		}
	}
	if _, err := NewKube(KubeConfig{Server: "https://k"}, map[string]KubeRoute{"agent": edit(httpRoute, func(r *KubeRoute) { r.Name = "" })}, nil); err == nil ||
		!strings.Contains(err.Error(), `rollout "agent": name:`) {
		t.Errorf("NewKube with a bad route: got %v", err)
	}
}

// TestKubeConfigYAML: the YAML shape the routes file embeds.
func TestKubeConfigYAML(t *testing.T) {
	const doc = `
connection:
  server: https://kube.example.com:6443
  token_file: /var/run/token
  ca_file: /var/run/ca.crt
  timeout: 5s
routes:
  support-agent:
    kind: VirtualService
    api_version: networking.istio.io/v1
    namespace: prod
    name: support-agent
    rule_name: primary
    baseline: {host: support-agent, subset: v1}
    canary: {host: support-agent, subset: v2}
  other:
    kind: HTTPRoute
    namespace: prod
    name: other
    rule: 0
    baseline: {service: other-v1}
    canary: {service: other-v2}
`
	var got struct {
		Connection KubeConfig           `yaml:"connection"`
		Routes     map[string]KubeRoute `yaml:"routes"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Connection != (KubeConfig{Server: "https://kube.example.com:6443", TokenFile: "/var/run/token", CAFile: "/var/run/ca.crt", Timeout: 5e9}) {
		t.Errorf("connection %+v", got.Connection)
	}
	vs := got.Routes["support-agent"]
	if vs.Kind != KindVirtualService || vs.RuleName != "primary" || vs.Canary != (KubeBackend{Host: "support-agent", Subset: "v2"}) || vs.Validate() != nil {
		t.Errorf("support-agent %+v", vs)
	}
	hr := got.Routes["other"]
	if hr.Rule == nil || *hr.Rule != 0 || hr.Baseline.Service != "other-v1" || hr.Validate() != nil {
		t.Errorf("other %+v", hr)
	}
}

// TestKubeApplyQuantityWeights: SMI v1alpha1 wrote weights as quantities
// ("900m"); the baseline's and canary's are overwritten with numbers.
func TestKubeApplyQuantityWeights(t *testing.T) {
	obj := strings.NewReplacer(`"weight": 500}, {`, `"weight": "900m"}, {`, `"weight": 500}]`, `"weight": "100m"}]`).Replace(trafficSplitJSON)
	f, srv := newFakeAPI(t, "/apis/split.smi-spec.io/v1alpha2/namespaces/prod/trafficsplits/agent", obj)
	k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": trafficSplit})
	before, _, _ := f.state()
	if w := specList(before, "backends")[0].(map[string]any)["weight"]; w != "900m" {
		t.Fatalf("fixture: weight %v", w)
	}
	if err := k.Apply(context.Background(), target(30)); err != nil {
		t.Fatal(err)
	}
	after, _, _ := f.state()
	want := []any{map[string]any{"service": "agent-v1", "weight": json.Number("70")},
		map[string]any{"service": "agent-v2", "weight": json.Number("30")}}
	if got := specList(after, "backends"); !reflect.DeepEqual(got, want) {
		t.Errorf("backends %v; want %v", got, want)
	}
}

// TestKubeApplyCreated: an apply answered 201 created a route that had
// been deleted after the GET; Kube deletes exactly that object (uid
// precondition) and returns a permanent error.
func TestKubeApplyCreated(t *testing.T) {
	const path = "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/agent"
	var (
		mu      sync.Mutex
		deletes []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.Method {
		case http.MethodGet:
			io.WriteString(w, httpRouteJSON)
		case http.MethodPatch:
			var obj map[string]any
			json.NewDecoder(r.Body).Decode(&obj)
			obj["metadata"].(map[string]any)["uid"] = "new-uid"
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(obj)
		case http.MethodDelete:
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			deletes = append(deletes, r.URL.Path+" "+string(b))
			mu.Unlock()
			io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Success"}`)
		}
	}))
	t.Cleanup(srv.Close)
	k, _ := newTestKube(t, srv.URL, map[string]KubeRoute{"agent": httpRoute})
	err := k.Apply(context.Background(), target(30))
	if !IsPermanent(err) || !strings.Contains(err.Error(), "was deleted while canaryd applied its weights") {
		t.Fatalf("got %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{path + ` {"apiVersion":"v1","kind":"DeleteOptions","preconditions":{"uid":"new-uid"}}`}
	if !reflect.DeepEqual(deletes, want) {
		t.Errorf("DELETEs %q; want %q", deletes, want)
	}
}
