package argo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/argoproj/argo-rollouts/analysis"
	"github.com/argoproj/argo-rollouts/controller/metrics"
	"github.com/argoproj/argo-rollouts/metricproviders"
	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/validation"
	"github.com/argoproj/argo-rollouts/pkg/client/clientset/versioned/fake"
	informers "github.com/argoproj/argo-rollouts/pkg/client/informers/externalversions"
	analysisutil "github.com/argoproj/argo-rollouts/utils/analysis"
	"github.com/argoproj/argo-rollouts/utils/queue"
	"github.com/argoproj/argo-rollouts/utils/record"
	log "github.com/sirupsen/logrus"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kubeinformers "k8s.io/client-go/informers"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/yaml"

	"github.com/inferensys/canaryd/internal/canarydtest"
)

// The files the tests read: the examples users copy.
const (
	templatesFile = "../../deploy/argo/analysistemplate.yaml"
	rolloutFile   = "../../deploy/argo/rollout.yaml"
	// defaultCanaryd is the canaryd the examples point at; tests pass the
	// template's canaryd argument instead, as a user would.
	defaultCanaryd = "http://canaryd.canaryd.svc:8080"
)

func TestMain(m *testing.M) {
	log.SetLevel(log.WarnLevel) // Argo's controller logs every reconciliation at info
	canarydtest.Main(m)
}

// documents splits a file of YAML documents.
func documents(t *testing.T, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for d := range bytes.SplitSeq(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// templates parses deploy/argo/analysistemplate.yaml into Argo's own types,
// refusing unknown fields, and returns them by name.
func templates(t *testing.T) map[string]*v1alpha1.AnalysisTemplate {
	t.Helper()
	out := map[string]*v1alpha1.AnalysisTemplate{}
	for _, d := range documents(t, templatesFile) {
		var tpl v1alpha1.AnalysisTemplate
		if err := yaml.UnmarshalStrict(d, &tpl); err != nil {
			t.Fatalf("%s: %v", templatesFile, err)
		}
		if tpl.Kind != "AnalysisTemplate" || tpl.APIVersion != "argoproj.io/v1alpha1" {
			t.Fatalf("%s: %s %s; want argoproj.io/v1alpha1 AnalysisTemplate", templatesFile, tpl.APIVersion, tpl.Kind)
		}
		out[tpl.Name] = &tpl
	}
	return out
}

func rollout(t *testing.T) *v1alpha1.Rollout {
	t.Helper()
	docs := documents(t, rolloutFile)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents; want 1", rolloutFile, len(docs))
	}
	var ro v1alpha1.Rollout
	if err := yaml.UnmarshalStrict(docs[0], &ro); err != nil {
		t.Fatalf("%s: %v", rolloutFile, err)
	}
	return &ro
}

// hashes stand for the pod-template-hashes of the ReplicaSets, which the
// agents report as their version.
const (
	stableHash = "6d4f8c7b9"
	canaryHash = "5b7c9d8f6"
)

// rolloutArgs builds a step's (or the background analysis's) arguments the
// way the rollout controller does (BuildArgumentsForRolloutAnalysisRun),
// from ReplicaSets carrying the hashes above, plus canaryd's address.
func rolloutArgs(t *testing.T, ro *v1alpha1.Rollout, args []v1alpha1.AnalysisRunArgument, canaryd string) []v1alpha1.Argument {
	t.Helper()
	rs := func(hash string) *appsv1.ReplicaSet {
		return &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
			Name: ro.Name + "-" + hash, Labels: map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: hash}}}
	}
	out, err := analysisutil.BuildArgumentsForRolloutAnalysisRun(args, rs(stableHash), rs(canaryHash), ro)
	if err != nil {
		t.Fatal(err)
	}
	return append(out, v1alpha1.Argument{Name: "canaryd", Value: &canaryd})
}

