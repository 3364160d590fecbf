package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/router"
	"github.com/inferensys/canaryd/schemas"
)

// ErrCohort is returned by Driver.Offer for a step restricted to a cohort:
// a weight on a route sends that share of everyone, so only a router that
// assigns per request (router.Subscriber.Assign) can put a cohort in force.
var ErrCohort = errors.New("the step is restricted to a cohort, which a route's weights cannot express; route it with the router library's Assign")

// Router is what a Driver drives: an Adapter that also says which rollouts
// it has routes for (Mux is one).
type Router interface {
	Adapter
	Has(rollout string) bool
}

// DriverOptions configures a Driver; DefaultDriverOptions has the defaults.
type DriverOptions struct {
	// Ack is called with a state once its command is in force (AppliedAt
	// set): router.Subscriber.Ack. Nil: no acknowledgements.
	Ack func(router.State)
	// NotApplied is called for a command that failed for good
	// (router.Subscriber.NotApplied). Nil: none.
	NotApplied func()
	// ApplyTimeout bounds one Apply call; default 30s.
	ApplyTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries of a failed
	// Apply: it doubles from MinBackoff (default 250ms) up to MaxBackoff
	// (default 30s), with up to 20% jitter. A newer command ends the wait.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger     // nil: discard
	Metrics                *metrics.Set     // nil: none
	Clock                  func() time.Time // nil: time.Now
}

// DefaultDriverOptions returns the defaults.
func DefaultDriverOptions() DriverOptions {
	return DriverOptions{ApplyTimeout: 30 * time.Second, MinBackoff: 250 * time.Millisecond, MaxBackoff: 30 * time.Second}
}

// Driver puts the states a router.Subscriber applies in force through a
// Router, one rollout at a time per rollout and rollouts in parallel:
//
//   - Offer (the Subscriber's Apply function) records the rollout's latest
//     state and returns router.ErrAckLater at once, so a slow route never
//     holds up the control topic;
//   - the rollout's worker applies the latest state, retrying with backoff
//     while the error is not permanent; a newer command replaces the one
//     being retried (every command carries the whole state, so only the
//     latest matters), and a rollback also cancels an Apply in flight, so
//     weight 0 is written first and fastest;
//   - once Apply returned nil, the state is acknowledged (Options.Ack) with
//     AppliedAt = when it returned.
//
// Run starts the workers' context; Offer starts a rollout's worker the first
// time it sees the rollout; Run waits for them all when its ctx ends.
type Driver struct {
	r    Router
	opts DriverOptions
	log  *slog.Logger

	mu      sync.Mutex // guards slots, ctx and stopped
	slots   map[string]*slot
	ctx     context.Context // Run's; nil before Run
	stopped bool            // Run's ctx ended: no worker starts any more
	workers sync.WaitGroup

	applyDur      *metrics.PrometheusHistogram
	commandToLive *metrics.PrometheusHistogram
}

// slot is one rollout's work. want, seq bookkeeping and cancel are guarded
// by Driver.mu; the worker is the only one to apply.
type slot struct {
	want     router.State
	wake     chan struct{} // cap 1: a newer want
	inflight uint64        // seq being applied, 0 when none
	cancel   context.CancelFunc

	applied  router.State // the last state in force (AppliedAt set); zero before
	lastErr  string       // of the last failed Apply of want, "" after a success
	attempts int          // failed Applies of want
}

