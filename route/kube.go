package route

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The kinds of Kubernetes route the Kube adapter writes.
const (
	// KindHTTPRoute is the Gateway API HTTPRoute (Istio, Linkerd, Envoy
	// Gateway, ...): spec.rules[i].backendRefs[].{name,weight}.
	KindHTTPRoute = "HTTPRoute"
	// KindVirtualService is Istio's VirtualService:
	// spec.http[i].route[].{destination.{host,subset},weight}.
	KindVirtualService = "VirtualService"
	// KindTrafficSplit is the SMI TrafficSplit (Linkerd's SMI extension):
	// spec.backends[].{service,weight}.
	KindTrafficSplit = "TrafficSplit"
)

// FieldManager is the field manager the Kube adapter applies as; the
// object's metadata.managedFields name it as the owner of what it wrote.
const FieldManager = "canaryd"

// The annotations the Kube adapter records the command in force with. An
// empty value is left out (and so removed from the object if an earlier
// command of canaryd's had set it).
const (
	AnnotationCommandID    = "canaryd.io/command-id"
	AnnotationDeploymentID = "canaryd.io/deployment-id"
	AnnotationCommit       = "canaryd.io/commit"
	AnnotationSeq          = "canaryd.io/seq"
	AnnotationAction       = "canaryd.io/action"
)

// In-cluster defaults: where a pod's service account token and the
// cluster's CA are mounted, and the environment variables that name the API
// server's service.
const (
	InClusterTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	InClusterCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	envServiceHost     = "KUBERNETES_SERVICE_HOST"
	envServicePort     = "KUBERNETES_SERVICE_PORT"
)

// DefaultKubeTimeout bounds each request to the API server when
// KubeConfig.Timeout is zero.
const DefaultKubeTimeout = 10 * time.Second

// maxKubeBody bounds what is read of a response: etcd refuses objects over
// 1.5 MiB, so anything much larger is not an object of ours.
const maxKubeBody = 8 << 20

// KubeConfig is how the Kube adapter reaches the API server. Left empty, it
// runs in-cluster: the server from KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT, the pod's service account token and CA.
type KubeConfig struct {
	// Server is the API server's URL (https://host:port; http:// only for a
	// local kubectl proxy). Empty: in-cluster, and TokenFile and CAFile
	// default to the service account's files.
	Server string `yaml:"server,omitempty"`
	// TokenFile holds a bearer token; read before every request, because
	// bound service account tokens are rotated in place by the kubelet.
	TokenFile string `yaml:"token_file,omitempty"`
	// CAFile holds the PEM certificates the server's is checked against;
	// empty with an explicit Server: the system's roots.
	CAFile string `yaml:"ca_file,omitempty"`
	// CertFile and KeyFile: a client certificate, both or neither.
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
	// Timeout bounds each request; 0 means DefaultKubeTimeout.
	Timeout time.Duration `yaml:"timeout,omitempty"`
}

