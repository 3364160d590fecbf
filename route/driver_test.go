package route

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/router"
	"github.com/inferensys/canaryd/schemas"
)

// scripted is a Router whose Apply answers from a script: the Driver's logic
// (retries, supersession, rollback first) is what is under test here; the
// real adapters are tested against HAProxy, a Kubernetes API and git.
type scripted struct {
	mu      sync.Mutex
	calls   []Target
	answer  func(ctx context.Context, t Target, call int) error
	applied []int // CanaryWeight of the calls that returned nil
}

func (s *scripted) Kind() string            { return "scripted" }
func (s *scripted) Has(rollout string) bool { return rollout == "r" }
func (s *scripted) Apply(ctx context.Context, t Target) error {
	s.mu.Lock()
	s.calls = append(s.calls, t)
	n := len(s.calls)
	s.mu.Unlock()
	err := s.answer(ctx, t, n)
	if err == nil {
		s.mu.Lock()
		s.applied = append(s.applied, t.CanaryWeight)
		s.mu.Unlock()
	}
	return err
}

type acks struct {
	mu sync.Mutex
	st []router.State
}

func (a *acks) ack(st router.State) { a.mu.Lock(); a.st = append(a.st, st); a.mu.Unlock() }
func (a *acks) weights() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var w []int
	for _, s := range a.st {
		w = append(w, s.Weight)
	}
	return w
}

func change(seq uint64, action schemas.Action, weight int) router.Change {
	return router.Change{State: router.State{Rollout: "r", Baseline: "v1", Canary: "v2", Action: action,
		Weight: weight, Seq: seq, CommandID: "c" + string(rune('0'+seq)), DecidedAt: time.Now()}}
}

