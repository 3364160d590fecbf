package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
)

// The judge API for delivery controllers (deploy/controllers.md): Argo
// Rollouts' web metric provider and Spinnaker's polling call
// /v1/rollouts/{id}/judge; Flagger calls /v1/flagger/{hook}. Both declare
// what the controller did (the weight it set, the versions it rolls out)
// and read the rollout's gate (detector.Judge.Gate): wait, pass, fail or
// hold.

// JudgeAPIVersion is the api_version of the judge endpoint's replies.
const JudgeAPIVersion = "canaryd.judge/v1"

// JudgeCall is what a controller tells canaryd: every field is optional.
type JudgeCall struct {
	// Controller names the caller (argo, flagger, spinnaker, …): the
	// source of a declared weight.
	Controller string `json:"controller,omitempty"`
	// Weight is the canary weight (0..100) the controller set now (mode:
	// judge only; a drive-mode rollout refuses one that is not its own).
	Weight *int `json:"weight,omitempty"`
	// Baseline and Canary are the versions the controller rolls out, as
	// the events carry them: a canary other than the running release's
	// starts a new release (mode: judge).
	Baseline string `json:"baseline,omitempty"`
	Canary   string `json:"canary,omitempty"`
	// DeploymentID and Commit of a new release.
	DeploymentID string `json:"deployment_id,omitempty"`
	Commit       string `json:"commit,omitempty"`
	// Ended is how the controller ended the release (promote or
	// rollback), when it reports that (Flagger's post-rollout hook).
	Ended string `json:"-"`
	// Why is the controller's own words on it.
	Why string `json:"-"`
	// Revision identifies the controller's release (Flagger's checksum):
	// a call for another revision than the one an ended release was
	// judged under is about a release not started yet.
	Revision string `json:"-"`
}

// JudgeSource is what the judge endpoints hand controllers' calls to: a
// StatusSource that implements it gets /v1/rollouts/{id}/judge and
// /v1/flagger/{hook}. Judge applies the call (idempotent: the same call
// again changes nothing) and returns the rollout's status. Its errors wrap
// ErrUnknownRollout (404), ErrInvalidAction (400) or ErrConflict (409).
type JudgeSource interface {
	Judge(ctx context.Context, rollout string, call JudgeCall) (detector.Status, error)
}

// JudgeReply is the body of /v1/rollouts/{id}/judge: every field is always
// present, so that a controller's JSON path never errs on a missing one.
type JudgeReply struct {
	APIVersion string `json:"api_version"`
	Rollout    string `json:"rollout"`
	Mode       string `json:"mode"`
	Baseline   string `json:"baseline"`
	Canary     string `json:"canary"`
	// Verdict is the gate: wait (not enough evidence yet, never a
	// failure), pass (the step's gate holds; drive mode: promoted), fail
	// (rolled back), hold (experiment invalid or the step's budget ran
	// out: a human decides).
	Verdict      string `json:"verdict"`
	Final        string `json:"final"`
	Step         int    `json:"step"`
	Weight       int    `json:"weight"`
	WeightSource string `json:"weight_source"`
	Reason       string `json:"reason"`
	// CanaryRequests and BaselineRequests: the current step's.
	CanaryRequests   uint64 `json:"canary_requests"`
	BaselineRequests uint64 `json:"baseline_requests"`
	// EValues and Thresholds of the rollback tests, by name (the test
	// fires when its e-value reaches its threshold, 1/alpha).
	EValues    map[string]detector.Num `json:"e_values"`
	Thresholds map[string]detector.Num `json:"thresholds"`
	Tests      []detector.TestEvidence `json:"tests"`
}

// NewJudgeReply builds the judge endpoint's reply from a rollout's status.
func NewJudgeReply(st detector.Status) JudgeReply {
	r := JudgeReply{
		APIVersion: JudgeAPIVersion, Rollout: st.Rollout, Mode: st.Mode, Baseline: st.Baseline, Canary: st.Canary,
		Verdict: st.Gate, Final: st.Final, Step: st.Step, Weight: st.Weight, WeightSource: st.WeightSource,
		Reason: st.Verdict.Reason, CanaryRequests: st.Verdict.Canary.Requests, BaselineRequests: st.Verdict.Baseline.Requests,
		EValues: map[string]detector.Num{}, Thresholds: map[string]detector.Num{}, Tests: st.Verdict.Tests,
	}
	if r.Verdict == "" {
		r.Verdict = detector.GateWait
	}
	if r.Mode == "" {
		r.Mode = detector.ModeDrive
	}
	if r.Tests == nil {
		r.Tests = []detector.TestEvidence{}
	}
	for _, t := range st.Verdict.Tests {
		if t.Role == "rollback" {
			r.EValues[t.Name], r.Thresholds[t.Name] = t.EValue, t.Threshold
		}
	}
	return r
}

// maxJudgeField bounds a version, id or controller name in a call.
const maxJudgeField = 256