// newRun makes the AnalysisRun Argo would make of tpl and args
// (NewAnalysisRunFromTemplates: the template's args merged with the
// rollout's, every arg resolved).
func newRun(t *testing.T, tpl *v1alpha1.AnalysisTemplate, args []v1alpha1.Argument, name string) *v1alpha1.AnalysisRun {
	t.Helper()
	run, err := analysisutil.NewAnalysisRunFromTemplates([]*v1alpha1.AnalysisTemplate{tpl}, nil, args,
		nil, nil, nil, nil, name, "", "agents")
	if err != nil {
		t.Fatalf("NewAnalysisRunFromTemplates(%s): %v", tpl.Name, err)
	}
	return run
}

// resolved returns the run's only metric with its args substituted as the
// analysis controller does before it measures (ResolveMetricArgs).
func resolved(t *testing.T, run *v1alpha1.AnalysisRun) v1alpha1.Metric {
	t.Helper()
	if len(run.Spec.Metrics) != 1 {
		t.Fatalf("run %s: %d metrics; want 1", run.Name, len(run.Spec.Metrics))
	}
	m, err := analysisutil.ResolveMetricArgs(run.Spec.Metrics[0], run.Spec.Args)
	if err != nil {
		t.Fatalf("resolve %s: %v", run.Name, err)
	}
	if strings.Contains(m.Provider.Web.URL, "{{") {
		t.Fatalf("run %s: unresolved argument in %s", run.Name, m.Provider.Web.URL)
	}
	return *m
}