// drive runs a Driver over s in a synctest bubble: f offers commands.
func drive(t *testing.T, s *scripted, f func(d *Driver, a *acks)) (*acks, *metrics.Set, int) {
	t.Helper()
	var a acks
	ms := metrics.NewSet()
	notApplied := 0
	synctest.Test(t, func(t *testing.T) {
		d := NewDriver(s, DriverOptions{Ack: a.ack, NotApplied: func() { notApplied++ }, Metrics: ms,
			MinBackoff: time.Second, MaxBackoff: 8 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { d.Run(ctx); close(done) }()
		f(d, &a)
		synctest.Wait()
		cancel()
		<-done
	})
	return &a, ms, notApplied
}

func offer(t *testing.T, d *Driver, ch router.Change) {
	t.Helper()
	if err := d.Offer(ch); !errors.Is(err, router.ErrAckLater) {
		t.Fatalf("Offer(seq %d) = %v; want ErrAckLater", ch.State.Seq, err)
	}
}

func TestDriverAppliesAndAcks(t *testing.T) {
	s := &scripted{answer: func(context.Context, Target, int) error { return nil }}
	a, ms, _ := drive(t, s, func(d *Driver, _ *acks) {
		offer(t, d, change(1, schemas.ActionSetWeight, 5))
		synctest.Wait()
		offer(t, d, change(2, schemas.ActionSetWeight, 25))
	})
	if got := a.weights(); len(got) != 2 || got[0] != 5 || got[1] != 25 {
		t.Fatalf("acked weights %v; want [5 25]", got)
	}
	for _, st := range a.st {
		if st.AppliedAt.IsZero() {
			t.Fatalf("ack of seq %d has no AppliedAt", st.Seq)
		}
	}
	var b strings.Builder
	ms.WritePrometheus(&b)
	for _, want := range []string{`canaryd_route_applies_total{rollout="r",result="applied"} 2`, `canaryd_route_weight{rollout="r"} 25`, `canaryd_route_pending{rollout="r"} 0`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}

// A failing Apply is retried with growing waits until it succeeds; the
// command is acknowledged once.
func TestDriverRetriesWithBackoff(t *testing.T) {
	var at []time.Time
	s := &scripted{answer: func(_ context.Context, _ Target, call int) error {
		at = append(at, time.Now())
		if call < 4 {
			return errors.New("connection refused")
		}
		return nil
	}}
	a, _, notApplied := drive(t, s, func(d *Driver, _ *acks) {
		offer(t, d, change(1, schemas.ActionSetWeight, 5))
		time.Sleep(time.Minute) // synctest's clock: the retries run through their backoff
	})
	if got := a.weights(); len(got) != 1 || got[0] != 5 {
		t.Fatalf("acked %v; want [5]", got)
	}
	if len(at) != 4 || notApplied != 0 {
		t.Fatalf("%d calls, %d not applied; want 4, 0", len(at), notApplied)
	}
	for i, lo := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if gap := at[i+1].Sub(at[i]); gap < lo || gap > lo*12/10 {
			t.Errorf("wait before retry %d: %v; want %v..%v", i+1, gap, lo, lo*12/10)
		}
	}
}

// A permanent error is not retried: the command is not applied (counted),
// and the next command is applied.
func TestDriverPermanentError(t *testing.T) {
	s := &scripted{answer: func(_ context.Context, t Target, _ int) error {
		if t.Seq == 1 {
			return Permanentf("backend has a third server")
		}
		return nil
	}}
	a, _, notApplied := drive(t, s, func(d *Driver, _ *acks) {
		offer(t, d, change(1, schemas.ActionSetWeight, 5))
		time.Sleep(time.Minute)
		st := d.Status()
		if len(st) != 1 || !st[0].Pending || st[0].Applied != nil || !strings.Contains(st[0].Error, "third server") {
			t.Errorf("status after the permanent error: %+v; want pending, nothing applied, the error", st)
		}
		offer(t, d, change(2, schemas.ActionRollback, 0))
		synctest.Wait()
		st = d.Status()
		if len(st) != 1 || st[0].Pending || st[0].Applied == nil || st[0].Applied.Weight != 0 || st[0].Error != "" {
			t.Errorf("status after the rollback: %+v; want applied weight 0, no error", st)
		}
	})
	if len(s.calls) != 2 || notApplied != 1 {
		t.Fatalf("%d calls, %d not applied; want 2 (no retry), 1", len(s.calls), notApplied)
	}
	if got := a.weights(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("acked %v; want [0]", got)
	}
}

// A rollback cancels a slow Apply in flight and is applied at once; the
// cancelled set_weight is never acknowledged.
func TestDriverRollbackOvertakes(t *testing.T) {
	s := &scripted{answer: func(ctx context.Context, t Target, _ int) error {
		if t.Action == schemas.ActionSetWeight {
			<-ctx.Done() // a write that hangs until the Driver gives up on it
			return ctx.Err()
		}
		return nil
	}}
	var rolledBackAfter time.Duration
	a, _, _ := drive(t, s, func(d *Driver, _ *acks) {
		offer(t, d, change(1, schemas.ActionSetWeight, 25))
		time.Sleep(5 * time.Second) // the set_weight hangs (ApplyTimeout 30s)
		start := time.Now()
		offer(t, d, change(2, schemas.ActionRollback, 0))
		synctest.Wait()
		rolledBackAfter = time.Since(start)
	})
	if got := a.weights(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("acked %v; want [0] (the rollback only)", got)
	}
	if rolledBackAfter != 0 {
		t.Fatalf("rollback applied %v after it was offered; want at once", rolledBackAfter)
	}
}

// A command that arrives while an older one waits for its retry is applied
// at once, and the older one is not retried.
func TestDriverNewerEndsBackoff(t *testing.T) {
	s := &scripted{answer: func(_ context.Context, t Target, _ int) error {
		if t.Seq == 1 {
			return errors.New("503")
		}
		return nil
	}}
	a, _, _ := drive(t, s, func(d *Driver, _ *acks) {
		offer(t, d, change(1, schemas.ActionSetWeight, 5))
		synctest.Wait() // first attempt failed; waiting 1s
		offer(t, d, change(2, schemas.ActionSetWeight, 25))
		synctest.Wait()
	})
	if len(s.calls) != 2 || s.calls[1].Seq != 2 {
		t.Fatalf("calls %+v; want seq 1 then seq 2", s.calls)
	}
	if got := a.weights(); len(got) != 1 || got[0] != 25 {
		t.Fatalf("acked %v; want [25]", got)
	}
}

func TestDriverRefuses(t *testing.T) {
	s := &scripted{answer: func(context.Context, Target, int) error { return nil }}
	d := NewDriver(s, DriverOptions{})
	ch := change(1, schemas.ActionSetWeight, 5)
	ch.State.Rollout = "other"
	if err := d.Offer(ch); !errors.Is(err, ErrUnknownRollout) {
		t.Fatalf("unknown rollout: %v; want ErrUnknownRollout", err)
	}
	ch = change(1, schemas.ActionSetWeight, 5)
	ch.State.Cohort = &schemas.Cohort{Attribute: "user_tier", Values: []string{"internal"}}
	if err := d.Offer(ch); !errors.Is(err, ErrCohort) {
		t.Fatalf("cohort: %v; want ErrCohort", err)
	}
	ch = change(2, schemas.ActionRollback, 0)
	ch.State.Cohort = &schemas.Cohort{Attribute: "user_tier", Values: []string{"internal"}}
	if err := d.Offer(ch); !errors.Is(err, router.ErrAckLater) {
		t.Fatalf("rollback with a cohort: %v; want taken (weight 0 for everyone)", err)
	}
}
