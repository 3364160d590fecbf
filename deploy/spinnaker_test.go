package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/internal/canarydtest"
)

// spinnakerStage is the part of a Spinnaker stage the tests read: the
// fields of Orca's WebhookStage.StageData.
type spinnakerStage struct {
	RefID               string            `json:"refId"`
	Requisite           []string          `json:"requisiteStageRefIds"`
	Type                string            `json:"type"`
	Name                string            `json:"name"`
	Method              string            `json:"method"`
	URL                 string            `json:"url"`
	CustomHeaders       map[string]string `json:"customHeaders"`
	Payload             map[string]string `json:"payload"`
	WaitForCompletion   bool              `json:"waitForCompletion"`
	StatusURLResolution string            `json:"statusUrlResolution"`
	StatusJSONPath      string            `json:"statusJsonPath"`
	ProgressJSONPath    string            `json:"progressJsonPath"`
	SuccessStatuses     string            `json:"successStatuses"`
	TerminalStatuses    string            `json:"terminalStatuses"`
	CanceledStatuses    string            `json:"canceledStatuses"`
}

type spinnakerPipeline struct {
	Parameters []struct {
		Name string `json:"name"`
	} `json:"parameterConfig"`
	Stages []spinnakerStage `json:"stages"`
}

func readPipeline(t *testing.T) spinnakerPipeline {
	t.Helper()
	b, err := os.ReadFile("spinnaker/pipeline.json")
	if err != nil {
		t.Fatal(err)
	}
	var p spinnakerPipeline
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("spinnaker/pipeline.json: %v", err)
	}
	return p
}

var spel = regexp.MustCompile(`\$\{parameters\.(\w+)\}|\$\{execution\.id\}`)

// resolve substitutes the pipeline's parameters, as Spinnaker's SpEL
// evaluation does for ${parameters.x} and ${execution.id}.
func resolve(t *testing.T, s string, params map[string]string) string {
	t.Helper()
	return spel.ReplaceAllStringFunc(s, func(m string) string {
		if m == "${execution.id}" {
			return "01JSPINNAKEREXECUTION"
		}
		name := spel.FindStringSubmatch(m)[1]
		v, ok := params[name]
		if !ok {
			t.Fatalf("pipeline uses parameter %s, not declared", name)
		}
		return v
	})
}

// orcaStatus maps a polled reply as Orca's MonitorWebhookTask does: the
// value at statusJsonPath (here a top-level field), upper-cased, against
// the comma-separated success, canceled and terminal statuses; anything
// else keeps the stage RUNNING.
func orcaStatus(st spinnakerStage, body []byte) (string, error) {
	var reply map[string]any
	if err := json.Unmarshal(body, &reply); err != nil {
		return "", err
	}
	key, ok := strings.CutPrefix(st.StatusJSONPath, "$.")
	if !ok || strings.ContainsAny(key, ".[") {
		return "", fmt.Errorf("statusJsonPath %s: the test reads top-level fields only", st.StatusJSONPath)
	}
	v, ok := reply[key].(string)
	if !ok {
		return "TERMINAL", fmt.Errorf("%s is not a string in %s", st.StatusJSONPath, body) // Orca: TERMINAL
	}
	for status, list := range map[string]string{"SUCCEEDED": st.SuccessStatuses, "CANCELED": st.CanceledStatuses, "TERMINAL": st.TerminalStatuses} {
		for s := range strings.SplitSeq(list, ",") {
			if strings.EqualFold(strings.TrimSpace(s), v) {
				return status, nil
			}
		}
	}
	return "RUNNING", nil
}