func TestExamplesParse(t *testing.T) {
	tpls := templates(t)
	gate, guard := tpls["canaryd-gate"], tpls["canaryd-guard"]
	if gate == nil || guard == nil || len(tpls) != 2 {
		t.Fatalf("templates %v; want canaryd-gate and canaryd-guard", keys(tpls))
	}
	for name, tpl := range tpls {
		if err := analysisutil.ValidateMetrics(tpl.Spec.Metrics); err != nil {
			t.Errorf("%s: Argo refuses its metrics: %v", name, err)
		}
		for _, m := range tpl.Spec.Metrics {
			if m.Provider.Web == nil || m.Provider.Web.JSONPath != "{$.verdict}" {
				t.Errorf("%s/%s: want the web provider reading {$.verdict}", name, m.Name)
			}
			if m.Interval != "30s" || intOr(m.FailureLimit, 0) != 0 || intOr(m.ConsecutiveErrorLimit, -1) != 10 {
				t.Errorf("%s/%s: interval %q failureLimit %v consecutiveErrorLimit %v; want 30s, 0, 10",
					name, m.Name, m.Interval, m.FailureLimit, m.ConsecutiveErrorLimit)
			}
		}
	}
	g := gate.Spec.Metrics[0]
	// count and inconclusiveLimit are the budget: 120 measurements without
	// pass end the run Inconclusive (an inconclusiveLimit below count - 1
	// would end it earlier).
	if g.SuccessCondition != `result == "pass"` || g.FailureCondition != `result == "fail"` ||
		intOr(g.ConsecutiveSuccessLimit, 0) != 1 || intOr(g.Count, 0) != 120 || intOr(g.InconclusiveLimit, 0) != 120 {
		t.Errorf("canaryd-gate: success %q failure %q consecutiveSuccessLimit %v count %v inconclusiveLimit %v; want pass, fail, 1, 120, 120",
			g.SuccessCondition, g.FailureCondition, g.ConsecutiveSuccessLimit, g.Count, g.InconclusiveLimit)
	}
	b := guard.Spec.Metrics[0]
	// A success condition or a consecutiveSuccessLimit would end the guard
	// at its first pass and leave the rest of the rollout unguarded.
	if b.SuccessCondition != "" || b.FailureCondition != `result == "fail"` || b.ConsecutiveSuccessLimit != nil || b.Count != nil {
		t.Errorf("canaryd-guard: success %q failure %q consecutiveSuccessLimit %v count %v; want none, fail, none, none",
			b.SuccessCondition, b.FailureCondition, b.ConsecutiveSuccessLimit, b.Count)
	}

	ro := rollout(t)
	// The rollout controller's own checks: the spec, and the templates it
	// references as it gathers them (getRolloutReferencedResources): each
	// analysis step's as InlineAnalysis with its index, the background
	// one's as BackgroundAnalysis. A step's metric must not run
	// indefinitely (a count), or the rollout is InvalidSpec.
	for _, err := range validation.ValidateRollout(ro) {
		t.Errorf("Argo refuses the rollout: %v", err)
	}
	var refs validation.ReferencedResources
	for i, s := range ro.Spec.Strategy.Canary.Steps {
		if s.Analysis != nil {
			refs.AnalysisTemplatesWithType = append(refs.AnalysisTemplatesWithType, validation.AnalysisTemplatesWithType{
				AnalysisTemplates: referenced(t, tpls, s.Analysis.Templates), TemplateType: validation.InlineAnalysis,
				CanaryStepIndex: i, Args: s.Analysis.Args})
		}
	}
	if a := ro.Spec.Strategy.Canary.Analysis; a != nil {
		refs.AnalysisTemplatesWithType = append(refs.AnalysisTemplatesWithType, validation.AnalysisTemplatesWithType{
			AnalysisTemplates: referenced(t, tpls, a.Templates), TemplateType: validation.BackgroundAnalysis, Args: a.Args})
	}
	for _, err := range validation.ValidateRolloutReferencedResources(ro, refs) {
		t.Errorf("Argo refuses the rollout's analysis: %v", err)
	}
	c := ro.Spec.Strategy.Canary
	if c == nil || c.TrafficRouting == nil || c.TrafficRouting.Istio == nil {
		t.Fatal("rollout: want a canary strategy with Istio traffic routing")
	}
	if c.Analysis == nil || len(c.Analysis.Templates) != 1 || c.Analysis.Templates[0].TemplateName != "canaryd-guard" {
		t.Fatal("rollout: want the background analysis canaryd-guard")
	}
	bg := resolved(t, newRun(t, guard, rolloutArgs(t, ro, c.Analysis.Args, defaultCanaryd), "guard"))
	if want := defaultCanaryd + "/v1/rollouts/support-agent/judge?controller=argo&canary=" + canaryHash + "&baseline=" + stableHash; bg.Provider.Web.URL != want {
		t.Errorf("guard URL %s; want %s", bg.Provider.Web.URL, want)
	}
	weight, gates := int32(0), 0
	for i, s := range c.Steps {
		switch {
		case s.SetWeight != nil:
			weight = *s.SetWeight
		case s.Analysis != nil:
			if len(s.Analysis.Templates) != 1 || s.Analysis.Templates[0].TemplateName != "canaryd-gate" {
				t.Errorf("step %d: want the analysis canaryd-gate", i)
				continue
			}
			gates++
			m := resolved(t, newRun(t, gate, rolloutArgs(t, ro, s.Analysis.Args, defaultCanaryd), fmt.Sprint("gate", i)))
			want := fmt.Sprintf("%s/v1/rollouts/support-agent/judge?controller=argo&weight=%d&canary=%s&baseline=%s",
				defaultCanaryd, weight, canaryHash, stableHash)
			if m.Provider.Web.URL != want {
				t.Errorf("step %d: URL %s; want %s (the weight of the setWeight before it)", i, m.Provider.Web.URL, want)
			}
		}
	}
	if gates < 2 {
		t.Errorf("rollout: %d canaryd-gate steps; want one after each setWeight", gates)
	}
}