// judgeHandler serves GET and POST /v1/rollouts/{id}/judge: the call's
// fields come from the query (GET) or a JSON body (POST).
func judgeHandler(src StatusSource, ref refuser, cfg *serverCfg) http.HandlerFunc {
	js, ok := src.(JudgeSource)
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		call, err := decodeJudgeCall(r)
		if err != nil {
			ref.refuse(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		var st detector.Status
		switch {
		case ok:
			st, err = js.Judge(r.Context(), id, call)
		case call.Weight != nil || call.Canary != "" || call.Baseline != "":
			err = fmt.Errorf("%w: this server takes no declarations", ErrConflict)
		default:
			var found bool
			if st, found = src.Status(id); !found {
				err = fmt.Errorf("%w: no rollout %s", ErrUnknownRollout, quoteID(id))
			}
		}
		if err != nil {
			refuseJudge(w, ref, cfg, id, err)
			return
		}
		writeJSON(w, http.StatusOK, NewJudgeReply(st))
	}
}

func refuseJudge(w http.ResponseWriter, ref refuser, cfg *serverCfg, id string, err error) {
	code, reason := callRefusal(err)
	if code == http.StatusInternalServerError {
		cfg.log.Error("controller call failed", "rollout", id, "err", err)
		writeJSON(w, code, map[string]string{"error": err.Error()})
		return
	}
	ref.refuse(w, code, reason, err.Error())
}

// callRefusal maps a JudgeSource's error to its HTTP status and refusal
// reason (canaryd_http_refused_total).
func callRefusal(err error) (int, string) {
	switch {
	case errors.Is(err, ErrUnknownRollout):
		return http.StatusNotFound, "unknown_rollout"
	case errors.Is(err, ErrInvalidAction):
		return http.StatusBadRequest, "invalid_call"
	case errors.Is(err, ErrConflict):
		return http.StatusConflict, "conflict"
	}
	return http.StatusInternalServerError, ""
}

func decodeJudgeCall(r *http.Request) (JudgeCall, error) {
	var call JudgeCall
	if r.Method == http.MethodPost {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxActionBody+1))
		if err != nil {
			return call, fmt.Errorf("read body: %w", err)
		}
		if len(body) > maxActionBody {
			return call, fmt.Errorf("body larger than %d bytes", maxActionBody)
		}
		if len(strings.TrimSpace(string(body))) > 0 {
			dec := json.NewDecoder(strings.NewReader(string(body)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&call); err != nil {
				return call, fmt.Errorf("body: %v (want JSON {\"controller\", \"weight\", \"baseline\", \"canary\", \"deployment_id\", \"commit\"}, all optional)", err)
			}
		}
	}
	q := r.URL.Query()
	for k := range q {
		if !slices.Contains([]string{"controller", "weight", "baseline", "canary", "deployment_id", "commit"}, k) {
			return call, fmt.Errorf("unknown parameter %s: want controller, weight, baseline, canary, deployment_id, commit", quoteID(k))
		}
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"controller", &call.Controller}, {"baseline", &call.Baseline}, {"canary", &call.Canary},
		{"deployment_id", &call.DeploymentID}, {"commit", &call.Commit}} {
		if v := q.Get(f.name); v != "" {
			*f.dst = v
		}
		if len(*f.dst) > maxJudgeField {
			return call, fmt.Errorf("%s longer than %d bytes", f.name, maxJudgeField)
		}
	}
	if v := q.Get("weight"); v != "" {
		w, err := strconv.Atoi(v)
		if err != nil {
			return call, fmt.Errorf("weight %s: want an integer 0..100", quoteID(v))
		}
		call.Weight = &w
	}
	if call.Weight != nil && (*call.Weight < 0 || *call.Weight > 100) {
		return call, fmt.Errorf("weight %d is outside 0..100", *call.Weight)
	}
	return call, nil
}

// FlaggerHooks are the webhook types Flagger calls, served at
// POST /v1/flagger/{hook}.
var FlaggerHooks = []string{"confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
	"confirm-promotion", "post-rollout", "rollback", "event"}

