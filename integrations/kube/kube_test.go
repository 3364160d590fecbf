// Package kube tests canaryd's Kubernetes route adapter (route.Kube) against
// a real kube-apiserver and etcd built from the Go module proxy
// (scripts/kube-apiserver.sh), with the official HTTPRoute (Gateway API
// v1.6.3), VirtualService (istio.io/api) and TrafficSplit (smi-sdk-go) CRDs
// installed, RBAC on, and canaryd holding only testdata/role.yaml's Role.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/inferensys/canaryd/route"
	"github.com/inferensys/canaryd/schemas"
)

// kc is the cluster TestMain starts for every test of the package.
var kc *cluster

func TestMain(m *testing.M) {
	flag.Parse()
	// The servers are started with Pdeathsig, which fires when the thread
	// that started them ends: keep it for the life of the process.
	runtime.LockOSThread()
	if testing.Short() && !built() {
		// make test-short on a machine where make prebuild never ran: the
		// build alone takes minutes.
		fmt.Println("integrations/kube: -short and no kube-apiserver built (scripts/kube-apiserver.sh build): skipped")
		os.Exit(0)
	}
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "^$" {
		// make prebuild (go test -run '^$'): build the servers, start none.
		if _, err := buildServers(); err != nil {
			fmt.Fprintln(os.Stderr, "integrations/kube:", err)
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	c, err := startCluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integrations/kube:", err)
		os.Exit(1)
	}
	if err := c.installCRDs(); err != nil {
		c.stop()
		fmt.Fprintln(os.Stderr, "integrations/kube:", err)
		os.Exit(1)
	}
	kc = c
	code := m.Run()
	c.stop()
	os.Exit(code)
}

// built reports whether scripts/kube-apiserver.sh has the binaries cached.
func built() bool {
	out, err := exec.Command("../../scripts/kube-apiserver.sh", "dir").Output()
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(strings.TrimSpace(string(out)), "bin", "kube-apiserver"))
	return err == nil
}

var nsSeq atomic.Int64

// namespace creates a namespace of the test's own; unless bare, it holds
// testdata/role.yaml's Role bound to the users canaryd and the client
// certificate's.
func namespace(t *testing.T, bare bool) string {
	t.Helper()
	ns := fmt.Sprintf("t%d-%s", nsSeq.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	if len(ns) > 63 {
		ns = strings.TrimRight(ns[:63], "-")
	}
	kc.do(t, "POST", "/api/v1/namespaces", "application/json",
		map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}, 201)
	if bare {
		return ns
	}
	b, err := os.ReadFile("testdata/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	role, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	kc.do(t, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", "application/json", role, 201)
	kc.do(t, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", "application/json", map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": "canaryd-routes"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "canaryd-routes"},
		"subjects": []any{
			map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "canaryd"},
			map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": kc.certUser},
		},
	}, 201)
	return ns
}

// kind is one kind of route under test: the object as its owner (a GitOps
// tool, manager "flux") applies it, and the adapter's route.
type kind struct {
	name    string
	path    string // collection path, without the object's name
	listKey string // spec.<listKey> is the rule list
	rule    int    // index of the configured rule
	obj     func(ns, name string) map[string]any
	route   func(ns, name string) route.KubeRoute
}