// referenced returns the templates refs name, deep copies (validation
// fills in placeholder values).
func referenced(t *testing.T, tpls map[string]*v1alpha1.AnalysisTemplate, refs []v1alpha1.AnalysisTemplateRef) []*v1alpha1.AnalysisTemplate {
	t.Helper()
	var out []*v1alpha1.AnalysisTemplate
	for _, r := range refs {
		tpl, ok := tpls[r.TemplateName]
		if !ok || (r.ClusterScope != nil && *r.ClusterScope) {
			t.Fatalf("rollout references template %s (cluster scope %v), not in %s", r.TemplateName, r.ClusterScope, templatesFile)
		}
		out = append(out, tpl.DeepCopy())
	}
	return out
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func intOr(v *intstr.IntOrString, def int) int {
	if v == nil {
		return def
	}
	return v.IntValue()
}

// measure takes one measurement of metric the way the analysis controller
// does: a provider from Argo's ProviderFactory (the web provider) and its Run.
func measure(t *testing.T, run *v1alpha1.AnalysisRun, metric v1alpha1.Metric) v1alpha1.Measurement {
	t.Helper()
	f := metricproviders.ProviderFactory{}
	p, err := f.NewProvider(*log.WithField("test", t.Name()), run.Namespace, metric)
	if err != nil {
		t.Fatal(err)
	}
	return p.Run(run, metric)
}

// controller is Argo Rollouts' own analysis controller, on fake clientsets:
// it reconciles AnalysisRuns, measuring through the real web provider.
type controller struct {
	client *fake.Clientset
}

func startController(t *testing.T) *controller {
	t.Helper()
	client := fake.NewSimpleClientset()
	kube := k8sfake.NewSimpleClientset()
	i := informers.NewSharedInformerFactory(client, 0)
	ki := kubeinformers.NewSharedInformerFactory(kube, 0)
	q := workqueue.NewNamedRateLimitingQueue(queue.DefaultArgoRolloutsRateLimiter(), "AnalysisRuns")
	c := analysis.NewController(analysis.ControllerConfig{
		KubeClientSet:        kube,
		ArgoProjClientset:    client,
		AnalysisRunInformer:  i.Argoproj().V1alpha1().AnalysisRuns(),
		JobInformer:          ki.Batch().V1().Jobs(),
		JobPodsInformer:      ki.Core().V1().Pods(),
		AnalysisRunWorkQueue: q,
		MetricsServer: metrics.NewMetricsServer(metrics.ServerConfig{
			Addr: "127.0.0.1:0", K8SRequestProvider: &metrics.K8sRequestsCountProvider{}}),
		Recorder: record.NewFakeEventRecorder(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	i.Start(ctx.Done())
	ki.Start(ctx.Done())
	i.WaitForCacheSync(ctx.Done())
	ki.WaitForCacheSync(ctx.Done())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx, 1); err != nil {
			t.Errorf("analysis controller: %v", err)
		}
	}()
	t.Cleanup(func() {
		// Run's workers leave only when the queue shuts down (the rollouts
		// controller's manager does that in the real process).
		cancel()
		q.ShutDown()
		<-done
		i.Shutdown()
		ki.Shutdown()
	})
	return &controller{client: client}
}

// analyze creates run and waits until the controller completes it, calling
// each (if not nil) with the run after every status update; each may return
// a change to the run's spec (e.g. terminate), applied with Update.
func (c *controller) analyze(t *testing.T, run *v1alpha1.AnalysisRun, each func(*v1alpha1.AnalysisRun) bool) *v1alpha1.AnalysisRun {
	t.Helper()
	ctx := context.Background()
	runs := c.client.ArgoprojV1alpha1().AnalysisRuns(run.Namespace)
	if _, err := runs.Create(ctx, run, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	seen := -1
	for {
		got, err := runs.Get(ctx, run.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Phase.Completed() {
			return got
		}
		if n := measurements(got); each != nil && n != seen {
			seen = n
			if each(got) {
				if _, err := runs.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s not completed after 2m: %+v", run.Name, got.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func measurements(run *v1alpha1.AnalysisRun) int {
	n := 0
	for _, r := range run.Status.MetricResults {
		n += len(r.Measurements)
	}
	return n
}

// phases lists a run's measurements' phases and values, for messages.
func phases(run *v1alpha1.AnalysisRun) string {
	var b strings.Builder
	for _, r := range run.Status.MetricResults {
		for _, m := range r.Measurements {
			fmt.Fprintf(&b, "%s(%s%s) ", m.Phase, m.Value, m.Message)
		}
		fmt.Fprintf(&b, "→ metric %s: %s", r.Phase, r.Message)
	}
	return b.String()
}
