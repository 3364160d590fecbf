package daemon_test

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/sink"
)

// metricsSpecs: a short drive-mode rollout of two steps, for the tests of
// what /metrics shows (the good canary is promoted, the bad one rolled back).
const metricsSpecs = `
rollout: good
baseline: v1
canary: v2
alpha: 0.00002
steps:
  - {weight: 20, min_duration: 2s, min_canary_events: 200}
  - {weight: 50, min_duration: 2s, min_canary_events: 200}
  - {weight: 100}
metrics: {error_rate: {margin: 2.0}}
---
rollout: bad
baseline: v1
canary: v2
alpha: 0.01
steps:
  - {weight: 20, min_duration: 2s, min_canary_events: 200}
  - {weight: 50, min_duration: 2s, min_canary_events: 200}
  - {weight: 100}
metrics: {error_rate: {margin: 2.0}}
`

// debianTool returns the path of a command from a Debian package that a
// test needs. A missing one fails the test where `make deps` installs it
// (root on Debian: .ci/run does) and skips it elsewhere, saying what to
// install.
func debianTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	_, debErr := os.Stat("/etc/debian_version")
	if os.Geteuid() == 0 && debErr == nil {
		t.Fatalf("%s is required by this test and is not installed: run `make deps` (apt-get install %s)", name, pkg)
	}
	t.Skipf("%s is not installed (and this is not root on Debian, where make deps installs it): sudo apt-get install %s", name, pkg)
	return ""
}

// startMetricsRollout runs canaryd on kfake with metricsSpecs until the
// test ends, and returns it with the function that starts a simulated fleet
// behind both rollouts (it runs until the test ends).
func startMetricsRollout(t *testing.T, evictAfter time.Duration) (*daemon.Daemon, func()) {
	t.Helper()
	brokers := kafkatest.Brokers(t, kafkatest.KindFake)
	tp := newTopics(t)
	d := startDaemon(t, brokers, tp, metricsSpecs, metrics.NewSet(), func(c *daemon.Config) { c.EvictAfter = evictAfter })
	good := loadtest.DefaultProfile()
	bad := loadtest.DefaultProfile()
	bad.ErrorRateMult = 4
	bad.ToolLatencyMult = 1.5
	fleet, err := loadtest.NewFleet(loadtest.FleetConfig{
		Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, Seed: 11,
		Rollouts: []loadtest.Rollout{
			{Name: "good", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: good, Rate: 300},
			{Name: "bad", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: bad, Rate: 300},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d, func() {
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			switch err := fleet.Run(ctx); {
			case err != nil && ctx.Err() != nil:
				// What it had not flushed when the test ended: not what
				// these tests check.
				t.Logf("fleet, stopped: %v", err)
			case err != nil:
				t.Errorf("fleet: %v", err)
			}
		})
		t.Cleanup(func() { stop(); wg.Wait() })
	}
}

// badEnded reports whether the bad rollout of metricsSpecs was rolled
// back. The good one is promoted later (its low alpha needs more evidence):
// the tests do not wait for it.
func badEnded(d *daemon.Daemon) bool {
	st, _ := d.Status("bad")
	return st.Final != ""
}

// TestMetricsPromtool runs `promtool check metrics` (Debian's prometheus
// package) on the live /metrics of a canaryd that judged a rollout to its
// end: no finding. Then the ended rollouts' series go after EvictAfter.
func TestMetricsPromtool(t *testing.T) {
	t.Parallel()
	promtool := debianTool(t, "promtool", "prometheus")
	const evictAfter = 8 * time.Second
	d, startFleet := startMetricsRollout(t, evictAfter)
	startFleet()
	took := waitFor(t, 90*time.Second, "the bad rollout rolled back", func() bool { return badEnded(d) })
	body := get(t, "http://"+d.HTTPAddr()+"/metrics")
	t.Logf("bad rolled back after %v; /metrics: %d lines", took.Round(time.Millisecond), strings.Count(body, "\n"))

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("promtool check metrics: %v; %d findings:\n%s", err, strings.Count(string(out), "\n"), out)
	}
	for _, want := range []string{
		`canaryd_rollout_info{rollout="bad",baseline="v1",canary="v2",deployment_id="",commit="",phase="rollback",mode="drive"} 1`,
		`canaryd_rollout_info{rollout="good",baseline="v1",canary="v2",deployment_id="",commit="",phase=`,
		`canaryd_rollout_final{rollout="bad",final="rollback"} 1`,
		`canaryd_rollout_weight{rollout="bad"} 0`,
		`canaryd_test_evalue{rollout="good",test="error_rate",role="rollback"} `,
		`canaryd_test_threshold{rollout="bad",test="error_rate",role="rollback"} `,
		`canaryd_test_evalue{rollout="bad",test="error_rate",role="rollback"} `,
		`canaryd_latency_seconds_bucket{rollout="bad",version="v2",kind="tool",name="search_docs",le="0.25"} `,
		`canaryd_judge_verdict{rollout="bad"} 3`,
		"# HELP canaryd_latency_seconds Duration of requests",
		"# TYPE canaryd_latency_seconds histogram",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	checkDocumented(t, body)

	// EvictAfter after the rollout ended, its series are gone but
	// canaryd_judge_verdict (controllers read it while the spec exists)
	// and canaryd_events_late_total (held by the consumer).
	left := func() []string {
		var out []string
		for line := range strings.Lines(get(t, "http://"+d.HTTPAddr()+"/metrics")) {
			if strings.Contains(line, `rollout="bad"`) && !strings.HasPrefix(line, "canaryd_judge_verdict{") && !strings.HasPrefix(line, "canaryd_events_late_total{") {
				out = append(out, strings.TrimSpace(line))
			}
		}
		return out
	}
	last := -1
	took = waitFor(t, evictAfter+30*time.Second, "the bad rollout's series evicted", func() bool {
		l := left()
		if len(l) != last && len(l) > 0 {
			t.Logf("%d series of bad left, e.g. %s", len(l), l[0])
		}
		last = len(l)
		return len(l) == 0
	})
	t.Logf("bad's series evicted %v after it ended (EvictAfter %v)", took.Round(time.Millisecond), evictAfter)
}

// checkDocumented: every family of the exposition is in sink.Families, with
// the type it is written with.
func checkDocumented(t *testing.T, body string) {
	t.Helper()
	n := 0
	for line := range strings.Lines(body) {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		n++
		fam, ok := sink.LookupFamily(f[2])
		switch {
		case !ok:
			t.Errorf("family %s is not in sink.Families", f[2])
		case fam.Type != f[3]:
			t.Errorf("family %s is written as a %s; sink.Families says %s", f[2], f[3], fam.Type)
		}
	}
	if n < 50 {
		t.Errorf("/metrics has %d TYPE lines; want a family each (≥ 50)", n)
	}
}

// dashboard is what TestGrafanaDashboard reads of deploy/grafana/canaryd.json.
type dashboard struct {
	Panels []struct {
		Title   string
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string
		}
	}
	Annotations struct {
		List []struct {
			Name string
			Expr string
		}
	}
	Templating struct {
		List []struct {
			Name, Type string
			Query      json.RawMessage
		}
	}
}