var kinds = []kind{
	{
		name: "HTTPRoute", path: "/apis/gateway.networking.k8s.io/v1/namespaces/%s/httproutes", listKey: "rules", rule: 1,
		obj: func(ns, name string) map[string]any {
			return object("gateway.networking.k8s.io/v1", "HTTPRoute", ns, name, `{
			  "parentRefs": [{"name": "gw"}],
			  "hostnames": ["agent.example.com"],
			  "rules": [
			    {"name": "health", "matches": [{"path": {"type": "PathPrefix", "value": "/healthz"}}],
			     "backendRefs": [{"name": "agent-v1", "port": 80}]},
			    {"name": "main", "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
			     "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-a", "value": "b"}]}}],
			     "backendRefs": [
			       {"name": "agent-v1", "port": 80, "weight": 90},
			       {"name": "agent-v2", "port": 80, "weight": 10},
			       {"name": "agent-shadow", "port": 80, "weight": 0}]}]}`)
		},
		route: func(ns, name string) route.KubeRoute {
			return route.KubeRoute{Kind: route.KindHTTPRoute, Namespace: ns, Name: name, RuleName: "main",
				Baseline: route.KubeBackend{Service: "agent-v1"}, Canary: route.KubeBackend{Service: "agent-v2"}}
		},
	},
	{
		name: "VirtualService", path: "/apis/networking.istio.io/v1/namespaces/%s/virtualservices", listKey: "http", rule: 1,
		obj: func(ns, name string) map[string]any {
			return object("networking.istio.io/v1", "VirtualService", ns, name, `{
			  "hosts": ["agent"], "gateways": ["mesh"],
			  "http": [
			    {"name": "forced-canary", "match": [{"headers": {"x-canary": {"exact": "1"}}}],
			     "route": [{"destination": {"host": "agent", "subset": "v2"}}]},
			    {"name": "primary", "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "10s",
			     "route": [
			       {"destination": {"host": "agent", "subset": "v1"}, "weight": 100},
			       {"destination": {"host": "agent", "subset": "v2"}, "weight": 0,
			        "headers": {"request": {"set": {"x-version": "canary"}}}}]}]}`)
		},
		route: func(ns, name string) route.KubeRoute {
			return route.KubeRoute{Kind: route.KindVirtualService, Namespace: ns, Name: name, RuleName: "primary",
				Baseline: route.KubeBackend{Host: "agent", Subset: "v1"}, Canary: route.KubeBackend{Host: "agent", Subset: "v2"}}
		},
	},
	{
		name: "TrafficSplit-v1alpha4", path: "/apis/split.smi-spec.io/v1alpha4/namespaces/%s/trafficsplits", listKey: "backends",
		obj: func(ns, name string) map[string]any {
			return object("split.smi-spec.io/v1alpha4", "TrafficSplit", ns, name, `{
			  "service": "agent",
			  "matches": [{"kind": "HTTPRouteGroup", "name": "agent-routes"}],
			  "backends": [{"service": "agent-v1", "weight": 900}, {"service": "agent-v2", "weight": 100},
			               {"service": "agent-old", "weight": 0}]}`)
		},
		route: func(ns, name string) route.KubeRoute {
			return route.KubeRoute{Kind: route.KindTrafficSplit, APIVersion: "split.smi-spec.io/v1alpha4", Namespace: ns, Name: name,
				Baseline: route.KubeBackend{Service: "agent-v1"}, Canary: route.KubeBackend{Service: "agent-v2"}}
		},
	},
	{
		name: "TrafficSplit-v1alpha2", path: "/apis/split.smi-spec.io/v1alpha2/namespaces/%s/trafficsplits", listKey: "backends",
		obj: func(ns, name string) map[string]any {
			return object("split.smi-spec.io/v1alpha2", "TrafficSplit", ns, name, `{
			  "service": "agent",
			  "backends": [{"service": "agent-v1", "weight": 90}, {"service": "agent-v2", "weight": 10}]}`)
		},
		route: func(ns, name string) route.KubeRoute {
			return route.KubeRoute{Kind: route.KindTrafficSplit, Namespace: ns, Name: name, // the default: v1alpha2
				Baseline: route.KubeBackend{Service: "agent-v1"}, Canary: route.KubeBackend{Service: "agent-v2"}}
		},
	},
}

func object(apiVersion, kind, ns, name, spec string) map[string]any {
	var s map[string]any
	dec := json.NewDecoder(strings.NewReader(spec))
	dec.UseNumber()
	if err := dec.Decode(&s); err != nil {
		panic(fmt.Sprintf("BUG: %s spec: %v", kind, err))
	}
	return map[string]any{
		"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns,
			"labels": map[string]any{"app": "agent"}, "annotations": map[string]any{"team": "ml"}},
		"spec": s,
	}
}