// RouteStatus is one rollout's route as a Driver sees it (the route
// command's /v1/routes).
type RouteStatus struct {
	Rollout string `json:"rollout"`
	// Wanted is the latest command's state; Applied the last one in force.
	Wanted  StateView  `json:"wanted"`
	Applied *StateView `json:"applied,omitempty"`
	// Pending: Wanted is not in force yet (being applied or retried, or
	// given up on after a permanent error: see Error).
	Pending  bool   `json:"pending"`
	Error    string `json:"error,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
}

// StateView is the part of a router.State a status shows.
type StateView struct {
	Action    schemas.Action `json:"action"`
	Weight    int            `json:"weight"`
	Baseline  string         `json:"baseline"`
	Canary    string         `json:"canary"`
	Seq       uint64         `json:"seq"`
	CommandID string         `json:"command_id"`
	AppliedAt *time.Time     `json:"applied_at,omitempty"`
}

func viewOf(st router.State) StateView {
	v := StateView{Action: st.Action, Weight: st.Weight, Baseline: st.Baseline, Canary: st.Canary, Seq: st.Seq, CommandID: st.CommandID}
	if !st.AppliedAt.IsZero() {
		at := st.AppliedAt
		v.AppliedAt = &at
	}
	return v
}

// Status returns every offered rollout's route, sorted by rollout.
func (d *Driver) Status() []RouteStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]RouteStatus, 0, len(d.slots))
	for ro, s := range d.slots {
		w := s.want
		w.AppliedAt = time.Time{}
		rs := RouteStatus{Rollout: ro, Wanted: viewOf(w), Pending: s.applied.Seq != s.want.Seq, Error: s.lastErr, Attempts: s.attempts}
		if s.applied.Seq != 0 {
			a := viewOf(s.applied)
			rs.Applied = &a
		}
		out = append(out, rs)
	}
	slices.SortFunc(out, func(a, b RouteStatus) int { return strings.Compare(a.Rollout, b.Rollout) })
	return out
}

// ApplyBuckets are the upper bounds, in seconds, of the route apply
// histograms.
var ApplyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// NewDriver returns a Driver for r.
func NewDriver(r Router, opts DriverOptions) *Driver {
	def := DefaultDriverOptions()
	if opts.ApplyTimeout <= 0 {
		opts.ApplyTimeout = def.ApplyTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = def.MinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(def.MaxBackoff, opts.MinBackoff)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{r: r, opts: opts, log: log, slots: map[string]*slot{}}
	if opts.Metrics != nil {
		d.applyDur = opts.Metrics.NewPrometheusHistogramExt("canaryd_route_apply_duration_seconds", ApplyBuckets)
		d.commandToLive = opts.Metrics.NewPrometheusHistogramExt("canaryd_route_decision_to_applied_seconds", ApplyBuckets)
	}
	return d
}

// Run holds the workers' context: it returns when ctx ends, after every
// worker has returned (an Apply in flight is cancelled with ctx).
func (d *Driver) Run(ctx context.Context) {
	d.mu.Lock()
	d.ctx = ctx
	for ro, s := range d.slots { // offered before Run
		d.start(ctx, ro, s)
	}
	d.mu.Unlock()
	<-ctx.Done()
	d.mu.Lock()
	d.stopped = true // an Offer from now on starts no worker (no Add during Wait)
	d.mu.Unlock()
	d.workers.Wait()
}

// Offer takes over ch's state (the router.Apply function of a Subscriber):
// it returns router.ErrAckLater once the state is recorded, or an error
// when the state cannot be put in force by this router (no route for the
// rollout, a cohort).
func (d *Driver) Offer(ch router.Change) error {
	st := ch.State
	if !d.r.Has(st.Rollout) {
		d.count(st.Rollout, "unknown_rollout")
		return fmt.Errorf("route %s: %w", st.Rollout, ErrUnknownRollout)
	}
	if st.Cohort != nil && st.Action != schemas.ActionPromote && st.Action != schemas.ActionRollback {
		d.count(st.Rollout, "cohort")
		return fmt.Errorf("route %s step %d: %w", st.Rollout, st.Step, ErrCohort)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.slots[st.Rollout]
	if !ok {
		s = &slot{wake: make(chan struct{}, 1)}
		d.slots[st.Rollout] = s
		if d.ctx != nil {
			d.start(d.ctx, st.Rollout, s)
		}
	}
	s.want = st
	if st.Action == schemas.ActionRollback && s.inflight != 0 && s.inflight < st.Seq && s.cancel != nil {
		s.cancel() // weight 0 first: do not wait for a slower write to finish
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	d.setPending(st.Rollout, true)
	return router.ErrAckLater
}

// start runs a worker for s; d.mu is held.
func (d *Driver) start(ctx context.Context, rollout string, s *slot) {
	if d.stopped {
		return
	}
	d.workers.Add(1)
	go func() {
		defer d.workers.Done()
		d.work(ctx, rollout, s)
	}()
}

// work applies s's latest state until ctx ends.
func (d *Driver) work(ctx context.Context, rollout string, s *slot) {
	var done uint64 // seq of the last state applied or given up on
	attempt := 0
	for {
		d.mu.Lock()
		want := s.want
		if want.Seq <= done {
			d.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		select { // this want is being served: a later wake means a newer one
		case <-s.wake:
		default:
		}
		actx, cancel := context.WithTimeout(ctx, d.opts.ApplyTimeout)
		s.inflight, s.cancel = want.Seq, cancel
		d.mu.Unlock()

		start := d.opts.Clock()
		err := d.r.Apply(actx, targetOf(want))
		took := d.opts.Clock().Sub(start)
		cancel()
		appliedAt := d.opts.Clock()
		d.mu.Lock()
		s.inflight, s.cancel = 0, nil
		newer := s.want.Seq > want.Seq
		if err == nil {
			want.AppliedAt = appliedAt
			s.applied, s.lastErr, s.attempts = want, "", 0
		} else if ctx.Err() == nil && !newer {
			s.lastErr, s.attempts = err.Error(), s.attempts+1
		}
		d.mu.Unlock()
		if d.applyDur != nil {
			d.applyDur.Update(took.Seconds())
		}

		switch {
		case err == nil:
			done, attempt = want.Seq, 0
			d.count(rollout, "applied")
			d.setWeight(rollout, want.Weight)
			if d.commandToLive != nil && !want.DecidedAt.IsZero() {
				d.commandToLive.Update(max(0, want.AppliedAt.Sub(want.DecidedAt).Seconds()))
			}
			d.log.Info("route applied", "rollout", rollout, "action", want.Action, "weight", want.Weight,
				"seq", want.Seq, "command_id", want.CommandID, "took", took)
			if d.opts.Ack != nil {
				d.opts.Ack(want)
			}
			if !newer {
				d.setPending(rollout, false)
			}
			continue
		case ctx.Err() != nil:
			return
		case newer:
			// Superseded (a rollback may have cancelled it): apply the
			// newer state now, without backoff.
			d.count(rollout, "superseded")
			attempt = 0
			continue
		case IsPermanent(err):
			done, attempt = want.Seq, 0
			d.count(rollout, "permanent_error")
			d.log.Error("route not applied: fix the route or its config; waiting for the next command",
				"rollout", rollout, "action", want.Action, "weight", want.Weight, "seq", want.Seq, "err", err)
			if d.opts.NotApplied != nil {
				d.opts.NotApplied()
			}
			continue
		}
		d.count(rollout, "error")
		wait := d.backoff(attempt)
		attempt++
		d.log.Warn("route not applied; retrying", "rollout", rollout, "weight", want.Weight, "seq", want.Seq,
			"attempt", attempt, "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake: // a newer command: try it now
			t.Stop()
			attempt = 0
		case <-t.C:
		}
	}
}

// backoff returns the wait before retry attempt+1.
func (d *Driver) backoff(attempt int) time.Duration {
	w := d.opts.MinBackoff << min(attempt, 20)
	if w > d.opts.MaxBackoff || w <= 0 {
		w = d.opts.MaxBackoff
	}
	return w + time.Duration(rand.Int64N(int64(w)/5+1))
}

func (d *Driver) count(rollout, result string) {
	if d.opts.Metrics != nil {
		d.opts.Metrics.GetOrCreateCounter(fmt.Sprintf(`canaryd_route_applies_total{rollout=%q,result=%q}`, rollout, result)).Inc()
	}
}

func (d *Driver) setWeight(rollout string, w int) {
	if d.opts.Metrics != nil {
		d.opts.Metrics.GetOrCreateGauge(fmt.Sprintf(`canaryd_route_weight{rollout=%q}`, rollout), nil).Set(float64(w))
	}
}

func (d *Driver) setPending(rollout string, p bool) {
	if d.opts.Metrics != nil {
		v := 0.0
		if p {
			v = 1
		}
		d.opts.Metrics.GetOrCreateGauge(fmt.Sprintf(`canaryd_route_pending{rollout=%q}`, rollout), nil).Set(v)
	}
}

func targetOf(st router.State) Target {
	return Target{Rollout: st.Rollout, Baseline: st.Baseline, Canary: st.Canary, CanaryWeight: st.Weight,
		Action: st.Action, Seq: st.Seq, CommandID: st.CommandID, DeploymentID: st.DeploymentID, Commit: st.Commit}
}

// Mux routes each rollout to the adapter that has its route: one router
// process may drive HAProxy backends, Kubernetes routes and Git files at
// once. A rollout has at most one route.
type Mux struct {
	by map[string]Adapter
}

// NewMux returns a Mux over routes (rollout → adapter).
func NewMux(routes map[string]Adapter) *Mux { return &Mux{by: routes} }

// String lists the routes by kind, e.g. "2 routes: haproxy support-agent,
// git triage-agent".
func (m *Mux) String() string {
	names := slices.Sorted(maps.Keys(m.by))
	parts := make([]string, len(names))
	for i, ro := range names {
		parts[i] = m.by[ro].Kind() + " " + ro
	}
	return fmt.Sprintf("%d routes: %s", len(names), strings.Join(parts, ", "))
}

// Kind is "mux": a Mux holds adapters of several kinds.
func (m *Mux) Kind() string { return "mux" }

// Has reports whether rollout has a route.
func (m *Mux) Has(rollout string) bool { _, ok := m.by[rollout]; return ok }

// Apply applies t with the adapter of t.Rollout.
func (m *Mux) Apply(ctx context.Context, t Target) error {
	a, ok := m.by[t.Rollout]
	if !ok {
		return Permanent(fmt.Errorf("route %s: %w", t.Rollout, ErrUnknownRollout))
	}
	return a.Apply(ctx, t)
}

var _ Router = (*Mux)(nil)