// mayBeEmpty: the dashboard's queries ("panel/refId", "annotation name")
// that may return nothing in the scenario of TestGrafanaDashboard, for any
// rollout or for one ("…#rollout"), and why. Any other query must return
// at least one series for each rollout.
var mayBeEmpty = map[string]string{
	"SRM: canary share of requests vs weight/C": "the SRM test reports only once the step has settled with enough requests per version; a short step can end first",
	"Dead letters and late events/B":            "the simulated fleet writes only valid events: nothing is rejected",
	"Dead letters and late events/C":            "the fleet's events arrive in order and on time: none is late",
	"Final/A#good":                              "the good rollout is still running when the test ends: its low alpha needs more evidence to promote than the test waits for",
	"annotation Gate changes#good":              "a drive-mode rollout's gate stays wait until it ends, and the good one has not",
}

// TestGrafanaDashboard runs a real Prometheus (Debian's prometheus package)
// scraping a canaryd every second through a short simulated rollout, then
// runs every query of deploy/grafana/canaryd.json through Prometheus' HTTP
// API, for each rollout: the template variable's, every panel target's and
// the annotations'. A query that errors fails the test, and so does one
// that returns no series unless mayBeEmpty says why it may.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	bin := debianTool(t, "prometheus", "prometheus")
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "canaryd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash dashboard
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("canaryd.json: %v", err)
	}
	start := time.Now()
	d, startFleet := startMetricsRollout(t, 10*time.Minute)
	prom := startPrometheus(t, bin, d.HTTPAddr())
	// Prometheus watches the rollouts from their start, as in production.
	waitFor(t, 30*time.Second, "Prometheus scraped canaryd", func() bool {
		r, err := prom.query(`canaryd_judge_verdict{rollout="bad"} == 0`)
		return err == nil && len(r) > 0
	})
	startFleet()

	// The samples are in when Prometheus has the bad rollout's final
	// outcome, the good one's e-values and a rate of the latency histogram.
	waitFor(t, 90*time.Second, "bad rolled back, as Prometheus sees it", func() bool {
		r, err := prom.query(`canaryd_rollout_final{rollout="bad"}`)
		return err == nil && len(r) > 0
	})
	waitFor(t, 30*time.Second, "good's e-values", func() bool {
		r, err := prom.query(`canaryd_test_evalue{rollout="good"}`)
		return err == nil && len(r) > 0
	})
	waitFor(t, 30*time.Second, "rates of the latency histogram", func() bool {
		r, err := prom.query(`sum(rate(canaryd_latency_seconds_count[10s])) > 0`)
		return err == nil && len(r) > 0
	})
	// The good rollout's canary has requests in two scrapes of the last
	// 10 s (the panels' rates over [10s] need them): its traffic starts
	// with its first set_weight, which a loaded machine may delay.
	waitFor(t, 30*time.Second, "a rate of the good canary's requests", func() bool {
		r, err := prom.query(`sum(rate(canaryd_requests_total{rollout="good"}[10s]) * on (rollout, version) group_left () label_replace(max by (rollout, baseline, canary) (canaryd_rollout_info{rollout="good"}), "version", "$1", "canary", "(.+)")) > 0`)
		return err == nil && len(r) > 0
	})
	end := time.Now()
	t.Logf("bad rolled back and scraped after %v", end.Sub(start).Round(time.Millisecond))

	// The rollout variable: label_values(metric, label).
	var varQuery string
	for _, v := range dash.Templating.List {
		if v.Name == "rollout" {
			var q struct{ Query string }
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Fatalf("rollout variable's query: %v", err)
			}
			varQuery = q.Query
		}
	}
	m := regexp.MustCompile(`^label_values\((\w+), *(\w+)\)$`).FindStringSubmatch(varQuery)
	if m == nil {
		t.Fatalf("rollout variable's query %q; want label_values(metric, label)", varQuery)
	}
	values, err := prom.labelValues(m[2], m[1])
	if err != nil {
		t.Fatalf("%s: %v", varQuery, err)
	}
	if !slices.Contains(values, "good") || !slices.Contains(values, "bad") {
		t.Errorf("%s = %v; want good and bad among them", varQuery, values)
	}

	type query struct{ name, expr string }
	var queries []query
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries = append(queries, query{p.Title + "/" + tg.RefID, tg.Expr})
		}
	}
	for _, a := range dash.Annotations.List {
		if a.Expr != "" {
			queries = append(queries, query{"annotation " + a.Name, a.Expr})
		}
	}
	ran := 0
	for _, rollout := range []string{"good", "bad"} {
		for _, q := range queries {
			expr := strings.NewReplacer("$rollout", rollout, "$__rate_interval", "10s").Replace(q.expr)
			series, err := prom.queryRange(expr, start, end, time.Second)
			ran++
			why := cmp.Or(mayBeEmpty[q.name+"#"+rollout], mayBeEmpty[q.name])
			switch {
			case err != nil:
				t.Errorf("%s (rollout %s): %v\nquery: %s", q.name, rollout, err, expr)
			case series == 0 && why == "":
				t.Errorf("%s (rollout %s): no series\nquery: %s", q.name, rollout, expr)
			case series == 0:
				t.Logf("%s (rollout %s): empty, as it may be: %s", q.name, rollout, why)
			}
		}
	}
	t.Logf("%d queries of %d panels and %d annotations run for 2 rollouts", ran, len(dash.Panels), len(dash.Annotations.List))
}

