// Package route puts canaryd's control commands in force on real traffic
// routers: HAProxy through its runtime API, Kubernetes routes (Istio
// VirtualService, Gateway API HTTPRoute, SMI TrafficSplit) through
// server-side apply, and Git repositories that Flux or Argo CD apply.
//
// Each router kind is an Adapter. A Driver (driver.go) sits between the
// router package's Subscriber and the adapters: it keeps the latest desired
// Target of each rollout, applies it with retries and backoff, lets a
// rollback overtake whatever is pending, and acknowledges a command only once
// its adapter returned nil for it.
package route

import (
	"context"
	"errors"
	"fmt"

	"github.com/inferensys/canaryd/schemas"
)

// Target is what one route must carry for one rollout: the canary's percent
// of the route's traffic (CanaryWeight) and the baseline's (100 −
// CanaryWeight), plus what a commit message or an annotation may record.
type Target struct {
	Rollout      string
	Baseline     string // version names, as in the command
	Canary       string
	CanaryWeight int // 0..100: 0 after a rollback, 100 after a promote
	Action       schemas.Action
	Seq          uint64
	CommandID    string
	DeploymentID string
	Commit       string
}

// Adapter applies Targets to one kind of router. Apply must be idempotent
// (the Driver retries it and may apply the same Target twice) and must leave
// nothing half-applied that is worse than the state before: when it writes
// two weights one after the other, and the canary's goes down, it writes the
// canary's first. It returns nil only when the target is in force.
type Adapter interface {
	// Kind names the adapter in logs and metrics: "haproxy", "kubernetes",
	// "git".
	Kind() string
	// Apply puts t in force on the route configured for t.Rollout.
	Apply(ctx context.Context, t Target) error
}

// ErrUnknownRollout is returned (wrapped) by an adapter asked to apply a
// rollout it has no route for.
var ErrUnknownRollout = errors.New("no route is configured for this rollout")

// PermanentError marks an error that retrying will not mend (the route does
// not exist, it does not have exactly one baseline and one canary backend,
// the API refused the object as invalid): the Driver logs and counts it and
// waits for the next command instead of retrying.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError; Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Permanentf is Permanent(fmt.Errorf(format, args...)).
func Permanentf(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...)}
}

// IsPermanent reports whether err is or wraps a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}
