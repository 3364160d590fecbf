package loadtest

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalidConfig is wrapped by every error that reports a bad Profile,
// Rollout or FleetConfig.
var ErrInvalidConfig = errors.New("loadtest: invalid config")

// DefaultRate is the session rate of a Rollout whose Rate is 0: with
// DefaultProfile, about 130 events per second.
const DefaultRate = 20

// Rollout is one simulated rollout: an agent whose baseline and canary
// versions run side by side, the canary taking Weight percent of new
// sessions.
type Rollout struct {
	// Name is the rollout id: the events' rollout field and the records' key.
	Name     string
	Baseline string // baseline version
	Canary   string // canary version

	BaselineProfile Profile
	CanaryProfile   Profile

	// InitialWeight is the canary's percent of new sessions until a control
	// command changes it.
	InitialWeight int
	// Rate is the mean number of sessions started per second of event time,
	// both versions together, as a Poisson process. 0 means DefaultRate.
	Rate float64

	// DeploymentID and Commit, when set, describe the canary's build and are
	// written on canary events only.
	DeploymentID string
	Commit       string
}

// Validate reports the first thing wrong with r, wrapped in ErrInvalidConfig.
func (r *Rollout) Validate() error {
	switch {
	case r.Name == "":
		return fmt.Errorf("%w: rollout without a name", ErrInvalidConfig)
	case r.Baseline == "" || r.Canary == "":
		return fmt.Errorf("%w: rollout %q: baseline and canary versions are required", ErrInvalidConfig, r.Name)
	case r.Baseline == r.Canary:
		return fmt.Errorf("%w: rollout %q: baseline and canary are both %q", ErrInvalidConfig, r.Name, r.Baseline)
	case r.InitialWeight < 0 || r.InitialWeight > 100:
		return fmt.Errorf("%w: rollout %q: initial weight %d outside 0..100", ErrInvalidConfig, r.Name, r.InitialWeight)
	case r.Rate < 0 || math.IsNaN(r.Rate) || math.IsInf(r.Rate, 0):
		return fmt.Errorf("%w: rollout %q: rate %v must be >= 0 and finite", ErrInvalidConfig, r.Name, r.Rate)
	}
	for _, s := range []string{r.Name, r.Baseline, r.Canary, r.DeploymentID, r.Commit} {
		if len(s) > maxStringBytes {
			return fmt.Errorf("%w: rollout %q: %q longer than %d bytes", ErrInvalidConfig, r.Name, s, maxStringBytes)
		}
	}
	if err := r.BaselineProfile.Validate(); err != nil {
		return fmt.Errorf("rollout %q: baseline profile: %w", r.Name, err)
	}
	if err := r.CanaryProfile.Validate(); err != nil {
		return fmt.Errorf("rollout %q: canary profile: %w", r.Name, err)
	}
	return nil
}

// maxStringBytes mirrors schemas.MaxStringBytes: longer strings would send
// the fleet's own events to canaryd's dead-letter topic.
const maxStringBytes = 512

func validateRollouts(rs []Rollout) error {
	if len(rs) == 0 {
		return fmt.Errorf("%w: no rollouts", ErrInvalidConfig)
	}
	seen := make(map[string]bool, len(rs))
	for i := range rs {
		if err := rs[i].Validate(); err != nil {
			return err
		}
		if seen[rs[i].Name] {
			return fmt.Errorf("%w: rollout %q listed twice", ErrInvalidConfig, rs[i].Name)
		}
		seen[rs[i].Name] = true
	}
	return nil
}

// Counts is what was produced for one version of a rollout.
//
// A request is one llm or tool event: the unit canaryd counts for error rate
// and latency. An agent event is a session's summary, not a request; it is
// written when the session ends, so a run that stops mid-session has written
// requests whose sessions are never counted.
type Counts struct {
	Events    int64 // records: Requests + Sessions
	Requests  int64 // llm and tool events
	Errors    int64 // requests with status error (agent events never count)
	Sessions  int64 // agent events, one per completed session
	Successes int64 // agent events with outcome.success true
}

func (c *Counts) add(o Counts) {
	c.Events += o.Events
	c.Requests += o.Requests
	c.Errors += o.Errors
	c.Sessions += o.Sessions
	c.Successes += o.Successes
}