// prometheus is a Prometheus server's HTTP API.
type prometheus struct{ url string }

// startPrometheus runs Prometheus (bin) on a free port with its storage in
// a temp dir, scraping target's /metrics every second, until the test
// ends, and waits until it is ready.
func startPrometheus(t *testing.T, bin, target string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"+
		"scrape_configs:\n  - job_name: canaryd\n    static_configs: [{targets: [%q]}]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	logs, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logs.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logs.Name()); err == nil && len(b) > 0 {
				t.Logf("prometheus log:\n%s", b)
			}
		}
	})
	p := &prometheus{url: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logs.Name())
			t.Fatalf("prometheus exited: %v\n%s", err, b)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus not ready after 30s")
		}
	}
}

// api calls a Prometheus API endpoint and decodes its data.
func (p *prometheus) api(path string, params url.Values, data any) error {
	resp, err := http.PostForm(p.url+path, params)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status, Error, ErrorType string
		Warnings                 []string
		Data                     json.RawMessage
	}
	if err := json.NewDecoder(bufio.NewReader(resp.Body)).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s: %s", body.ErrorType, body.Error, strings.Join(body.Warnings, "; "))
	}
	if len(body.Warnings) > 0 {
		return fmt.Errorf("warnings: %s", strings.Join(body.Warnings, "; "))
	}
	return json.Unmarshal(body.Data, data)
}

// query runs an instant query and returns its series.
func (p *prometheus) query(expr string) ([]json.RawMessage, error) {
	var data struct{ Result []json.RawMessage }
	err := p.api("/api/v1/query", url.Values{"query": {expr}}, &data)
	return data.Result, err
}

// queryRange runs a range query and returns how many series have a point.
func (p *prometheus) queryRange(expr string, start, end time.Time, step time.Duration) (int, error) {
	var data struct {
		Result []struct{ Values [][2]any }
	}
	err := p.api("/api/v1/query_range", url.Values{"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)}, "end": {strconv.FormatInt(end.Unix()+1, 10)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}}, &data)
	n := 0
	for _, s := range data.Result {
		if len(s.Values) > 0 {
			n++
		}
	}
	return n, err
}

// labelValues returns the values of label among the series of metric.
func (p *prometheus) labelValues(label, metric string) ([]string, error) {
	resp, err := http.Get(p.url + "/api/v1/label/" + label + "/values?" + url.Values{"match[]": {metric}}.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status, Error string
		Data          []string
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("%s", body.Error)
	}
	return body.Data, nil
}
