package router

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// Reason says why a record was refused. The values are fixed, so they can
// label a metric.
type Reason string

// Reasons of RefusedError.
const (
	ReasonNotJSON      Reason = "not_json"      // the value is not a JSON command
	ReasonInvalid      Reason = "invalid"       // schemas.Command.Validate failed
	ReasonKeyMismatch  Reason = "key_mismatch"  // the record key is not the command's rollout
	ReasonUnsigned     Reason = "unsigned"      // a key is configured and the command has no signature
	ReasonBadSignature Reason = "bad_signature" // the signature does not verify, or is not the last member
)

// Reasons lists every Reason, in a fixed order.
var Reasons = []Reason{ReasonNotJSON, ReasonInvalid, ReasonKeyMismatch, ReasonUnsigned, ReasonBadSignature}

// Commands that are read but not applied, without being wrong.
var (
	// ErrStale: the command's seq is not above the last seq applied for its
	// rollout (an old or out-of-order command).
	ErrStale = errors.New("router: seq not above the last applied")
	// ErrDuplicate: a command with the same command_id was applied already.
	ErrDuplicate = errors.New("router: command_id already applied")
	// ErrTombstone: the record has no value (a compaction tombstone). canaryd
	// writes none; an unsigned tombstone cannot be trusted to delete state.
	ErrTombstone = errors.New("router: tombstone ignored")
)

// RefusedError is returned by Table.Apply for a record that is not a valid,
// authentic command.
type RefusedError struct {
	Reason  Reason
	Rollout string // the command's rollout when it could be decoded
	Err     error  // the cause, when there is one beyond Reason
}

func (e *RefusedError) Error() string {
	s := "router: command refused: " + string(e.Reason)
	if e.Rollout != "" {
		s += " (rollout " + e.Rollout + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *RefusedError) Unwrap() error { return e.Err }

// State is what a rollout's routers must do: the effect of the last command
// applied for it. Every command carries the whole state (weight, versions,
// cohort), so the state is a function of the last command alone, which is
// what lets a router start from a compacted topic.
type State struct {
	Rollout  string
	Baseline string
	Canary   string
	Action   schemas.Action
	// Weight is the canary's percent of the (eligible) traffic in force:
	// the command's weight for set_weight and hold, 100 after promote, 0
	// after rollback.
	Weight int
	// Cohort, when set, restricts the canary to the requests it contains.
	Cohort       *schemas.Cohort
	Step         int
	Seq          uint64
	CommandID    string
	DeploymentID string
	Commit       string
	DecidedAt    time.Time // canaryd's clock at the decision
	AppliedAt    time.Time // this router's clock when it applied the command
}

// Change is one applied command: the rollout's state before and after.
type Change struct {
	Command schemas.Command
	Prev    State // zero when the rollout had no state
	State   State
	// Replay is true for commands read while the Subscriber bootstraps
	// (those already on the topic when it started).
	Replay bool
}

// Stats counts the records a Table has seen.
type Stats struct {
	Records   uint64 // records given to Apply
	Applied   uint64
	Stale     uint64 // ErrStale
	Duplicate uint64 // ErrDuplicate
	Tombstone uint64 // ErrTombstone
	// Refused counts RefusedErrors by reason; every Reason is present.
	Refused map[Reason]uint64
}

// MaxIDsPerRollout bounds the command ids a Table remembers per rollout to
// drop duplicates: the most recent ones are kept. A rollout's ramp has a
// handful of commands, so this spans many releases.
const MaxIDsPerRollout = 1024

// Table applies control records to per-rollout state by the rules of
// control-command.v1.json. It does no I/O: Subscriber feeds it from Kafka;
// a router that reads the topic another way can feed it itself. It is safe
// for concurrent use.
type Table struct {
	key []byte // HMAC key; nil accepts unsigned commands

	mu       sync.RWMutex // guards rollouts and stats
	rollouts map[string]*entry
	stats    Stats
}

type entry struct {
	state State
	ids   map[string]struct{} // applied command ids, at most MaxIDsPerRollout
	order []string            // ids in applied order, oldest first
}

// NewTable returns an empty Table. With a non-empty signingKey it refuses
// commands that are unsigned or whose signature does not verify under it.
func NewTable(signingKey []byte) *Table {
	t := &Table{rollouts: map[string]*entry{}, stats: Stats{Refused: map[Reason]uint64{}}}
	if len(signingKey) > 0 {
		t.key = slices.Clone(signingKey)
	}
	return t
}

// Apply applies one record of the control topic (its key and value as
// received), at time now. It returns the change and nil when the command was
// applied; ErrStale, ErrDuplicate or ErrTombstone when it was rightly
// ignored; a *RefusedError when the record is not a valid, authentic
// command. Checks, in order: JSON, Validate, key = rollout, signature,
// duplicate command_id, seq.
func (t *Table) Apply(key, value []byte, now time.Time) (Change, error) {
	c, err := t.check(key, value)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Records++
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		t.stats.Refused[refused.Reason]++
		return Change{}, err
	case err != nil:
		t.stats.Tombstone++
		return Change{}, err
	}
	e := t.rollouts[c.Rollout]
	if e == nil {
		e = &entry{ids: map[string]struct{}{}}
		t.rollouts[c.Rollout] = e
	}
	if _, dup := e.ids[c.CommandID]; dup {
		t.stats.Duplicate++
		return Change{}, ErrDuplicate
	}
	if c.Seq <= e.state.Seq {
		t.stats.Stale++
		return Change{}, ErrStale
	}
	ch := Change{Command: c, Prev: e.state, State: stateOf(&c, now)}
	e.state = ch.State
	e.ids[c.CommandID] = struct{}{}
	e.order = append(e.order, c.CommandID)
	if len(e.order) > MaxIDsPerRollout {
		delete(e.ids, e.order[0])
		e.order = slices.Delete(e.order, 0, 1)
	}
	t.stats.Applied++
	return ch, nil
}

