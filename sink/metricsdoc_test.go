package sink

import (
	"bufio"
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

// TestFamiliesFollowConventions: every documented family has a HELP text,
// a Prometheus type and a name promtool accepts for that type.
func TestFamiliesFollowConventions(t *testing.T) {
	name := regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	for _, f := range Families {
		switch {
		case !name.MatchString(f.Name):
			t.Errorf("%s: not a snake_case metric name", f.Name)
		case strings.TrimSpace(f.Help) == "":
			t.Errorf("%s: no HELP text", f.Name)
		case f.Type != "counter" && f.Type != "gauge" && f.Type != "histogram" && f.Type != "summary":
			t.Errorf("%s: type %q", f.Name, f.Type)
		case f.Type == "counter" && !strings.HasSuffix(f.Name, "_total"):
			t.Errorf("%s: a counter without _total", f.Name)
		case f.Type != "counter" && strings.HasSuffix(f.Name, "_total"):
			t.Errorf("%s: a %s ending in _total", f.Name, f.Type)
		case strings.HasSuffix(f.Name, "_ms") || strings.Contains(f.Name, "_ms_") || strings.Contains(f.Name, "milliseconds"):
			t.Errorf("%s: not in base units (seconds)", f.Name)
		}
	}
}

// TestWriteMetrics: WriteMetrics fills in the HELP texts, fixes the
// process counters' types and leaves out the families whose names break
// the conventions; every family it writes is documented.
func TestWriteMetrics(t *testing.T) {
	ms := metrics.NewSet()
	ms.NewCounter("canaryd_records_total").Add(3)
	ms.GetOrCreatePrometheusHistogramExt(`canaryd_latency_seconds{rollout="r",version="v1",kind="tool",name="t"}`, []float64{0.1, 1}).Update(0.5)
	var buf bytes.Buffer
	WriteMetrics(&buf, ms)
	out := buf.String()
	for _, want := range []string{
		"# HELP canaryd_records_total Kafka records consumed.\n# TYPE canaryd_records_total counter\ncanaryd_records_total 3\n",
		"# TYPE canaryd_latency_seconds histogram\n",
		`canaryd_latency_seconds_bucket{rollout="r",version="v1",kind="tool",name="t",le="1"} 1` + "\n",
		"# TYPE process_cpu_seconds_total counter\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	for dropped := range droppedFamilies {
		if strings.Contains(out, dropped) {
			t.Errorf("exposition has %s; want it left out", dropped)
		}
	}
	families := 0
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "#" && f[1] == "HELP":
			families++
			if len(f) == 3 {
				t.Errorf("family %s has no HELP text: add it to Families", f[2])
			}
		case len(f) == 4 && f[0] == "#" && f[1] == "TYPE":
			if fam, ok := LookupFamily(f[2]); ok && fam.Type != f[3] {
				t.Errorf("family %s written as a %s; Families says %s", f[2], f[3], fam.Type)
			}
		}
	}
	if families < 40 {
		t.Errorf("%d families written; want the runtime's and process's too", families)
	}
}

// TestDocumentExposition: the rewriting on a fixed input, including a
// gauge written as one where it is a counter, and an unknown family (left
// with its empty HELP, which promtool then reports).
func TestDocumentExposition(t *testing.T) {
	in := "# HELP process_io_read_bytes_total\n# TYPE process_io_read_bytes_total gauge\nprocess_io_read_bytes_total 7\n" +
		"# HELP go_cgo_calls_count\n# TYPE go_cgo_calls_count counter\ngo_cgo_calls_count 2\n" +
		"# HELP mystery_total\n# TYPE mystery_total counter\nmystery_total 1\n"
	want := "# HELP process_io_read_bytes_total Bytes the process read (read syscalls, including the page cache).\n# TYPE process_io_read_bytes_total counter\nprocess_io_read_bytes_total 7\n" +
		"# HELP mystery_total\n# TYPE mystery_total counter\nmystery_total 1\n"
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	documentExposition(w, []byte(in))
	w.Flush()
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
