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

// TestStatusPage: GET / renders every rollout's state on the server (the
// page says where rollouts are without JavaScript), escaped; its files are
// served with their types; other paths stay 404s.
func TestStatusPage(t *testing.T) {
	st := judgedStatus(t).st
	odd := detector.Status{Rollout: `<script>alert(1)</script>`, Mode: "drive", Gate: "wait", Step: -1, WeightSource: "none"}
	h := sink.Handler(statuses{st, odd}, metrics.NewSet(), nil)
	for _, tc := range []struct {
		path, typ string
		code      int
		want      []string
		not       []string
	}{
		{"/", "text/html; charset=utf-8", 200,
			[]string{`data-rollout="openapi-agent"`, `href="#rollout=openapi-agent"`, "gate-fail", "final-rollback", "by canaryd",
				"rollback: ", `<script src="ui/app.js">`, "&lt;script&gt;alert(1)&lt;/script&gt;"},
			[]string{"<script>alert(1)"}},
		{"/ui/app.js", "text/javascript; charset=utf-8", 200, []string{"v1/rollouts", "/history"}, nil},
		{"/ui/style.css", "text/css; charset=utf-8", 200, []string{".plot"}, nil},
		{"/ui/index.html", "application/json", 404, []string{"status page is at /"}, nil},
		{"/ui/..%2Fhttp.go", "application/json", 404, nil, nil},
		{"/nope", "", 404, []string{"404 page not found"}, nil},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != tc.code {
			t.Errorf("GET %s: %d; want %d (%.200s)", tc.path, rec.Code, tc.code, body)
			continue
		}
		if tc.typ != "" && rec.Header().Get("Content-Type") != tc.typ {
			t.Errorf("GET %s: Content-Type %q; want %q", tc.path, rec.Header().Get("Content-Type"), tc.typ)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("GET %s: no %q in %.300s", tc.path, w, body)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(string(body), w) {
				t.Errorf("GET %s: %q in the body", tc.path, w)
			}
		}
	}
}
