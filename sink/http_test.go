package sink_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/sink"
)

type noRollouts struct{}

func (noRollouts) Statuses() []detector.Status           { return nil }
func (noRollouts) Status(string) (detector.Status, bool) { return detector.Status{}, false }

// TestNotFoundDoesNotEcho: a 404 for an unknown rollout quoted the whole
// requested id back (a 70 kB URL gave a 70 kB reply).
func TestNotFoundDoesNotEcho(t *testing.T) {
	h := sink.Handler(noRollouts{}, metrics.NewSet(), nil)
	id := strings.Repeat("a", 70_000)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/rollouts/"+id, nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 404 {
		t.Fatalf("status %d; want 404", rec.Code)
	}
	if len(body) > 200 || !strings.Contains(string(body), "no rollout") {
		t.Errorf("404 body is %d bytes (%.80q); want a short error naming the cut id", len(body), body)
	}
}