// Validate checks the settings without reading any file or the environment.
func (c KubeConfig) Validate() error {
	if c.Server != "" {
		u, err := url.Parse(c.Server)
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		if u.Scheme != "https" && u.Scheme != "http" {
			return fmt.Errorf("server: %q: want an https:// URL", c.Server)
		}
		if u.Host == "" {
			return fmt.Errorf("server: %q has no host", c.Server)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("server: %q: want no query or fragment", c.Server)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("cert_file and key_file: set both or neither")
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout: %v is negative", c.Timeout)
	}
	return nil
}

// resolved is c with the in-cluster defaults filled in from getenv.
func (c KubeConfig) resolved(getenv func(string) string) (KubeConfig, error) {
	if c.Server == "" {
		host, port := getenv(envServiceHost), getenv(envServicePort)
		if host == "" || port == "" {
			return c, fmt.Errorf("server: not set, and %s and %s are not (not in a pod?)", envServiceHost, envServicePort)
		}
		c.Server = "https://" + net.JoinHostPort(host, port)
		if c.TokenFile == "" {
			c.TokenFile = InClusterTokenFile
		}
		if c.CAFile == "" {
			c.CAFile = InClusterCAFile
		}
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultKubeTimeout
	}
	return c, nil
}

// KubeBackend names one backend of a route's rule: Service for an HTTPRoute
// (backendRefs[].name) or a TrafficSplit (backends[].service); Host and
// optional Subset for a VirtualService (route[].destination.{host,subset},
// compared as written: "reviews" does not match
// "reviews.prod.svc.cluster.local").
type KubeBackend struct {
	Service string `yaml:"service,omitempty"`
	Host    string `yaml:"host,omitempty"`
	Subset  string `yaml:"subset,omitempty"`
}

func (b KubeBackend) String() string {
	switch {
	case b.Service != "":
		return b.Service
	case b.Subset != "":
		return b.Host + " subset " + b.Subset
	}
	return b.Host
}

// KubeRoute is the route of one rollout: which object, which of its rules,
// and which two of the rule's backends are the baseline and the canary.
type KubeRoute struct {
	// Kind is HTTPRoute, VirtualService or TrafficSplit.
	Kind string `yaml:"kind"`
	// APIVersion defaults to gateway.networking.k8s.io/v1,
	// networking.istio.io/v1 or split.smi-spec.io/v1alpha2 (the version
	// Linkerd's SMI extension serves; smi-sdk-go's own CRD serves v1alpha4).
	APIVersion string `yaml:"api_version,omitempty"`
	Namespace  string `yaml:"namespace"`
	Name       string `yaml:"name"`
	// Rule is the index of the rule (HTTPRoute spec.rules, VirtualService
	// spec.http); RuleName picks it by its name instead. With neither, the
	// object must have exactly one rule. A TrafficSplit has no rules.
	Rule     *int        `yaml:"rule,omitempty"`
	RuleName string      `yaml:"rule_name,omitempty"`
	Baseline KubeBackend `yaml:"baseline"`
	Canary   KubeBackend `yaml:"canary"`
}

// kubeKind is what differs between the three kinds.
type kubeKind struct {
	plural      string
	versions    []string // apiVersions accepted; the first is the default
	rulesPath   []string // the list of rules under the object; nil: the object has one rule, backendsPath under spec
	backendsKey string   // the backends' list in a rule (or in spec)
	// defaultWeight is the weight of a backend that has none: 1 for an
	// HTTPRoute (the CRD's default), 0 for a VirtualService with more than
	// one destination (Istio's), none for a TrafficSplit (weight is
	// required).
	defaultWeight int64
}

var kubeKinds = map[string]kubeKind{
	KindHTTPRoute: {
		plural:        "httproutes",
		versions:      []string{"gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"},
		rulesPath:     []string{"spec", "rules"},
		backendsKey:   "backendRefs",
		defaultWeight: 1,
	},
	KindVirtualService: {
		plural:      "virtualservices",
		versions:    []string{"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"},
		rulesPath:   []string{"spec", "http"},
		backendsKey: "route",
	},
	KindTrafficSplit: {
		plural: "trafficsplits",
		versions: []string{"split.smi-spec.io/v1alpha2", "split.smi-spec.io/v1alpha3",
			"split.smi-spec.io/v1alpha4"},
		backendsKey: "backends",
	},
}

// dnsName is what a namespace or an object name may be (a DNS subdomain;
// namespaces are further limited to labels, which the API server checks).
var dnsName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// Validate checks the route's settings; its messages name the bad field.
func (r KubeRoute) Validate() error {
	k, ok := kubeKinds[r.Kind]
	if !ok {
		return fmt.Errorf("kind: %q: want %s, %s or %s", r.Kind, KindHTTPRoute, KindVirtualService, KindTrafficSplit)
	}
	if r.APIVersion != "" && !contains(k.versions, r.APIVersion) {
		return fmt.Errorf("api_version: %q is not one of %s's: %s", r.APIVersion, r.Kind, strings.Join(k.versions, ", "))
	}
	if !dnsName.MatchString(r.Namespace) {
		return fmt.Errorf("namespace: %q is not a Kubernetes namespace name", r.Namespace)
	}
	if !dnsName.MatchString(r.Name) {
		return fmt.Errorf("name: %q is not a Kubernetes object name", r.Name)
	}
	if r.Rule != nil && r.RuleName != "" {
		return errors.New("rule and rule_name: set one or neither")
	}
	if r.Rule != nil && *r.Rule < 0 {
		return fmt.Errorf("rule: %d is negative", *r.Rule)
	}
	if k.rulesPath == nil && (r.Rule != nil || r.RuleName != "") {
		return fmt.Errorf("rule, rule_name: a %s has no rules; leave them out", r.Kind)
	}
	for _, b := range []struct {
		field string
		b     KubeBackend
	}{{"baseline", r.Baseline}, {"canary", r.Canary}} {
		if r.Kind == KindVirtualService {
			if b.b.Host == "" || b.b.Service != "" {
				return fmt.Errorf("%s: a VirtualService backend is a host (and an optional subset), not a service", b.field)
			}
			continue
		}
		if b.b.Service == "" || b.b.Host != "" || b.b.Subset != "" {
			return fmt.Errorf("%s: a %s backend is a service (its name), not a host or subset", b.field, r.Kind)
		}
	}
	if r.Baseline == r.Canary {
		return fmt.Errorf("baseline and canary: both are %s", r.Baseline)
	}
	return nil
}

func (r KubeRoute) apiVersion() string {
	if r.APIVersion != "" {
		return r.APIVersion
	}
	return kubeKinds[r.Kind].versions[0]
}

// path is the object's URL path on the API server.
func (r KubeRoute) path() string {
	return "/apis/" + r.apiVersion() + "/namespaces/" + url.PathEscape(r.Namespace) + "/" +
		kubeKinds[r.Kind].plural + "/" + url.PathEscape(r.Name)
}

// resource is the object's resource as an RBAC rule names it.
func (r KubeRoute) resource() string {
	group, _, _ := strings.Cut(r.apiVersion(), "/")
	return kubeKinds[r.Kind].plural + "." + group
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Kube sets the weights of Kubernetes routes (Gateway API HTTPRoute, Istio
// VirtualService, SMI TrafficSplit) by server-side apply, with nothing but
// net/http: client-go would make canaryd's module many times larger.
//
// How one Apply writes, and why: every list the weights sit in is atomic in
// these CRDs (HTTPRoute's rules and backendRefs are
// x-kubernetes-list-type: atomic; VirtualService's http and route and
// TrafficSplit's backends have no list type, which in a CRD means atomic),
// so an apply of a partial list would replace the whole list with it. Apply
// therefore GETs the object, checks the rule, and applies the WHOLE rule
// list as read with only the two weights changed, plus its annotations,
// with metadata.resourceVersion set: if anyone wrote the object between the
// GET and the PATCH, the API server refuses the apply with 409 Conflict
// instead of letting our stale copy of the list undo their change, and the
// Driver retries from a fresh GET.
//
// force=true: an atomic list has one owner, the manager that applied it
// (kubectl, Helm, Argo CD, Flux), and any change of its value by another
// manager is a field conflict. Without force every weight change would be
// refused, forever (retrying cannot mend a conflict). With force canaryd
// takes ownership of the rule list (only that list; the rest of spec,
// labels and other annotations keep their owners), and resourceVersion
// keeps force from overwriting anything written since the GET. When the
// weights already have the values wanted, the list is applied unchanged and
// canaryd shares its ownership instead of taking it. A tool that re-applies
// the route from Git with force will set its own weights again: tell it to
// leave the route's rules alone once created (Argo CD: ignoreDifferences
// with RespectIgnoreDifferences=true; Flux: the annotation
// kustomize.toolkit.fluxcd.io/ssa: IfNotPresent), or route with canaryd's
// Git adapter instead. One applied without force gets a conflict on the
// rule list (integrations/kube shows both).
type Kube struct {
	cfg    KubeConfig // resolved: Server, Timeout set
	server *url.URL
	client *http.Client
	routes map[string]KubeRoute
	log    *slog.Logger
}

var _ Adapter = (*Kube)(nil)

// NewKube validates cfg and every route, fills in the in-cluster defaults,
// reads the CA and client certificate files, and returns the adapter. It
// starts no goroutine and does not contact the API server.
func NewKube(cfg KubeConfig, routes map[string]KubeRoute, logger *slog.Logger) (*Kube, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	rollouts := make([]string, 0, len(routes))
	for name := range routes {
		rollouts = append(rollouts, name)
	}
	sort.Strings(rollouts) // the same error first every time
	own := make(map[string]KubeRoute, len(routes))
	for _, name := range rollouts {
		if err := routes[name].Validate(); err != nil {
			return nil, fmt.Errorf("kubernetes: rollout %q: %w", name, err)
		}
		own[name] = routes[name]
	}
	cfg, err := cfg.resolved(os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	server, err := url.Parse(strings.TrimSuffix(cfg.Server, "/"))
	if err != nil {
		return nil, fmt.Errorf("kubernetes: server: %w", err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kubernetes: ca_file: %s holds no PEM certificate", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: cert_file, key_file: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	if cfg.TokenFile != "" {
		// Read once here so that a wrong path fails at start, not at the
		// first command.
		if _, err := readToken(cfg.TokenFile); err != nil {
			return nil, fmt.Errorf("kubernetes: token_file: %w", err)
		}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsCfg
	return &Kube{
		cfg:    cfg,
		server: server,
		client: &http.Client{Transport: transport},
		routes: own,
		log:    logger,
	}, nil
}

// Kind is "kubernetes".
func (k *Kube) Kind() string { return "kubernetes" }

// Apply sets the canary backend's weight to t.CanaryWeight and the
// baseline's to 100 − t.CanaryWeight in the rule configured for t.Rollout,
// in one server-side apply. Permanent errors (nothing written): unknown
// rollout, a weight out of 0..100, the object or rule missing (404), a rule
// without exactly one baseline and one canary backend or with a third
// backend that has traffic, the object refused as invalid (422), RBAC
// refusing canaryd (401, 403). Others (409 conflict, 429, 5xx, connection
// errors, timeouts) are worth retrying.
func (k *Kube) Apply(ctx context.Context, t Target) error {
	r, ok := k.routes[t.Rollout]
	if !ok {
		return Permanent(fmt.Errorf("kubernetes: rollout %q: %w", t.Rollout, ErrUnknownRollout))
	}
	if t.CanaryWeight < 0 || t.CanaryWeight > 100 {
		return Permanentf("kubernetes: rollout %q: canary weight %d is not in 0..100", t.Rollout, t.CanaryWeight)
	}
	path := r.path()
	obj, err := k.get(ctx, r, path)
	if err != nil {
		return err
	}
	plan, err := planKube(r, obj, t)
	if err != nil {
		return Permanent(fmt.Errorf("kubernetes: %s %s/%s: %w", r.Kind, r.Namespace, r.Name, err))
	}
	if plan.inForce {
		k.log.Debug("kubernetes route already in force", "rollout", t.Rollout, "kind", r.Kind,
			"namespace", r.Namespace, "name", r.Name, "canary_weight", t.CanaryWeight)
		return nil
	}
	body, err := json.Marshal(plan.apply)
	if err != nil {
		return Permanent(fmt.Errorf("kubernetes: encode apply of %s: %w", path, err))
	}
	q := url.Values{"fieldManager": {FieldManager}, "force": {"true"}}
	got, code, err := k.do(ctx, r, http.MethodPatch, path+"?"+q.Encode(), "application/apply-patch+yaml", body)
	if err != nil {
		return err
	}
	if code == http.StatusCreated {
		// The route was deleted between our GET and our apply, and an
		// apply creates what is missing (resourceVersion is no
		// precondition on create): a route with our fields only, not the
		// owner's. Take it back; canaryd does not create routes.
		return k.undoCreate(ctx, r, path, got)
	}
	// A mutating webhook could have changed what we wrote; report it rather
	// than ack a weight that is not in force.
	after, err := planKube(r, got, t)
	if err != nil {
		return Permanent(fmt.Errorf("kubernetes: %s %s/%s after apply: %w", r.Kind, r.Namespace, r.Name, err))
	}
	if !after.weightsSet {
		return Permanentf("kubernetes: %s %s/%s: the API server stored weights other than baseline %d canary %d (a mutating webhook?)",
			r.Kind, r.Namespace, r.Name, 100-t.CanaryWeight, t.CanaryWeight)
	}
	k.log.Info("kubernetes route weights applied", "rollout", t.Rollout, "kind", r.Kind,
		"namespace", r.Namespace, "name", r.Name, "rule", plan.rule,
		"baseline_weight", 100-t.CanaryWeight, "canary_weight", t.CanaryWeight,
		"previous_canary_weight", plan.prevCanary, "command_id", t.CommandID, "seq", t.Seq)
	return nil
}

// kubePlan is what Apply found in the object and will write.
type kubePlan struct {
	rule       string         // "rules[1]" / "http[0] (name primary)" / "backends", for logs
	prevCanary int64          // the canary's weight before
	weightsSet bool           // the two weights already have the values wanted
	inForce    bool           // weightsSet and the annotations are ours already: nothing to write
	apply      map[string]any // the apply configuration
}

// planKube checks obj (the object as read) against r and builds the apply
// configuration that puts t in force: apiVersion, kind, name, namespace,
// resourceVersion, canaryd's annotations and the whole rule list with only
// the two weights changed.
func planKube(r KubeRoute, obj map[string]any, t Target) (kubePlan, error) {
	var p kubePlan
	k := kubeKinds[r.Kind]
	meta, _ := obj["metadata"].(map[string]any)
	spec, ok := obj["spec"].(map[string]any)
	if !ok {
		return p, errors.New("the object has no spec")
	}
	var (
		list     any // what is applied: spec.rules, spec.http, or spec.backends
		backends []any
		listKey  string
	)
	if k.rulesPath == nil {
		listKey = k.backendsKey
		list = deepCopyJSON(spec[listKey])
		b, ok := list.([]any)
		if !ok {
			return p, fmt.Errorf("spec.%s is not a list", listKey)
		}
		backends, p.rule = b, "spec."+listKey
	} else {
		listKey = k.rulesPath[len(k.rulesPath)-1]
		list = deepCopyJSON(spec[listKey])
		rules, ok := list.([]any)
		if !ok {
			return p, fmt.Errorf("spec.%s is not a list", listKey)
		}
		i, err := pickRule(r, rules, listKey)
		if err != nil {
			return p, err
		}
		rule := rules[i].(map[string]any)
		p.rule = fmt.Sprintf("spec.%s[%d]", listKey, i)
		if n, _ := rule["name"].(string); n != "" {
			p.rule += " (" + n + ")"
		}
		b, ok := rule[k.backendsKey].([]any)
		if !ok {
			return p, fmt.Errorf("%s has no %s", p.rule, k.backendsKey)
		}
		backends = b
	}
	base, canary, err := pickBackends(r, k, backends, p.rule)
	if err != nil {
		return p, err
	}
	wantBase, wantCanary := int64(100-t.CanaryWeight), int64(t.CanaryWeight)
	// The two weights are overwritten whatever they were; one that is not a
	// number (a quantity such as "500m", as SMI v1alpha1 wrote them) is
	// simply not the value wanted.
	prevBase, errBase := backendWeight(base, k)
	prevCanary, errCanary := backendWeight(canary, k)
	p.prevCanary = prevCanary
	_, baseSet := base["weight"]
	_, canarySet := canary["weight"]
	p.weightsSet = baseSet && canarySet && errBase == nil && errCanary == nil &&
		prevBase == wantBase && prevCanary == wantCanary
	base["weight"] = json.Number(strconv.FormatInt(wantBase, 10))
	canary["weight"] = json.Number(strconv.FormatInt(wantCanary, 10))

	ann := kubeAnnotations(t)
	have, _ := meta["annotations"].(map[string]any)
	p.inForce = p.weightsSet
	for _, key := range []string{AnnotationCommandID, AnnotationDeploymentID, AnnotationCommit, AnnotationSeq, AnnotationAction} {
		v, _ := have[key].(string)
		if w, _ := ann[key].(string); v != w {
			p.inForce = false
		}
	}
	applyMeta := map[string]any{
		"name":      r.Name,
		"namespace": r.Namespace,
	}
	if rv, _ := meta["resourceVersion"].(string); rv != "" {
		applyMeta["resourceVersion"] = rv
	}
	if len(ann) > 0 {
		applyMeta["annotations"] = ann
	}
	p.apply = map[string]any{
		"apiVersion": r.apiVersion(),
		"kind":       r.Kind,
		"metadata":   applyMeta,
		"spec":       map[string]any{listKey: list},
	}
	return p, nil
}

// pickRule finds the configured rule among rules.
func pickRule(r KubeRoute, rules []any, listKey string) (int, error) {
	switch {
	case r.RuleName != "":
		at := -1
		for i, x := range rules {
			if m, ok := x.(map[string]any); ok && m["name"] == r.RuleName {
				if at >= 0 {
					return 0, fmt.Errorf("spec.%s[%d] and [%d] are both named %q", listKey, at, i, r.RuleName)
				}
				at = i
			}
		}
		if at < 0 {
			return 0, fmt.Errorf("no rule in spec.%s is named %q (not found)", listKey, r.RuleName)
		}
		return at, nil
	case r.Rule != nil:
		if *r.Rule >= len(rules) {
			return 0, fmt.Errorf("rule %d not found: spec.%s has %d", *r.Rule, listKey, len(rules))
		}
		if _, ok := rules[*r.Rule].(map[string]any); !ok {
			return 0, fmt.Errorf("spec.%s[%d] is not an object", listKey, *r.Rule)
		}
		return *r.Rule, nil
	}
	if len(rules) != 1 {
		return 0, fmt.Errorf("spec.%s has %d rules; say which with rule or rule_name", listKey, len(rules))
	}
	if _, ok := rules[0].(map[string]any); !ok {
		return 0, fmt.Errorf("spec.%s[0] is not an object", listKey)
	}
	return 0, nil
}

// backendID is how a backend of kind k names itself, as a KubeBackend.
func backendID(kind string, m map[string]any) KubeBackend {
	switch kind {
	case KindHTTPRoute:
		s, _ := m["name"].(string)
		return KubeBackend{Service: s}
	case KindVirtualService:
		d, _ := m["destination"].(map[string]any)
		h, _ := d["host"].(string)
		s, _ := d["subset"].(string)
		return KubeBackend{Host: h, Subset: s}
	}
	s, _ := m["service"].(string)
	return KubeBackend{Service: s}
}

// pickBackends finds exactly one baseline and one canary among backends and
// checks that every other backend has weight 0: traffic the adapter does
// not control would make the canary's share something else than asked.
func pickBackends(r KubeRoute, k kubeKind, backends []any, where string) (base, canary map[string]any, err error) {
	var others []map[string]any
	for i, x := range backends {
		m, ok := x.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("%s: %s[%d] is not an object", where, k.backendsKey, i)
		}
		switch id := backendID(r.Kind, m); id {
		case r.Baseline:
			if base != nil {
				return nil, nil, fmt.Errorf("%s: the baseline backend %s is there twice", where, id)
			}
			base = m
		case r.Canary:
			if canary != nil {
				return nil, nil, fmt.Errorf("%s: the canary backend %s is there twice", where, id)
			}
			canary = m
		default:
			others = append(others, m)
		}
	}
	switch {
	case base == nil:
		return nil, nil, fmt.Errorf("%s: no baseline backend %s (not found)", where, r.Baseline)
	case canary == nil:
		return nil, nil, fmt.Errorf("%s: no canary backend %s (not found)", where, r.Canary)
	}
	for _, m := range others {
		id := backendID(r.Kind, m)
		w, err := backendWeight(m, k)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: backend %s: %w", where, id, err)
		}
		if w != 0 {
			return nil, nil, fmt.Errorf("%s: a third backend %s has weight %d; only the baseline %s and the canary %s may have traffic",
				where, id, w, r.Baseline, r.Canary)
		}
	}
	return base, canary, nil
}

// backendWeight is m's weight, or the kind's default when it has none (m
// is one of at least two backends: the baseline and the canary are there).
func backendWeight(m map[string]any, k kubeKind) (int64, error) {
	v, ok := m["weight"]
	if !ok || v == nil {
		if k.rulesPath == nil {
			return 0, errors.New("has no weight")
		}
		return k.defaultWeight, nil
	}
	num, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("weight %v is not a number", v)
	}
	if w, err := num.Int64(); err == nil {
		return w, nil
	}
	f, err := num.Float64()
	if err != nil {
		return 0, fmt.Errorf("weight %v is not a number", v)
	}
	if f > 0 && f < 1 {
		return 1, nil // some traffic: not zero
	}
	return int64(f), nil
}

// kubeAnnotations records t on the object; values are strings, empty ones
// are left out.
func kubeAnnotations(t Target) map[string]any {
	ann := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			ann[k] = v
		}
	}
	set(AnnotationCommandID, t.CommandID)
	set(AnnotationDeploymentID, t.DeploymentID)
	set(AnnotationCommit, t.Commit)
	if t.Seq != 0 {
		set(AnnotationSeq, strconv.FormatUint(t.Seq, 10))
	}
	set(AnnotationAction, string(t.Action))
	return ann
}

// deepCopyJSON copies a value decoded from JSON so that planKube never
// changes the object it was handed.
func deepCopyJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopyJSON(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = deepCopyJSON(e)
		}
		return s
	}
	return v
}

