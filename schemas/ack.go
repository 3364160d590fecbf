package schemas

import (
	"fmt"
	"time"
)

// DefaultAcksTopic is the topic routers acknowledge applied commands on.
const DefaultAcksTopic = "canary.acks"

// Ack is one router's acknowledgement of a control command it applied
// (ack.v1.json). Written to the acks topic with key = Rollout, so that one
// rollout's acks stay in order on one partition.
type Ack struct {
	CommandID string `json:"command_id"`
	Rollout   string `json:"rollout"`
	Seq       uint64 `json:"seq"`
	// Weight is the canary's percent in force at the router once the
	// command is applied: 100 after promote, 0 after rollback.
	Weight int    `json:"weight"`
	Action Action `json:"action"`
	// Router names the router instance (a pod, a gateway replica): canaryd
	// keeps one state per rollout and router.
	Router string `json:"router"`
	// AppliedAt is the router's clock when it applied the command.
	AppliedAt time.Time `json:"applied_at"`
}

// MaxRouterBytes bounds Ack.Router: it labels a metric.
const MaxRouterBytes = 256

// Validate checks the fields every ack must have.
func (a *Ack) Validate() error {
	switch {
	case a.CommandID == "":
		return fmt.Errorf("ack: missing command_id")
	case a.Rollout == "":
		return fmt.Errorf("ack: missing rollout")
	case a.Seq == 0:
		return fmt.Errorf("ack: seq must be > 0")
	case a.Weight < 0 || a.Weight > 100:
		return fmt.Errorf("ack: weight %d outside 0..100", a.Weight)
	case a.Router == "":
		return fmt.Errorf("ack: missing router")
	case len(a.Router) > MaxRouterBytes:
		return fmt.Errorf("ack: router longer than %d bytes", MaxRouterBytes)
	case a.AppliedAt.IsZero():
		return fmt.Errorf("ack: missing applied_at")
	}
	switch a.Action {
	case ActionSetWeight, ActionPromote, ActionRollback, ActionHold:
	default:
		return fmt.Errorf("ack: unknown action %q", a.Action)
	}
	return nil
}

// RouterAck is what canaryd knows of one router of a rollout from its acks:
// the last command it acknowledged, and whether it is behind the rollout's
// latest command. It is part of canaryd's rollout status (routers).
type RouterAck struct {
	Router    string `json:"router"`
	Weight    int    `json:"weight"`
	Action    Action `json:"action"`
	CommandID string `json:"command_id"`
	Seq       uint64 `json:"seq"`
	// AppliedAt is the router's clock when it applied that command.
	AppliedAt time.Time `json:"applied_at"`
	// Since is when the router applied its current weight: the applied_at
	// of its first ack at that weight.
	Since time.Time `json:"since"`
	// Lagging: the rollout's latest command (seq LatestSeq) was published
	// longer than the ack timeout ago and this router has not acknowledged it.
	Lagging   bool   `json:"lagging"`
	LatestSeq uint64 `json:"latest_seq,omitempty"`
}
