package schemas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Action is what a control command asks routers to do.
type Action string

// Actions of control-command.v1.json.
const (
	ActionSetWeight Action = "set_weight"
	ActionPromote   Action = "promote"
	ActionRollback  Action = "rollback"
	ActionHold      Action = "hold"
)

// Command is one control command (control-command.v1.json). Written to the
// control topic with key = Rollout.
type Command struct {
	CommandID    string          `json:"command_id"`
	Seq          uint64          `json:"seq"`
	Rollout      string          `json:"rollout"`
	Baseline     string          `json:"baseline"`
	Canary       string          `json:"canary"`
	Action       Action          `json:"action"`
	Weight       int             `json:"weight"`
	Step         int             `json:"step"`
	Reason       string          `json:"reason"`
	Evidence     json.RawMessage `json:"evidence,omitempty"`
	DecidedAt    time.Time       `json:"decided_at"`
	DeploymentID string          `json:"deployment_id,omitempty"`
	Commit       string          `json:"commit,omitempty"`
	Cohort       *Cohort         `json:"cohort,omitempty"`
	Signature    string          `json:"signature,omitempty"`
}

// Cohort restricts a command's canary share to the requests whose attribute
// Attribute has one of Values (e.g. user_tier in [internal]): only they are
// eligible for the canary, and Weight is the share of the eligible ones. A
// command without a cohort applies to everyone. It is not part of the
// command_id: a step is already told apart by its index.
type Cohort struct {
	Attribute string   `json:"attribute"`
	Values    []string `json:"values"`
}

// Contains reports whether a request with the attributes attrs belongs to the
// cohort. A nil cohort contains every request.
func (c *Cohort) Contains(attrs map[string]string) bool {
	if c == nil {
		return true
	}
	v, ok := attrs[c.Attribute]
	if !ok {
		return false
	}
	for _, w := range c.Values {
		if v == w {
			return true
		}
	}
	return false
}

// CommandID returns the deterministic id of a decision: the same rollout,
// versions, action, step and weight always give the same id, so a router or a
// replaying canaryd can drop duplicates.
func CommandID(rollout, baseline, canary string, action Action, step, weight int) string {
	h := sha256.New()
	for _, s := range []string{rollout, baseline, canary, string(action), strconv.Itoa(step), strconv.Itoa(weight)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Sign sets c.Signature to the hex HMAC-SHA256, under key, of c's JSON encoding
// without the signature. An empty key clears the signature.
func (c *Command) Sign(key []byte) error {
	c.Signature = ""
	if len(key) == 0 {
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("sign command: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(b)
	c.Signature = hex.EncodeToString(m.Sum(nil))
	return nil
}

// Verify reports whether c carries a valid signature under key.
func (c Command) Verify(key []byte) bool {
	sig := c.Signature
	if err := c.Sign(key); err != nil {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(c.Signature))
}

// Validate checks the fields every command must have.
func (c *Command) Validate() error {
	switch {
	case c.CommandID == "":
		return fmt.Errorf("command: missing command_id")
	case c.Rollout == "":
		return fmt.Errorf("command: missing rollout")
	case c.Seq == 0:
		return fmt.Errorf("command: seq must be > 0")
	case c.Weight < 0 || c.Weight > 100:
		return fmt.Errorf("command: weight %d outside 0..100", c.Weight)
	case c.Cohort != nil && c.Cohort.Attribute == "":
		return fmt.Errorf("command: cohort without attribute")
	case c.Cohort != nil && len(c.Cohort.Values) == 0:
		return fmt.Errorf("command: cohort %q without values", c.Cohort.Attribute)
	}
	switch c.Action {
	case ActionSetWeight, ActionPromote, ActionRollback, ActionHold:
	default:
		return fmt.Errorf("command: unknown action %q", c.Action)
	}
	return nil
}