// call makes a webhook stage's request (Orca's CreateWebhookTask; with
// statusUrlResolution getMethod the monitor polls the same URL with GET).
func call(t *testing.T, st spinnakerStage, params map[string]string) (int, []byte) {
	t.Helper()
	var body io.Reader
	if st.Payload != nil {
		p := map[string]string{}
		for k, v := range st.Payload {
			p[k] = resolve(t, v, params)
		}
		b, _ := json.Marshal(p)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(st.Method, resolve(t, st.URL, params), body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range st.CustomHeaders {
		req.Header.Set(k, resolve(t, v, params))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("stage %s: %v", st.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestSpinnakerPipelineParses(t *testing.T) {
	p := readPipeline(t)
	judges := 0
	for _, st := range p.Stages {
		if st.Type != "webhook" || !st.WaitForCompletion {
			continue
		}
		judges++
		if st.StatusURLResolution != "getMethod" || st.Method != "GET" || st.StatusJSONPath != "$.verdict" ||
			st.SuccessStatuses != "pass" || st.TerminalStatuses != "fail" || st.CanceledStatuses != "hold" {
			t.Errorf("stage %s: %+v; want GET polled by getMethod on $.verdict: pass, fail terminal, hold canceled", st.Name, st)
		}
	}
	if judges != 2 {
		t.Errorf("%d judge stages; want 2", judges)
	}
}

const spinnakerSpec = `
rollout: support-agent
mode: judge
baseline: v1
canary: auto
alpha: 0.0001
steps:
  - {weight: 10, min_duration: 20s, min_canary_events: 1000}
metrics:
  error_rate: {margin: 2.0}
  latency_p95: {margin: 0.2}
`

// TestSpinnakerPipeline runs the pipeline's webhook stages against a
// running canaryd as Orca would (its wait stages stand for the user's
// traffic shifts, which the test makes in the traffic it produces): a good
// canary passes both judge stages (SUCCEEDED) and ends promoted; a bad one
// (errors ×3) ends the first judge stage TERMINAL. The good canary fails
// by luck only if canaryd rolls it back (at most alpha = 1e-4) or cannot
// show it within its margins in 300 s of 1000 requests/s per stage (it
// needs about 5,000 canary requests); the bad one if canaryd does not roll
// it back within 30,000 canary requests (the README's demo needs 771).
// Fixed seeds: the same outcome at every run.
func TestSpinnakerPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("produces minutes of event time")
	}
	for _, tc := range []struct {
		name       string
		errorRate  float64
		wantStatus string
	}{{"good", 0.01, "SUCCEEDED"}, {"bad", 0.03, "TERMINAL"}} {
		t.Run(tc.name, func(t *testing.T) {
			token := "spinnaker-test-token-0123456789"
			file := filepath.Join(t.TempDir(), "tokens")
			if err := os.WriteFile(file, []byte("spinnaker "+token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c := canarydtest.Start(t, spinnakerSpec, "--http-token-file", file)
			params := map[string]string{"canaryVersion": "v2", "baselineVersion": "v1", "deploymentId": "${execution.id}",
				"commit": "3f089cb", "canaryd": c.URL, "canarydToken": token}
			params["deploymentId"] = resolve(t, params["deploymentId"], params)
			base := canarydtest.Arm{Version: "v1", ErrorRate: 0.01, MedianMS: 200}
			canary := canarydtest.Arm{Version: "v2", ErrorRate: tc.errorRate, MedianMS: 200}
			tr := canarydtest.NewTraffic("support-agent", base, canary, 1000, 0, time.Now().Add(-50*time.Minute), 7)
			weight := regexp.MustCompile(`[?&]weight=(\d+)`)
			last := ""
			for _, st := range readPipeline(t).Stages {
				if st.Type != "webhook" {
					continue
				}
				code, body := call(t, st, params)
				if code/100 != 2 {
					t.Fatalf("stage %s: %d %s", st.Name, code, body)
				}
				if !st.WaitForCompletion {
					continue
				}
				if m := weight.FindStringSubmatch(st.URL); m != nil {
					fmt.Sscan(m[1], &tr.Weight)
				}
				status := "RUNNING"
				for s := 1; s <= 300 && status == "RUNNING"; s++ {
					c.Produce(tr.Second())
					if s%5 != 0 {
						continue
					}
					c.Sync(tr)
					code, body = call(t, spinnakerStage{Method: "GET", URL: st.URL}, params)
					if code != http.StatusOK {
						t.Fatalf("stage %s: poll: %d %s", st.Name, code, body)
					}
					var err error
					if status, err = orcaStatus(st, body); err != nil {
						t.Fatalf("stage %s: %v", st.Name, err)
					}
				}
				t.Logf("stage %s: %s", st.Name, status)
				last = status
				if status != "SUCCEEDED" {
					break
				}
			}
			if last != tc.wantStatus {
				t.Fatalf("pipeline ended %s; want %s", last, tc.wantStatus)
			}
			resp, err := http.Get(c.URL + "/v1/rollouts/support-agent/judge")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var reply struct{ Final string }
			if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"good": "promote", "bad": "rollback"}[tc.name]
			if reply.Final != want {
				t.Errorf("canaryd's final %q; want %q", reply.Final, want)
			}
		})
	}
}