// FlaggerPayload is the body Flagger posts to a webhook (its
// CanaryWebhookPayload).
type FlaggerPayload struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Phase     string            `json:"phase"`
	Checksum  string            `json:"checksum,omitempty"`
	BuildID   string            `json:"buildId,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// The event messages of Flagger's scheduler that tell canaryd what it did.
var (
	flaggerAdvance  = regexp.MustCompile(`^Advance \S+ canary weight (\d+)$`)
	flaggerPrimary  = "Routing all traffic to primary"
	flaggerPromoted = "Promotion completed!"
	flaggerRollback = "Rolling back "
)

// flaggerHandler serves POST /v1/flagger/{hook}. Flagger treats a status
// above 202 as "no" (a halt for the confirm hooks, a failed check for
// pre-rollout and rollout, no rollback for rollback) and shows the body in
// its events, so the reply is one line of text.
func flaggerHandler(src StatusSource, ref refuser, cfg *serverCfg) http.HandlerFunc {
	js, _ := src.(JudgeSource)
	return func(w http.ResponseWriter, r *http.Request) {
		hook := r.PathValue("hook")
		if !slices.Contains(FlaggerHooks, hook) {
			ref.refuse(w, http.StatusBadRequest, "unknown_hook", fmt.Sprintf("unknown Flagger hook %s: want one of %s", quoteID(hook), strings.Join(FlaggerHooks, ", ")))
			return
		}
		var p FlaggerPayload
		body, err := io.ReadAll(io.LimitReader(r.Body, maxActionBody+1))
		if err == nil && len(body) > maxActionBody {
			err = fmt.Errorf("body larger than %d bytes", maxActionBody)
		}
		if err == nil {
			err = json.Unmarshal(body, &p)
		}
		if err == nil && p.Name == "" && p.Metadata["rollout"] == "" {
			err = errors.New("no canary name (and no metadata.rollout)")
		}
		if err != nil {
			ref.refuse(w, http.StatusBadRequest, "bad_request", "Flagger payload: "+err.Error())
			return
		}
		id := p.Metadata["rollout"]
		if id == "" {
			id = p.Name
		}
		call := JudgeCall{Controller: "flagger", Baseline: p.Metadata["baseline"], Canary: p.Metadata["canary"], Revision: p.Checksum}
		switch hook {
		case "event":
			msg := p.Metadata["eventMessage"]
			switch m := flaggerAdvance.FindStringSubmatch(msg); {
			case m != nil:
				if w, err := strconv.Atoi(m[1]); err == nil && w >= 0 && w <= 100 {
					call.Weight = &w
				}
			case msg == flaggerPrimary:
				zero := 0
				call.Weight = &zero
			case strings.HasPrefix(msg, flaggerPromoted):
				call.Ended, call.Why = string(schemas.ActionPromote), msg
			case strings.HasPrefix(msg, flaggerRollback):
				call.Ended, call.Why = string(schemas.ActionRollback), msg
			}
		case "post-rollout":
			switch p.Phase {
			case "Succeeded":
				call.Ended, call.Why = string(schemas.ActionPromote), "post-rollout: phase Succeeded"
			case "Failed":
				call.Ended, call.Why = string(schemas.ActionRollback), "post-rollout: phase Failed"
			}
		}
		var st detector.Status
		if js != nil {
			st, err = js.Judge(r.Context(), id, call)
		} else if s, found := src.Status(id); found {
			st = s
		} else {
			err = fmt.Errorf("%w: no rollout %s", ErrUnknownRollout, quoteID(id))
		}
		if err != nil {
			if hook == "event" || hook == "post-rollout" {
				// Flagger ignores these replies; a rollout canaryd does
				// not judge is no error of the caller's.
				cfg.log.Info("Flagger hook not applied", "hook", hook, "rollout", id, "err", err)
				writeText(w, http.StatusOK, "canaryd: not applied: "+err.Error())
				return
			}
			code, _ := callRefusal(err)
			writeText(w, code, "canaryd: "+err.Error())
			return
		}
		yes := flaggerYes(hook, st)
		code := http.StatusOK
		if !yes {
			code = http.StatusConflict
		}
		ref.ms.GetOrCreateCounter(fmt.Sprintf(`canaryd_flagger_hooks_total{hook=%q,answer=%q}`, hook, map[bool]string{true: "yes", false: "no"}[yes])).Inc()
		writeText(w, code, fmt.Sprintf("canaryd: %s: %s", gateOf(st), oneLine(st.Verdict.Reason)))
	}
}

// flaggerYes answers a Flagger hook from the rollout's gate.
func flaggerYes(hook string, st detector.Status) bool {
	g := gateOf(st)
	switch hook {
	case "confirm-rollout", "pre-rollout":
		return !st.Paused && g != detector.GateHold
	case "rollout":
		return g != detector.GateFail
	case "confirm-traffic-increase":
		// Before the first step, or with no canary traffic, there is
		// nothing to judge: starting the traffic is not held back.
		return g == detector.GatePass || (g == detector.GateWait && (st.Step < 0 || st.Weight == 0))
	case "confirm-promotion":
		return g == detector.GatePass
	case "rollback":
		return g == detector.GateFail
	}
	return true // post-rollout, event
}

func gateOf(st detector.Status) string {
	if st.Gate == "" {
		return detector.GateWait
	}
	return st.Gate
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 1000 {
		s = s[:1000] + "…"
	}
	return s
}

func writeText(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, s+"\n")
}

// GateCode is the value of canaryd_judge_verdict for a gate: 0 wait,
// 1 pass, 2 hold, 3 fail (a Flagger MetricTemplate's threshold reads it).
func GateCode(gate string) float64 {
	switch gate {
	case detector.GatePass:
		return 1
	case detector.GateHold:
		return 2
	case detector.GateFail:
		return 3
	case detector.GateWait, "":
		return 0
	}
	return math.NaN()
}