// get reads the object.
func (k *Kube) get(ctx context.Context, r KubeRoute, path string) (map[string]any, error) {
	obj, _, err := k.do(ctx, r, http.MethodGet, path, "", nil)
	return obj, err
}

// undoCreate deletes the object our apply created (only that one: the
// delete is conditional on its uid) and returns a permanent error either way.
func (k *Kube) undoCreate(ctx context.Context, r KubeRoute, path string, created map[string]any) error {
	meta, _ := created["metadata"].(map[string]any)
	uid, _ := meta["uid"].(string)
	body, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "DeleteOptions",
		"preconditions": map[string]any{"uid": uid}})
	_, _, err := k.do(ctx, r, http.MethodDelete, path, "application/json", body)
	if err != nil {
		return Permanentf("kubernetes: %s %s/%s was deleted while canaryd applied its weights, and the apply created it anew with canaryd's fields only; deleting that failed, delete it by hand: %w",
			r.Kind, r.Namespace, r.Name, err)
	}
	return Permanentf("kubernetes: %s %s/%s not found: it was deleted while canaryd applied its weights (the object the apply created was deleted again)",
		r.Kind, r.Namespace, r.Name)
}

// do sends one request and decodes the object it returns, or turns the
// API server's refusal into a KubeStatusError, permanent or not.
func (k *Kube) do(ctx context.Context, r KubeRoute, method, path, contentType string, body []byte) (map[string]any, int, error) {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	u := *k.server
	p, q, _ := strings.Cut(path, "?")
	u.Path = strings.TrimSuffix(u.Path, "/") + p
	u.RawQuery = q
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, 0, Permanent(fmt.Errorf("kubernetes: %s %s: %w", method, p, err))
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "canaryd")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if k.cfg.TokenFile != "" {
		tok, err := readToken(k.cfg.TokenFile)
		if err != nil {
			// The kubelet replaces the file atomically; a read that fails
			// now may not fail on retry.
			return nil, 0, fmt.Errorf("kubernetes: token_file: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("kubernetes: %s %s: %w", method, p, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxKubeBody))
	if err != nil {
		return nil, 0, fmt.Errorf("kubernetes: %s %s: read response: %w", method, p, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, resp.StatusCode, statusError(r, method, p, resp.StatusCode, raw)
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // weights and everything else written back as read
	if err := dec.Decode(&obj); err != nil {
		return nil, 0, fmt.Errorf("kubernetes: %s %s: decode response: %w", method, p, err)
	}
	if kind, _ := obj["kind"].(string); kind != r.Kind && (method != http.MethodDelete || kind != "Status") {
		return nil, 0, Permanentf("kubernetes: %s %s: got a %q, want a %s", method, p, kind, r.Kind)
	}
	return obj, resp.StatusCode, nil
}

func readToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return tok, nil
}

// KubeStatusError is the API server's refusal of a request: its HTTP status
// code and the Status object it sent (reason, message). Apply returns it
// wrapped, in a PermanentError when retrying will not mend it.
type KubeStatusError struct {
	Method  string
	Path    string // the object's path, without the query
	Code    int    // HTTP status
	Reason  string // Status.reason: NotFound, Invalid, Conflict, Forbidden, ...
	Message string // Status.message, or the body's start when it is no Status
	Hint    string // what to do about it, if we know
}

func (e *KubeStatusError) Error() string {
	msg := fmt.Sprintf("kubernetes: %s %s: %d", e.Method, e.Path, e.Code)
	if e.Reason != "" {
		msg += " " + e.Reason
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// statusError classifies a refusal: 400, 401, 403, 404, 405, 415 and 422
// are permanent (the request itself is wrong, or canaryd may not make it);
// 409 (the object changed since we read it), 429 and 5xx are not.
func statusError(r KubeRoute, method, path string, code int, body []byte) error {
	e := &KubeStatusError{Method: method, Path: path, Code: code}
	var st struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		e.Message, e.Reason = st.Message, st.Reason
	} else {
		e.Message = strings.TrimSpace(string(body[:min(len(body), 512)]))
	}
	switch code {
	case http.StatusUnauthorized:
		e.Hint = "the API server did not accept canaryd's credentials: check token_file or the client certificate"
	case http.StatusForbidden:
		e.Hint = fmt.Sprintf("RBAC: canaryd's service account needs get and patch on %s in namespace %s", r.resource(), r.Namespace)
		if method == http.MethodPatch && strings.Contains(e.Message, "cannot create") {
			// An apply of an object that is gone is a create, which
			// canaryd's Role rightly does not allow.
			e.Hint = fmt.Sprintf("the %s was deleted while canaryd applied its weights; canaryd does not create routes", r.Kind)
		}
	case http.StatusNotFound:
		e.Hint = fmt.Sprintf("no %s %s/%s, or the %s CRD is not installed", r.Kind, r.Namespace, r.Name, r.resource())
	}
	switch code {
	case http.StatusConflict, http.StatusTooManyRequests:
		return e
	}
	if code >= 500 || code < 400 {
		return e
	}
	return Permanent(e)
}