// check decodes and authenticates a record; it reads no Table state but
// the key, so it runs outside the lock.
func (t *Table) check(key, value []byte) (schemas.Command, error) {
	var c schemas.Command
	if value == nil {
		return c, ErrTombstone
	}
	if err := json.Unmarshal(value, &c); err != nil {
		return c, &RefusedError{Reason: ReasonNotJSON, Err: err}
	}
	if err := c.Validate(); err != nil {
		return c, &RefusedError{Reason: ReasonInvalid, Rollout: c.Rollout, Err: err}
	}
	if string(key) != c.Rollout {
		return c, &RefusedError{Reason: ReasonKeyMismatch, Rollout: c.Rollout, Err: fmt.Errorf("record key %q", key)}
	}
	if t.key != nil {
		if err := verify(value, c.Signature, t.key); err != nil {
			reason := ReasonBadSignature
			if errors.Is(err, errUnsigned) {
				reason = ReasonUnsigned
			}
			return c, &RefusedError{Reason: reason, Rollout: c.Rollout, Err: err}
		}
	}
	return c, nil
}

func stateOf(c *schemas.Command, now time.Time) State {
	s := State{
		Rollout: c.Rollout, Baseline: c.Baseline, Canary: c.Canary, Action: c.Action, Weight: c.Weight,
		Cohort: c.Cohort, Step: c.Step, Seq: c.Seq, CommandID: c.CommandID, DeploymentID: c.DeploymentID,
		Commit: c.Commit, DecidedAt: c.DecidedAt, AppliedAt: now,
	}
	switch c.Action {
	case schemas.ActionPromote:
		s.Weight = 100
	case schemas.ActionRollback:
		s.Weight = 0
	}
	return s
}

var errUnsigned = errors.New("no signature")

// Verify checks the signature of a control record's value, as received,
// under key: the lowercase hex HMAC-SHA256 of the value with its final
// ,"signature":"<hex>" member removed (schemas/README.md). It does not
// re-encode the command, which could escape or order members differently.
func Verify(value, key []byte) error {
	var c struct {
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal(value, &c); err != nil {
		return err
	}
	return verify(value, c.Signature, key)
}

// verify checks value against sig, the signature member decoded from it.
func verify(value []byte, sig string, key []byte) error {
	if sig == "" {
		return errUnsigned
	}
	const prefix, suffix = `,"signature":"`, `"}`
	n := len(value) - len(suffix) - len(sig) - len(prefix)
	if n < 1 || string(value[n:n+len(prefix)]) != prefix ||
		string(value[n+len(prefix):len(value)-len(suffix)]) != sig || string(value[len(value)-len(suffix):]) != suffix {
		return errors.New("signature is not the last member, as written")
	}
	m := hmac.New(sha256.New, key)
	m.Write(value[:n])
	m.Write([]byte{'}'})
	var want [2 * sha256.Size]byte
	hex.Encode(want[:], m.Sum(nil))
	if !hmac.Equal(want[:], []byte(sig)) {
		return errors.New("signature does not verify")
	}
	return nil
}

// State returns the state of rollout and whether it has one.
func (t *Table) State(rollout string) (State, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, ok := t.rollouts[rollout]
	if !ok || e.state.Seq == 0 {
		return State{}, false
	}
	return e.state, true
}

// States returns the state of every rollout, sorted by rollout.
func (t *Table) States() []State {
	t.mu.RLock()
	out := make([]State, 0, len(t.rollouts))
	for _, e := range t.rollouts {
		if e.state.Seq > 0 {
			out = append(out, e.state)
		}
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b State) int {
		switch {
		case a.Rollout < b.Rollout:
			return -1
		case a.Rollout > b.Rollout:
			return 1
		}
		return 0
	})
	return out
}

// Assign returns the version that the request with the given sticky key
// (session or user id) and attributes goes to under rollout's current state
// (State.Assign), or "" when the rollout has no state: the router then
// routes as it would without canaryd.
func (t *Table) Assign(rollout, key string, attrs map[string]string) string {
	t.mu.RLock()
	e, ok := t.rollouts[rollout]
	var s State
	if ok {
		s = e.state
	}
	t.mu.RUnlock()
	if s.Seq == 0 {
		return ""
	}
	return s.Assign(key, attrs)
}

// Stats returns a copy of the counters.
func (t *Table) Stats() Stats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s := t.stats
	s.Refused = make(map[Reason]uint64, len(Reasons))
	for _, r := range Reasons {
		s.Refused[r] = t.stats.Refused[r]
	}
	return s
}
