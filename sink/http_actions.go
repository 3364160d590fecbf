package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/inferensys/canaryd/detector"
)

// Actions are the operator actions of POST /v1/rollouts/{id}/{action};
// api/openapi.yaml lists the same (a test checks).
var Actions = []string{"start", "pause", "resume", "approve", "abort", "retry"}

// ActionSource is what the HTTP API hands operator actions to: a
// StatusSource that also implements it gets POST /v1/rollouts/{id}/{action}
// (with a token configured; see TokenFile). Act runs the action on the
// rollout and returns its status once the action is recorded. Its errors
// wrap ErrUnknownRollout (404), ErrUnknownAction (400), ErrInvalidAction
// (400) or ErrConflict (409); the error's text is the reply's "error", so
// it should say what to do. Any other error is a 500.
type ActionSource interface {
	Act(ctx context.Context, rollout, action string, req ActionRequest) (detector.Status, error)
}

// Errors an ActionSource wraps to choose the HTTP status of a refusal.
var (
	// ErrUnknownRollout: no rollout has this id (404).
	ErrUnknownRollout = errors.New("unknown rollout")
	// ErrUnknownAction: the action is not one the source implements (400).
	ErrUnknownAction = errors.New("unknown action")
	// ErrInvalidAction: the request cannot be carried out as asked, e.g. a
	// start for the baseline version, or a missing canary (400).
	ErrInvalidAction = errors.New("invalid action")
	// ErrConflict: the rollout's state does not allow the action now, e.g.
	// approve on a step without an approval gate, resume of a running
	// rollout (409).
	ErrConflict = errors.New("conflict")
)

// ActionRequest is the JSON body of POST /v1/rollouts/{id}/{action}; every
// field is optional (an empty body is an empty request).
type ActionRequest struct {
	// Reason is why, for the audit trail and the command's reason.
	Reason string `json:"reason,omitempty"`
	// By is who asked; the server fills in the token's holder when empty.
	By string `json:"by,omitempty"`
	// Canary: for start, the version to roll out; for the other actions,
	// when set, the action applies only if the rollout judges this canary
	// (ErrConflict otherwise), so that a pipeline never acts on a newer
	// release than its own.
	Canary string `json:"canary,omitempty"`
	// DeploymentID and Commit of what is rolled out (start): the commands
	// of the release carry them.
	DeploymentID string `json:"deployment_id,omitempty"`
	Commit       string `json:"commit,omitempty"`
	// Token is the holder of the token that authenticated the request, set
	// by the server (never read from the body): By is what the caller
	// says, Token who it proved to be.
	Token string `json:"-"`
}

// ActionReply is the body of a successful action.
type ActionReply struct {
	Rollout string          `json:"rollout"`
	Action  string          `json:"action"`
	By      string          `json:"by"`
	Status  detector.Status `json:"status"`
}

// maxActionBody bounds the request body; maxActionField each field.
const (
	maxActionBody  = 16 << 10
	maxActionField = 1024
)

// actionHandler serves POST /v1/rollouts/{id}/{action}; it runs after
// Require, so the request is authenticated.
func actionHandler(src StatusSource, ref refuser, cfg *serverCfg) http.HandlerFunc {
	as, ok := src.(ActionSource)
	return func(w http.ResponseWriter, r *http.Request) {
		id, action := r.PathValue("id"), r.PathValue("action")
		if !slices.Contains(Actions, action) {
			ref.refuse(w, http.StatusBadRequest, "unknown_action",
				fmt.Sprintf("unknown action %s: want one of %s", quoteID(action), strings.Join(Actions, ", ")))
			return
		}
		if !ok {
			ref.refuse(w, http.StatusNotImplemented, "no_actions", "this server does not implement rollout actions")
			return
		}
		req, err := decodeActionRequest(r)
		if err != nil {
			ref.refuse(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		req.Token = TokenHolder(r.Context())
		if req.By == "" {
			req.By = req.Token
		}
		st, err := as.Act(r.Context(), id, action, req)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, ActionReply{Rollout: id, Action: action, By: req.By, Status: st})
		case errors.Is(err, ErrUnknownRollout):
			ref.refuse(w, http.StatusNotFound, "unknown_rollout", err.Error())
		case errors.Is(err, ErrUnknownAction):
			ref.refuse(w, http.StatusBadRequest, "unknown_action", err.Error())
		case errors.Is(err, ErrInvalidAction):
			ref.refuse(w, http.StatusBadRequest, "invalid_action", err.Error())
		case errors.Is(err, ErrConflict):
			ref.refuse(w, http.StatusConflict, "conflict", err.Error())
		default:
			cfg.log.Error("rollout action failed", "rollout", id, "action", action, "by", req.By, "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		}
	}
}

func decodeActionRequest(r *http.Request) (ActionRequest, error) {
	var req ActionRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxActionBody+1))
	if err != nil {
		return req, fmt.Errorf("read body: %w", err)
	}
	if len(body) > maxActionBody {
		return req, fmt.Errorf("body larger than %d bytes", maxActionBody)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return req, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("body: %v (want JSON {\"reason\", \"by\", \"canary\", \"deployment_id\", \"commit\"}, all optional)", err)
	}
	if dec.More() {
		return req, errors.New("body: more than one JSON value")
	}
	for _, f := range []struct{ name, v string }{
		{"reason", req.Reason}, {"by", req.By}, {"canary", req.Canary}, {"deployment_id", req.DeploymentID}, {"commit", req.Commit},
	} {
		if len(f.v) > maxActionField {
			return req, fmt.Errorf("body: %s longer than %d bytes", f.name, maxActionField)
		}
	}
	return req, nil
}