func newKube(t *testing.T, cfg route.KubeConfig, r route.KubeRoute) *route.Kube {
	t.Helper()
	if cfg.Server == "" {
		cfg.Server, cfg.CAFile = kc.server, kc.caFile
	}
	if cfg.TokenFile == "" && cfg.CertFile == "" {
		cfg.TokenFile = kc.tokenFiles["canaryd"]
	}
	k, err := route.NewKube(cfg, map[string]route.KubeRoute{"agent": r}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func target(w int, seq uint64) route.Target {
	return route.Target{Rollout: "agent", Baseline: "v1", Canary: "v2", CanaryWeight: w, Action: schemas.ActionSetWeight,
		Seq: seq, CommandID: fmt.Sprintf("cmd-%d", seq), DeploymentID: "dep-1", Commit: "abc123"}
}

func copyJSON(v any) any {
	b, _ := json.Marshal(v)
	var out any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	dec.Decode(&out)
	return out
}

func meta(obj map[string]any) map[string]any { return obj["metadata"].(map[string]any) }

// backends returns the configured rule's backends in obj.
func (k kind) backends(obj map[string]any) []any {
	list := obj["spec"].(map[string]any)[k.listKey].([]any)
	switch k.listKey {
	case "rules":
		return list[k.rule].(map[string]any)["backendRefs"].([]any)
	case "http":
		return list[k.rule].(map[string]any)["route"].([]any)
	}
	return list
}

// withWeights is obj with the baseline's and canary's weights set, the
// first two backends of the rule in every object above.
func (k kind) withWeights(obj map[string]any, base, canary int) map[string]any {
	obj = copyJSON(obj).(map[string]any)
	b := k.backends(obj)
	b[0].(map[string]any)["weight"] = json.Number(fmt.Sprint(base))
	b[1].(map[string]any)["weight"] = json.Number(fmt.Sprint(canary))
	return obj
}

// comparable is obj without what every write changes.
func comparable(obj map[string]any) map[string]any {
	obj = copyJSON(obj).(map[string]any)
	m := meta(obj)
	for _, f := range []string{"resourceVersion", "managedFields", "generation"} {
		delete(m, f)
	}
	return obj
}

// managed returns the fieldsV1 of manager's entry in managedFields with the
// given operation, or nil.
func managed(obj map[string]any, manager, operation string) map[string]any {
	entries, _ := meta(obj)["managedFields"].([]any)
	for _, e := range entries {
		m := e.(map[string]any)
		if m["manager"] == manager && m["operation"] == operation {
			f, _ := m["fieldsV1"].(map[string]any)
			return f
		}
	}
	return nil
}

// has reports whether fieldsV1 f holds the path (keys like "f:spec").
func has(f map[string]any, path ...string) bool {
	for _, p := range path {
		next, ok := f[p].(map[string]any)
		if !ok {
			return false
		}
		f = next
	}
	return true
}

// TestApply runs the adapter against each kind: only the two weights and
// canaryd's annotations change; the rest of the object, other rules, labels,
// other annotations and other managers' fields stay as they were; canaryd
// owns the rule list and its annotations in managedFields; a repeated
// target writes nothing.
func TestApply(t *testing.T) {
	for _, kd := range kinds {
		t.Run(kd.name, func(t *testing.T) {
			t.Parallel()
			ns := namespace(t, false)
			coll := fmt.Sprintf(kd.path, ns)
			path := coll + "/agent"
			// The owner (a GitOps tool) applies the route; another manager
			// adds a label and an annotation of its own.
			kc.apply(t, path, "flux", kd.obj(ns, "agent"), 201)
			kc.apply(t, path, "ops", map[string]any{"apiVersion": kd.obj(ns, "agent")["apiVersion"], "kind": kd.obj(ns, "agent")["kind"],
				"metadata": map[string]any{"name": "agent", "namespace": ns,
					"labels": map[string]any{"tier": "gold"}, "annotations": map[string]any{"oncall": "sre"}}}, 200)
			before := kc.do(t, "GET", path, "", nil, 200)
			opsBefore := managed(before, "ops", "Apply")
			if opsBefore == nil {
				t.Fatal("no managedFields entry of ops")
			}

			k := newKube(t, route.KubeConfig{}, kd.route(ns, "agent"))
			if err := k.Apply(context.Background(), target(30, 7)); err != nil {
				t.Fatal(err)
			}
			after := kc.do(t, "GET", path, "", nil, 200)

			want := comparable(kd.withWeights(before, 70, 30))
			ann := meta(want)["annotations"].(map[string]any)
			for k, v := range map[string]string{route.AnnotationCommandID: "cmd-7", route.AnnotationSeq: "7",
				route.AnnotationDeploymentID: "dep-1", route.AnnotationCommit: "abc123", route.AnnotationAction: "set_weight"} {
				ann[k] = v
			}
			if got := comparable(after); !reflect.DeepEqual(got, want) {
				gb, _ := json.MarshalIndent(got, "", " ")
				wb, _ := json.MarshalIndent(want, "", " ")
				t.Fatalf("after apply:\n%s\nwant:\n%s", gb, wb)
			}

			// Ownership: canaryd (operation Apply) owns the rule list and
			// its annotations, nothing else; flux keeps the rest of spec and
			// its label and annotation; ops's entry is untouched.
			cd := managed(after, route.FieldManager, "Apply")
			if cd == nil {
				t.Fatalf("no managedFields entry of %s: %v", route.FieldManager, meta(after)["managedFields"])
			}
			if !has(cd, "f:spec", "f:"+kd.listKey) || !has(cd, "f:metadata", "f:annotations", "f:"+route.AnnotationCommandID) {
				t.Errorf("canaryd owns %v; want f:spec.f:%s and its annotations", cd, kd.listKey)
			}
			if spec := cd["f:spec"].(map[string]any); len(spec) != 1 {
				t.Errorf("canaryd owns spec fields %v; want only f:%s", spec, kd.listKey)
			}
			if has(cd, "f:metadata", "f:labels") || has(cd, "f:metadata", "f:annotations", "f:team") {
				t.Errorf("canaryd owns %v; want no labels and no other annotations", cd["f:metadata"])
			}
			flux := managed(after, "flux", "Apply")
			if flux == nil || has(flux, "f:spec", "f:"+kd.listKey) {
				t.Errorf("flux owns %v; want it to have lost f:spec.f:%s to canaryd's forced apply", flux, kd.listKey)
			}
			if !has(flux, "f:metadata", "f:labels", "f:app") || !has(flux, "f:metadata", "f:annotations", "f:team") {
				t.Errorf("flux owns %v; want its label and annotation kept", flux)
			}
			for f := range kd.obj(ns, "agent")["spec"].(map[string]any) {
				if f != kd.listKey && !has(flux, "f:spec", "f:"+f) {
					t.Errorf("flux no longer owns spec.%s: %v", f, flux)
				}
			}
			if ops := managed(after, "ops", "Apply"); !reflect.DeepEqual(ops, opsBefore) {
				t.Errorf("ops's fields %v; want %v as before", ops, opsBefore)
			}

			// The same target again: nothing written.
			if err := k.Apply(context.Background(), target(30, 7)); err != nil {
				t.Fatal(err)
			}
			again := kc.do(t, "GET", path, "", nil, 200)
			if rv, rv0 := meta(again)["resourceVersion"], meta(after)["resourceVersion"]; rv != rv0 {
				t.Errorf("a repeated target wrote: resourceVersion %v -> %v", rv0, rv)
			}

			// Promote, then roll back; read back each time.
			for _, tc := range []struct{ w, seq int }{{100, 8}, {0, 9}} {
				if err := k.Apply(context.Background(), target(tc.w, uint64(tc.seq))); err != nil {
					t.Fatal(err)
				}
				got := kc.do(t, "GET", path, "", nil, 200)
				b := kd.backends(got)
				if w0, w1 := b[0].(map[string]any)["weight"], b[1].(map[string]any)["weight"]; w0 != json.Number(fmt.Sprint(100-tc.w)) || w1 != json.Number(fmt.Sprint(tc.w)) {
					t.Errorf("canary %d: weights %v %v", tc.w, w0, w1)
				}
				if v := meta(got)["annotations"].(map[string]any)[route.AnnotationSeq]; v != fmt.Sprint(tc.seq) {
					t.Errorf("canary %d: seq annotation %v", tc.w, v)
				}
			}

			// What force costs: the owner re-applying its file without force
			// now conflicts on the rule list (it must ignore the weights, or
			// force); forced, it sets its weights back, and canaryd's next
			// apply sets the target again. (50/50 first: a value that no
			// owner's file has, so that the lists differ.)
			if err := k.Apply(context.Background(), target(50, 10)); err != nil {
				t.Fatal(err)
			}
			code, body, err := kc.raw("PATCH", path+"?fieldManager=flux", "application/apply-patch+yaml", mustJSON(kd.obj(ns, "agent")))
			if err != nil || code != 409 || !strings.Contains(string(body), "conflict") || !strings.Contains(string(body), kd.listKey) {
				t.Errorf("flux re-apply without force: %d %s %v; want a 409 conflict on %s", code, body, err, kd.listKey)
			}
			kc.do(t, "PATCH", path+"?fieldManager=flux&force=true", "application/apply-patch+yaml", kd.obj(ns, "agent"), 200)
			if err := k.Apply(context.Background(), target(40, 11)); err != nil {
				t.Fatal(err)
			}
			got := kc.do(t, "GET", path, "", nil, 200)
			if want := comparable(kd.withWeights(before, 60, 40)); !reflect.DeepEqual(comparable(got)["spec"], want["spec"]) {
				t.Errorf("after flux's forced re-apply and canaryd's: spec %v; want %v", got["spec"], want["spec"])
			}
		})
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// checkPermanent fails unless err is permanent, contains want, and (code
// not 0) wraps a KubeStatusError with that code.
func checkPermanent(t *testing.T, err error, code int, want string) {
	t.Helper()
	if err == nil || !route.IsPermanent(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v (permanent %v); want a permanent error containing %q", err, route.IsPermanent(err), want)
	}
	var se *route.KubeStatusError
	if code != 0 && (!errors.As(err, &se) || se.Code != code) {
		t.Fatalf("got %v; want the API server's %d", err, code)
	}
}

// unchanged fails if the object at path changed since before.
func unchanged(t *testing.T, path string, before map[string]any) {
	t.Helper()
	after := kc.do(t, "GET", path, "", nil, 200)
	if meta(after)["resourceVersion"] != meta(before)["resourceVersion"] {
		t.Errorf("%s was written: resourceVersion %v -> %v", path, meta(before)["resourceVersion"], meta(after)["resourceVersion"])
	}
}

// TestRefused: what the adapter refuses to write, and what the API server
// refuses; each a permanent error and nothing written.
func TestRefused(t *testing.T) {
	t.Parallel()
	hr := kinds[0]
	ns := namespace(t, false)
	coll := fmt.Sprintf(hr.path, ns)
	kc.apply(t, coll+"/agent", "flux", hr.obj(ns, "agent"), 201)
	before := kc.do(t, "GET", coll+"/agent", "", nil, 200)

	t.Run("object missing", func(t *testing.T) {
		err := newKube(t, route.KubeConfig{}, hr.route(ns, "missing")).Apply(context.Background(), target(30, 1))
		checkPermanent(t, err, 404, "GET "+coll+"/missing: 404 NotFound")
	})
	t.Run("version not served", func(t *testing.T) {
		ts := kinds[2].route(ns, "agent")
		ts.APIVersion = "split.smi-spec.io/v1alpha3" // in the CRD, not served
		checkPermanent(t, newKube(t, route.KubeConfig{}, ts).Apply(context.Background(), target(30, 1)), 404,
			"/apis/split.smi-spec.io/v1alpha3/namespaces/"+ns+"/trafficsplits/agent: 404")
	})
	t.Run("rule missing", func(t *testing.T) {
		r := hr.route(ns, "agent")
		r.RuleName = "nope"
		checkPermanent(t, newKube(t, route.KubeConfig{}, r).Apply(context.Background(), target(30, 1)), 0,
			`HTTPRoute `+ns+`/agent: no rule in spec.rules is named "nope"`)
		unchanged(t, coll+"/agent", before)
	})
	t.Run("canary missing", func(t *testing.T) {
		r := hr.route(ns, "agent")
		r.Canary.Service = "agent-v3"
		checkPermanent(t, newKube(t, route.KubeConfig{}, r).Apply(context.Background(), target(30, 1)), 0,
			"no canary backend agent-v3")
		unchanged(t, coll+"/agent", before)
	})
	t.Run("third backend with traffic", func(t *testing.T) {
		obj := hr.obj(ns, "three")
		hr.backends(obj)[2].(map[string]any)["weight"] = json.Number("5")
		kc.apply(t, coll+"/three", "flux", obj, 201)
		b := kc.do(t, "GET", coll+"/three", "", nil, 200)
		checkPermanent(t, newKube(t, route.KubeConfig{}, hr.route(ns, "three")).Apply(context.Background(), target(30, 1)), 0,
			"a third backend agent-shadow has weight 5")
		unchanged(t, coll+"/three", b)
	})
	t.Run("third backend without weight", func(t *testing.T) {
		// The CRD defaults a missing weight to 1: traffic.
		obj := hr.obj(ns, "default")
		delete(hr.backends(obj)[2].(map[string]any), "weight")
		kc.apply(t, coll+"/default", "flux", obj, 201)
		b := kc.do(t, "GET", coll+"/default", "", nil, 200)
		checkPermanent(t, newKube(t, route.KubeConfig{}, hr.route(ns, "default")).Apply(context.Background(), target(30, 1)), 0,
			"a third backend agent-shadow has weight 1")
		unchanged(t, coll+"/default", b)
	})
	t.Run("baseline twice", func(t *testing.T) {
		obj := hr.obj(ns, "twice")
		rule := obj["spec"].(map[string]any)["rules"].([]any)[1].(map[string]any)
		rule["backendRefs"] = append(rule["backendRefs"].([]any), map[string]any{"name": "agent-v1", "port": 8080, "weight": 0})
		kc.apply(t, coll+"/twice", "flux", obj, 201)
		b := kc.do(t, "GET", coll+"/twice", "", nil, 200)
		checkPermanent(t, newKube(t, route.KubeConfig{}, hr.route(ns, "twice")).Apply(context.Background(), target(30, 1)), 0,
			"the baseline backend agent-v1 is there twice")
		unchanged(t, coll+"/twice", b)
	})
	t.Run("no RBAC", func(t *testing.T) {
		k := newKube(t, route.KubeConfig{TokenFile: kc.tokenFiles["nobody"]}, hr.route(ns, "agent"))
		checkPermanent(t, k.Apply(context.Background(), target(30, 1)), 403,
			"RBAC: canaryd's service account needs get and patch on httproutes.gateway.networking.k8s.io in namespace "+ns)
	})
	t.Run("namespace without the Role", func(t *testing.T) {
		other := namespace(t, true)
		kc.apply(t, fmt.Sprintf(hr.path, other)+"/agent", "flux", hr.obj(other, "agent"), 201)
		checkPermanent(t, newKube(t, route.KubeConfig{}, hr.route(other, "agent")).Apply(context.Background(), target(30, 1)), 403,
			"needs get and patch")
	})
	t.Run("bad token", func(t *testing.T) {
		tok := t.TempDir() + "/token"
		os.WriteFile(tok, []byte("not-a-token"), 0o600)
		checkPermanent(t, newKube(t, route.KubeConfig{TokenFile: tok}, hr.route(ns, "agent")).Apply(context.Background(), target(30, 1)), 401,
			"check token_file")
	})
	t.Run("unknown CA", func(t *testing.T) {
		// The system roots do not know the test CA: a TLS error, retriable
		// (a CA being rotated can look like this).
		err := newKube(t, route.KubeConfig{Server: kc.server, TokenFile: kc.tokenFiles["canaryd"]}, hr.route(ns, "agent")).
			Apply(context.Background(), target(30, 1))
		if err == nil || route.IsPermanent(err) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("got %v; want a retriable certificate error", err)
		}
	})
	unchanged(t, coll+"/agent", before)
}

// TestClientCertificate: the adapter authenticates with a client
// certificate instead of a token.
func TestClientCertificate(t *testing.T) {
	t.Parallel()
	kd := kinds[1]
	ns := namespace(t, false)
	path := fmt.Sprintf(kd.path, ns) + "/agent"
	kc.apply(t, path, "flux", kd.obj(ns, "agent"), 201)
	k := newKube(t, route.KubeConfig{CertFile: kc.certFile, KeyFile: kc.keyFile}, kd.route(ns, "agent"))
	if err := k.Apply(context.Background(), target(25, 1)); err != nil {
		t.Fatal(err)
	}
	b := kd.backends(kc.do(t, "GET", path, "", nil, 200))
	if w := b[1].(map[string]any)["weight"]; w != json.Number("25") {
		t.Errorf("canary weight %v; want 25", w)
	}
}

// interloper is a proxy to the API server that runs write before it
// forwards the first PATCH, and fails the test unless write succeeded and
// a PATCH came.
func interloper(t *testing.T, write func() (int, []byte, error)) string {
	u, _ := url.Parse(kc.server)
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.Transport = kc.http.Transport
	var (
		done atomic.Bool
		res  = make(chan error, 1)
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch && !done.Swap(true) {
			code, body, err := write()
			if err == nil && code/100 != 2 {
				err = fmt.Errorf("%d %s", code, body)
			}
			res <- err
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		if !done.Load() {
			t.Error("no apply reached the API server")
		} else if err := <-res; err != nil {
			t.Errorf("the interloper's write: %v", err)
		}
	})
	return srv.URL
}

// TestConflict: someone writes the route between the adapter's GET and its
// apply. The API server refuses the stale apply (409, retriable), the
// interloper's change stays, and the retry (a fresh GET) keeps it and sets
// the weights.
func TestConflict(t *testing.T) {
	t.Parallel()
	hr := kinds[0]
	ns := namespace(t, false)
	path := fmt.Sprintf(hr.path, ns) + "/agent"
	kc.apply(t, path, "flux", hr.obj(ns, "agent"), 201)

	k := newKube(t, route.KubeConfig{Server: interloper(t, func() (int, []byte, error) {
		// The owner changes the health rule's path, forced.
		obj := hr.obj(ns, "agent")
		obj["spec"].(map[string]any)["rules"].([]any)[0].(map[string]any)["matches"] =
			[]any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/livez"}}}
		return kc.raw("PATCH", path+"?fieldManager=flux&force=true", "application/apply-patch+yaml", mustJSON(obj))
	}), TokenFile: kc.tokenFiles["canaryd"]}, hr.route(ns, "agent"))
	err := k.Apply(context.Background(), target(30, 1))
	var se *route.KubeStatusError
	if !errors.As(err, &se) || se.Code != 409 || route.IsPermanent(err) {
		t.Fatalf("got %v; want a retriable 409", err)
	}
	livez := func(obj map[string]any) bool {
		m := obj["spec"].(map[string]any)["rules"].([]any)[0].(map[string]any)["matches"].([]any)[0]
		return m.(map[string]any)["path"].(map[string]any)["value"] == "/livez"
	}
	got := kc.do(t, "GET", path, "", nil, 200)
	if w := hr.backends(got)[1].(map[string]any)["weight"]; !livez(got) || w != json.Number("10") {
		t.Fatalf("after the refused apply: /livez %v, canary weight %v; want true, 10", livez(got), w)
	}
	if err := k.Apply(context.Background(), target(30, 1)); err != nil {
		t.Fatal(err)
	}
	got = kc.do(t, "GET", path, "", nil, 200)
	if w := hr.backends(got)[1].(map[string]any)["weight"]; !livez(got) || w != json.Number("30") {
		t.Fatalf("after the retry: /livez %v, canary weight %v; want true, 30", livez(got), w)
	}
}

// TestInvalid: the API server refuses the apply as invalid (422) — here a
// ValidatingAdmissionPolicy that caps the canary at 50% — and the adapter
// returns a permanent error carrying the API's message, nothing written.
func TestInvalid(t *testing.T) {
	t.Parallel()
	hr := kinds[0]
	ns := namespace(t, false)
	coll := fmt.Sprintf(hr.path, ns)
	kc.apply(t, coll+"/agent", "flux", hr.obj(ns, "agent"), 201)
	kc.apply(t, coll+"/probe", "flux", hr.obj(ns, "probe"), 201)

	const msg = "the canary may have at most 50% of the traffic"
	name := "canary-cap-" + ns
	kc.do(t, "POST", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", "application/json", map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"failurePolicy": "Fail",
			"matchConstraints": map[string]any{"resourceRules": []any{map[string]any{
				"apiGroups": []any{"gateway.networking.k8s.io"}, "apiVersions": []any{"*"},
				"operations": []any{"CREATE", "UPDATE"}, "resources": []any{"httproutes"}}}},
			"validations": []any{map[string]any{
				"expression": "object.spec.rules.all(r, !has(r.backendRefs) || r.backendRefs.all(b, b.name != 'agent-v2' || !has(b.weight) || b.weight <= 50))",
				"message":    msg, "reason": "Invalid"}},
		},
	}, 201)
	t.Cleanup(func() {
		kc.raw("DELETE", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/"+name, "", nil)
		kc.raw("DELETE", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/"+name, "", nil)
	})
	kc.do(t, "POST", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings", "application/json", map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"policyName": name, "validationActions": []any{"Deny"},
			"matchResources": map[string]any{"namespaceSelector": map[string]any{
				"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns}}}},
	}, 201)

	// The policy is in force once a dry-run apply of the probe with the
	// canary at 60 is refused (a deadline, not a sleep).
	probe := hr.withWeights(hr.obj(ns, "probe"), 40, 60)
	deadline := time.Now().Add(time.Minute)
	for {
		code, _, err := kc.raw("PATCH", coll+"/probe?fieldManager=flux&force=true&dryRun=All", "application/apply-patch+yaml", mustJSON(probe))
		if err == nil && code == 422 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy is not in force after a minute: %d %v", code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	before := kc.do(t, "GET", coll+"/agent", "", nil, 200)
	k := newKube(t, route.KubeConfig{}, hr.route(ns, "agent"))
	checkPermanent(t, k.Apply(context.Background(), target(60, 1)), 422, msg)
	unchanged(t, coll+"/agent", before)
	if err := k.Apply(context.Background(), target(50, 2)); err != nil {
		t.Fatalf("50%%, within the cap: %v", err)
	}
}

// TestInvalidUnderCRD: the CRD's own schema refuses the apply (422). An
// HTTPRoute written under a looser CRD (one without the rule that a Service
// backendRef needs a port) is left alone by the API server until someone
// writes its rule list; canaryd's apply, which must write the whole atomic
// list, is refused with the CRD's message, permanently, nothing written.
//
// Not parallel: it loosens and restores the shared HTTPRoute CRD before the
// parallel tests resume.
func TestInvalidUnderCRD(t *testing.T) {
	const (
		crdPath = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/httproutes.gateway.networking.k8s.io"
		rule    = "Must have port for Service reference"
	)
	hr := kinds[0]
	ns := namespace(t, false)
	coll := fmt.Sprintf(hr.path, ns)
	legacy := hr.obj(ns, "legacy")
	delete(hr.backends(legacy)[2].(map[string]any), "port") // agent-shadow, weight 0, no port

	official := kc.do(t, "GET", crdPath, "", nil, 200)
	delete(meta(official), "managedFields")
	loose := copyJSON(official).(map[string]any)
	removed := 0
	for _, v := range loose["spec"].(map[string]any)["versions"].([]any) {
		items := dig(v, "schema", "openAPIV3Schema", "properties", "spec", "properties", "rules", "items",
			"properties", "backendRefs", "items").(map[string]any)
		var keep []any
		for _, val := range items["x-kubernetes-validations"].([]any) {
			if val.(map[string]any)["message"] == rule {
				removed++
				continue
			}
			keep = append(keep, val)
		}
		items["x-kubernetes-validations"] = keep
	}
	if removed != 2 {
		t.Fatalf("found %q in %d versions of the CRD; want 2 (v1, v1beta1)", rule, removed)
	}
	restore := func() {
		cur := kc.do(t, "GET", crdPath, "", nil, 200)
		o := copyJSON(official).(map[string]any)
		meta(o)["resourceVersion"] = meta(cur)["resourceVersion"]
		kc.do(t, "PUT", crdPath, "application/json", o, 200)
	}
	// waitCreate tries a dry-run create of the port-less route; the CRD
	// change is in force once it answers as wanted.
	waitCreate := func(want int) {
		deadline := time.Now().Add(time.Minute)
		for {
			code, body, err := kc.raw("POST", coll+"?dryRun=All", "application/json", mustJSON(legacy))
			if err == nil && code == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("dry-run create: %d %s %v; want %d within a minute", code, body, err, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	kc.do(t, "PUT", crdPath, "application/json", loose, 200)
	t.Cleanup(func() { restore(); waitCreate(422) })
	waitCreate(201)
	kc.apply(t, coll+"/legacy", "flux", legacy, 201)
	restore()
	waitCreate(422)

	before := kc.do(t, "GET", coll+"/legacy", "", nil, 200)
	err := newKube(t, route.KubeConfig{}, hr.route(ns, "legacy")).Apply(context.Background(), target(30, 1))
	checkPermanent(t, err, 422, rule)
	unchanged(t, coll+"/legacy", before)
}

func dig(v any, path ...string) any {
	for _, p := range path {
		v = v.(map[string]any)[p]
	}
	return v
}

// TestDeletedMeanwhile: the route is deleted between the adapter's GET and
// its apply. An apply of a missing object creates it (resourceVersion is no
// precondition on create): with the minimal Role, which has no create, the
// API server refuses that (403); with a Role that allows create and delete
// (admin here) the adapter sees the 201 and deletes what it created. Either
// way a permanent error and no route.
func TestDeletedMeanwhile(t *testing.T) {
	t.Parallel()
	hr := kinds[0]
	ns := namespace(t, false)
	for _, tc := range []struct{ user, want string }{
		{"canaryd", "was deleted while canaryd applied its weights; canaryd does not create routes"},
		{"admin", "was deleted while canaryd applied its weights (the object the apply created was deleted again)"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			path := fmt.Sprintf(hr.path, ns) + "/" + tc.user
			kc.apply(t, path, "flux", hr.obj(ns, tc.user), 201)
			k := newKube(t, route.KubeConfig{Server: interloper(t, func() (int, []byte, error) {
				return kc.raw("DELETE", path, "", nil)
			}), TokenFile: kc.tokenFiles[tc.user]}, hr.route(ns, tc.user))
			checkPermanent(t, k.Apply(context.Background(), target(30, 1)), 0, tc.want)
			if code, body, err := kc.raw("GET", path, "", nil); err != nil || code != 404 {
				t.Fatalf("GET after: %d %s %v; want 404", code, body, err)
			}
		})
	}
}
