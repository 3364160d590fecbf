package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
	"github.com/inferensys/canaryd/window"
)

// python returns the interpreter that has pyarrow: CANARYD_PYTHON (make test
// sets it to the venv scripts/pydeps.sh makes), else python3.
func python() string {
	if p := os.Getenv("CANARYD_PYTHON"); p != "" {
		return p
	}
	return "python3"
}

// TestArrowExportReadByPyarrow serves a rollout's windows as an Arrow IPC
// stream and reads them with pyarrow: the schema, the metadata and the
// counts must be what canaryd's own reader sees, and older windows must be
// folded (a row spanning more than one window) once the history is full.
func TestArrowExportReadByPyarrow(t *testing.T) {
	t.Parallel()
	py := python()
	if out, err := exec.Command(py, "-c", "import pyarrow").CombinedOutput(); err != nil {
		t.Fatalf("pyarrow is not importable by %s (%v: %s): `make test` installs it (scripts/pydeps.sh), or pip install pyarrow", py, err, out)
	}
	brokers := kafkatest.Brokers(t, kafkatest.KindFake)
	tp := newTopics(t)
	d := startDaemon(t, brokers, tp, loopSpecs, metrics.NewSet(), func(c *daemon.Config) {
		c.HistoryWindows = 4
		c.StateDir = t.TempDir()
	})
	p := loadtest.DefaultProfile()
	fleet, err := loadtest.NewFleet(loadtest.FleetConfig{Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, Seed: 3,
		Rollouts: []loadtest.Rollout{{Name: "good", Baseline: "v1", Canary: "v2", BaselineProfile: p, CanaryProfile: p, Rate: 300}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = fleet.Run(ctx) })
	defer func() { stop(); wg.Wait() }()
	waitFor(t, 60*time.Second, "8 windows of good judged", func() bool {
		st, ok := d.Status("good")
		return ok && st.Windows >= 8
	})

	resp, err := http.Get("http://" + d.HTTPAddr() + "/v1/rollouts/good/windows")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != sink.ArrowStreamType {
		t.Fatalf("GET windows: %s %q: %.200s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	if resp, err := http.Get("http://" + d.HTTPAddr() + "/v1/rollouts/nope/windows"); err != nil || resp.StatusCode != 404 {
		t.Fatalf("unknown rollout: %v %v; want 404", resp.Status, err)
	}
	file := filepath.Join(t.TempDir(), "good.arrows")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}

	// Our reader.
	rows, meta, err := window.ReadIPC(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]uint64{}
	for _, r := range rows {
		ours[r.Version+"/"+r.Segment.Kind.String()] += r.Agg.Count
	}

	// pyarrow.
	out, err := exec.Command(py, filepath.Join("testdata", "read_windows.py"), file).Output()
	if err != nil {
		t.Fatalf("read_windows.py: %v", err)
	}
	var got struct {
		Pyarrow  string
		Rows     int
		Fields   []string
		Types    []string
		Meta     map[string]string
		Counts   map[string]uint64
		MaxSpanS float64 `json:"max_span_s"`
		P95      int     `json:"p95_non_null"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("read_windows.py printed %s: %v", out, err)
	}
	t.Logf("pyarrow %s read %d rows, %d bytes; counts %v; types %v", got.Pyarrow, got.Rows, len(body), got.Counts, got.Types)
	var names []string
	for _, f := range window.Schema.Fields() {
		names = append(names, f.Name)
	}
	if !slices.Equal(got.Fields, names) {
		t.Errorf("pyarrow fields %v; want %v", got.Fields, names)
	}
	if got.Rows != len(rows) || got.Rows == 0 {
		t.Errorf("pyarrow read %d rows, ours %d", got.Rows, len(rows))
	}
	for k, v := range ours {
		if got.Counts[k] != v {
			t.Errorf("%s: pyarrow counts %d, ours %d", k, got.Counts[k], v)
		}
	}
	if got.Meta[window.MetaFormat] != "canaryd.windows" || got.Meta["canaryd.rollout"] != "good" || meta[window.MetaVersion] != got.Meta[window.MetaVersion] {
		t.Errorf("metadata %v", got.Meta)
	}
	if got.MaxSpanS <= 1 {
		t.Errorf("no folded row (longest row spans %vs; windows are 1s and the history keeps 4)", got.MaxSpanS)
	}
	if got.P95 == 0 || !strings.HasPrefix(got.Types[4], "timestamp[ns") {
		t.Errorf("p95 non-null %d, window_start type %s", got.P95, got.Types[4])
	}
	// Every request the judge counted is in the export.
	st, _ := d.Status("good")
	var judged, exported uint64
	for _, a := range st.Totals {
		judged += a.Requests
	}
	for k, v := range ours {
		if kind, ok := schemas.ParseKind([]byte(k[strings.IndexByte(k, '/')+1:])); ok && detector.IsRequest(kind) {
			exported += v
		}
	}
	// The judge has judged at least what was exported (more windows may
	// have closed since).
	if exported == 0 || exported > judged {
		t.Errorf("exported %d requests; judged %d", exported, judged)
	}
}
