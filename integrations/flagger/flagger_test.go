package flagger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/fluxcd/flagger/pkg/controller"
	"github.com/fluxcd/flagger/pkg/metrics/observers"
	"github.com/fluxcd/flagger/pkg/metrics/providers"
	"sigs.k8s.io/yaml"

	"github.com/inferensys/canaryd/internal/canarydtest"
)

// The files the tests read: the examples users copy.
const (
	canaryFile   = "../../deploy/flagger/canary.yaml"
	templateFile = "../../deploy/flagger/metrictemplate.yaml"
	// defaultCanaryd is where the examples' webhooks point; tests rewrite
	// the host to the canaryd they run.
	defaultCanaryd = "http://canaryd.canaryd.svc:8080"
)

func TestMain(m *testing.M) { canarydtest.Main(m) }

// hookTypes are the webhook types of Flagger v1.36, each of which the
// example Canary calls canaryd for.
var hookTypes = []flaggerv1.HookType{
	flaggerv1.ConfirmRolloutHook, flaggerv1.PreRolloutHook, flaggerv1.RolloutHook,
	flaggerv1.ConfirmTrafficIncreaseHook, flaggerv1.ConfirmPromotionHook, flaggerv1.PostRolloutHook,
	flaggerv1.RollbackHook, flaggerv1.EventHook,
}

func readStrict(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("\n---\n")) {
		t.Fatalf("%s: want one document", file)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// canary parses deploy/flagger/canary.yaml into Flagger's own type.
func canary(t *testing.T) *flaggerv1.Canary {
	t.Helper()
	var cd flaggerv1.Canary
	readStrict(t, canaryFile, &cd)
	if cd.Kind != "Canary" || cd.APIVersion != "flagger.app/v1beta1" {
		t.Fatalf("%s: %s %s; want flagger.app/v1beta1 Canary", canaryFile, cd.APIVersion, cd.Kind)
	}
	return &cd
}

func metricTemplate(t *testing.T) *flaggerv1.MetricTemplate {
	t.Helper()
	var mt flaggerv1.MetricTemplate
	readStrict(t, templateFile, &mt)
	if mt.Kind != "MetricTemplate" || mt.APIVersion != "flagger.app/v1beta1" {
		t.Fatalf("%s: %s %s; want flagger.app/v1beta1 MetricTemplate", templateFile, mt.APIVersion, mt.Kind)
	}
	return &mt
}

func TestExamplesParse(t *testing.T) {
	cd, mt := canary(t), metricTemplate(t)
	a := cd.GetAnalysis()
	if a == nil || a.StepWeight <= 0 || a.MaxWeight <= a.StepWeight || a.Threshold <= 0 || a.Interval == "" {
		t.Fatalf("canary analysis %+v: want interval, threshold, stepWeight < maxWeight", a)
	}
	for _, ht := range hookTypes {
		n := 0
		for _, w := range a.Webhooks {
			if w.Type != ht {
				continue
			}
			n++
			if want := defaultCanaryd + "/v1/flagger/" + string(ht); w.URL != want {
				t.Errorf("%s hook URL %s; want %s", ht, w.URL, want)
			}
			if w.Metadata == nil || (*w.Metadata)["rollout"] != "support-agent" {
				t.Errorf("%s hook: want metadata rollout: support-agent", ht)
			}
		}
		if n != 1 {
			t.Errorf("%d %s hooks; want 1", n, ht)
		}
	}
	if len(a.Webhooks) != len(hookTypes) {
		t.Errorf("%d webhooks; want %d", len(a.Webhooks), len(hookTypes))
	}
	if len(a.Metrics) != 1 {
		t.Fatalf("%d metrics; want 1", len(a.Metrics))
	}
	m := a.Metrics[0]
	if m.TemplateRef == nil || m.TemplateRef.Name != mt.Name || m.TemplateRef.Namespace != mt.Namespace {
		t.Errorf("metric %s: templateRef %+v; want %s/%s", m.Name, m.TemplateRef, mt.Namespace, mt.Name)
	}
	// Only canaryd_judge_verdict 3 (fail) is a failed check.
	for v, want := range []bool{true, true, true, false} {
		if got := thresholdOK(m, float64(v)); got != want {
			t.Errorf("verdict %d passes the metric check: %v; want %v", v, got, want)
		}
	}
	if mt.Spec.Provider.Type != "prometheus" {
		t.Errorf("metric template provider %q; want prometheus", mt.Spec.Provider.Type)
	}
	q, err := renderQuery(cd, mt)
	if want := `max(canaryd_judge_verdict{rollout="support-agent"})`; err != nil || q != want {
		t.Errorf("query %q, %v; want %q", q, err, want)
	}
}

// thresholdOK is the threshold check of Flagger's runMetricChecks
// (pkg/controller/scheduler_metrics.go, v1.36.1), which is unexported:
// thresholdRange when set, else threshold as a maximum.
func thresholdOK(m flaggerv1.CanaryMetric, val float64) bool {
	if tr := m.ThresholdRange; tr != nil {
		if tr.Min != nil && val < *tr.Min {
			return false
		}
		if tr.Max != nil && val > *tr.Max {
			return false
		}
		return true
	}
	//lint:ignore SA1019 Flagger's own check reads it when thresholdRange is unset
	return val <= m.Threshold
}

// renderQuery renders the template's query as Flagger does: RenderQuery
// with the model of toMetricModel (unexported; the fields it sets).
func renderQuery(cd *flaggerv1.Canary, mt *flaggerv1.MetricTemplate) (string, error) {
	m := cd.GetAnalysis().Metrics[0]
	return observers.RenderQuery(mt.Spec.Query, flaggerv1.MetricTemplateModel{
		Name: cd.Name, Namespace: cd.Namespace, Target: cd.Spec.TargetRef.Name,
		Interval: m.Interval, Variables: m.TemplateVariables,
	})
}

// prometheus is a stand-in for Prometheus that answers the one query the
// metric template renders to, max(canaryd_judge_verdict{rollout="R"}), by
// scraping canaryd's /metrics at query time: an instant query over one
// series. With canaryd away it answers an empty vector, as Prometheus does
// once the series is stale.
func prometheus(t *testing.T, canarydURL string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("query")
		rollout, ok := strings.CutPrefix(q, `max(canaryd_judge_verdict{rollout="`)
		rollout, ok2 := strings.CutSuffix(rollout, `"})`)
		if r.URL.Path != "/api/v1/query" || !ok || !ok2 {
			http.Error(w, "unsupported query "+q, http.StatusBadRequest)
			return
		}
		result := "[]"
		if v, err := scrape(canarydURL, fmt.Sprintf(`canaryd_judge_verdict{rollout=%q}`, rollout)); err == nil {
			result = fmt.Sprintf(`[{"metric":{},"value":[%d,%q]}]`, time.Now().Unix(), v)
		}
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":%s}}`, result)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// scrape returns the value of series in canaryd's /metrics.
func scrape(base, series string) (string, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no series %s", series)
}

// flagger calls canaryd with Flagger's own client code: CallWebhook,
// CallEventWebhook, and the Prometheus provider on the rendered template
// query. Its canary is the example Canary with the hooks' host rewritten.
type flagger struct {
	t      *testing.T
	cd     *flaggerv1.Canary
	metric flaggerv1.CanaryMetric
	prom   *providers.PrometheusProvider
	query  string
	events []string // messages sent to the event hook
}

func newFlagger(t *testing.T, canarydURL string) *flagger {
	t.Helper()
	cd, mt := canary(t), metricTemplate(t)
	for i, w := range cd.Spec.Analysis.Webhooks {
		rest, ok := strings.CutPrefix(w.URL, defaultCanaryd)
		if !ok {
			t.Fatalf("hook %s: URL %s not on %s", w.Name, w.URL, defaultCanaryd)
		}
		cd.Spec.Analysis.Webhooks[i].URL = canarydURL + rest
	}
	mt.Spec.Provider.Address = prometheus(t, canarydURL).URL
	p, err := providers.NewPrometheusProvider(mt.Spec.Provider, nil)
	if err != nil {
		t.Fatal(err)
	}
	q, err := renderQuery(cd, mt)
	if err != nil {
		t.Fatal(err)
	}
	cd.Status.Phase = flaggerv1.CanaryPhaseInitialized
	return &flagger{t: t, cd: cd, metric: cd.Spec.Analysis.Metrics[0], prom: p, query: q}
}

// answer is what a hook call came to.
type answer int

const (
	yes     answer = iota // 2xx
	no                    // canaryd answered 4xx with its one line
	failure               // no answer from canaryd: Flagger's error path
)

func (a answer) String() string { return [...]string{"yes", "no", "failure"}[a] }

// hook calls the Canary's webhook of type ht with the phase Flagger passes
// it (CallWebhook), and says what came of it: Flagger itself sees only nil
// (go on) or an error (the reply's body, or the transport's error).
func (f *flagger) hook(ht flaggerv1.HookType) (answer, string) {
	f.t.Helper()
	phase := f.cd.Status.Phase
	switch ht {
	case flaggerv1.PreRolloutHook, flaggerv1.RolloutHook, flaggerv1.ConfirmTrafficIncreaseHook, flaggerv1.ConfirmPromotionHook:
		phase = flaggerv1.CanaryPhaseProgressing
	}
	for _, w := range f.cd.Spec.Analysis.Webhooks {
		if w.Type != ht {
			continue
		}
		err := controller.CallWebhook(*f.cd, phase, w)
		switch {
		case err == nil:
			return yes, ""
		case strings.HasPrefix(err.Error(), "canaryd: "):
			return no, err.Error()
		default:
			return failure, err.Error()
		}
	}
	f.t.Fatalf("no %s hook", ht)
	return failure, ""
}

// event sends a message to the event hook as Flagger's recordEvent*f do
// (CallEventWebhook); an error fails the test unless canaryd is meant to be
// away (tolerate).
func (f *flagger) event(tolerate bool, format string, args ...any) {
	f.t.Helper()
	msg := fmt.Sprintf(format, args...)
	f.events = append(f.events, msg)
	for _, w := range f.cd.Spec.Analysis.Webhooks {
		if w.Type == flaggerv1.EventHook {
			if err := controller.CallEventWebhook(f.cd, w, msg, "Normal"); err != nil && !tolerate {
				f.t.Fatalf("event hook %q: %v", msg, err)
			}
		}
	}
}

// check runs the metric as Flagger's runMetricChecks does: the provider's
// RunQuery, then the threshold. ok false with err nil is a failed check
// (verdict 3); an error is Flagger's "no values"/"query failed" path.
func (f *flagger) check() (val float64, ok bool, err error) {
	val, err = f.prom.RunQuery(f.query)
	if err != nil {
		return 0, false, err
	}
	return val, thresholdOK(f.metric, val), nil
}

// verdict reads canaryd's judge endpoint for the test's messages.
func verdict(t *testing.T, base, rollout string) map[string]any {
	t.Helper()
	resp, err := http.Get(base + "/v1/rollouts/" + rollout + "/judge")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("judge: status %d: %v", resp.StatusCode, err)
	}
	return v
}
