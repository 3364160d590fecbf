package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
)

// Acknowledgements (Config.AcksTopic): routers publish a schemas.Ack for
// every command they applied (router.Acks). The ack reader, a goroutine
// with a Kafka client of its own, follows the acks topic and the control
// topic, both from the start and without a consumer group: every instance
// serves the status of every rollout, so each needs every router's acks
// (a group would split them between instances), and reading from the start
// rebuilds the state after a restart without a checkpoint. The control
// topic gives each rollout's latest command and when it was published (its
// record timestamp, canaryd's clock), which is what a router is late for.
//
// The reader is the only writer of acks.rollouts; acks.mu is a leaf lock,
// held for map work only (never across Kafka I/O), taken by the status
// (under Daemon.mu) and by metric scrapes.
//
// Metrics:
//
//	canaryd_router_acks_total{rollout,router}       acks read (valid, of a rollout with a spec)
//	canaryd_router_weight{rollout,router}           the weight the router last acknowledged
//	canaryd_router_ack_missing{rollout,router}      1 while the router has not acknowledged the rollout's latest command within Config.AckTimeout
//	canaryd_acks_invalid_total{reason}              ack records skipped: not_json, invalid, key_mismatch, unknown_rollout

// Reasons an ack record is skipped (canaryd_acks_invalid_total{reason}).
const (
	ackNotJSON        = "not_json"
	ackInvalid        = "invalid"
	ackKeyMismatch    = "key_mismatch"
	ackUnknownRollout = "unknown_rollout"
	ackTooManyRouters = "too_many_routers"
)

// maxRouters bounds the routers kept per rollout: acks of a further router
// id are counted (too_many_routers) and skipped, so that router ids (a
// misconfiguration that makes one per pod restart, say) cannot grow
// canaryd's memory and series without bound.
const maxRouters = 256

type acks struct {
	topic, control string
	timeout        time.Duration
	client         *kgo.Client
	ms             *metrics.Set
	logger         *slog.Logger
	known          func(rollout string) bool // takes Daemon.mu: never called with mu held
	// applied is told, with no lock held, of each rollout whose acks
	// changed: cmdID is its latest command when every router that acks
	// has acknowledged it ("" otherwise), at the newest of those acks.
	// It takes Daemon.mu.
	applied func(rollout, cmdID string, at time.Time)

	mu       sync.Mutex // guards rollouts and dirty; a leaf
	rollouts map[string]*ackRollout
	dirty    map[string]bool // rollouts whose acks or latest command changed since applied was told
}

type ackRollout struct {
	latest   schemas.Command // the rollout's latest command on the control topic (zero: none read)
	latestAt time.Time       // its record's timestamp
	routers  map[string]*routerAcks
}

type routerAcks struct {
	last   schemas.Ack
	since  time.Time // applied_at of the first ack at last.Weight
	logged string    // the command id this router was last logged as lagging for
}

// newAcks creates the ack reader's client; it starts nothing.
func newAcks(cfg Config, known func(string) bool) (*acks, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID("canaryd-acks"),
		kgo.ConsumeTopics(cfg.AcksTopic, cfg.ControlTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}, cfg.KgoOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka acks reader: %w", err)
	}
	a := &acks{topic: cfg.AcksTopic, control: cfg.ControlTopic, timeout: cfg.AckTimeout, client: cl, ms: cfg.Metrics,
		logger: cfg.Logger, known: known, rollouts: map[string]*ackRollout{}, dirty: map[string]bool{}}
	for _, r := range []string{ackNotJSON, ackInvalid, ackKeyMismatch, ackUnknownRollout, ackTooManyRouters} {
		cfg.Metrics.GetOrCreateCounter(`canaryd_acks_invalid_total{reason="` + r + `"}`)
	}
	return a, nil
}

// run reads the two topics until ctx ends, then closes the client. Between
// polls (at least every quarter of the timeout) it looks for routers that
// are late, so that they are logged and counted without a new record.
func (a *acks) run(ctx context.Context) {
	defer a.client.Close()
	tick := min(max(a.timeout/4, 10*time.Millisecond), time.Second)
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, tick)
		fs := a.client.PollFetches(pctx)
		cancel()
		if fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				a.logger.Warn("read acks", "topic", topic, "partition", p, "err", err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Topic == a.control {
				a.onCommand(r)
			} else {
				a.onAck(r)
			}
		})
		a.check(time.Now())
		a.tellApplied()
	}
}

// tellApplied tells applied of each rollout whose acks changed, with no
// lock held.
func (a *acks) tellApplied() {
	type upd struct {
		rollout, cmdID string
		at             time.Time
	}
	var us []upd
	a.mu.Lock()
	for id := range a.dirty {
		ro := a.rollouts[id]
		u := upd{rollout: id}
		if ro != nil && len(ro.routers) > 0 && ro.latest.CommandID != "" {
			u.cmdID = ro.latest.CommandID
			for _, ra := range ro.routers {
				if ra.last.CommandID != ro.latest.CommandID {
					u.cmdID = ""
					break
				}
				if ra.last.AppliedAt.After(u.at) {
					u.at = ra.last.AppliedAt
				}
			}
		}
		if ro != nil && len(ro.routers) > 0 {
			us = append(us, u)
		}
	}
	clear(a.dirty)
	a.mu.Unlock()
	if a.applied == nil {
		return
	}
	for _, u := range us {
		a.applied(u.rollout, u.cmdID, u.at)
	}
}

// tooManyRouters reports whether router would be one more than maxRouters
// for rollout.
func (a *acks) tooManyRouters(rollout, router string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ro := a.rollouts[rollout]
	return ro != nil && ro.routers[router] == nil && len(ro.routers) >= maxRouters
}

// markDirty notes that rollout's acks or latest command changed. a.mu
// must be held.
func (a *acks) markDirty(rollout string) {
	if a.dirty == nil {
		a.dirty = map[string]bool{}
	}
	a.dirty[rollout] = true
}

// hasRouters reports whether routers acknowledged anything of rollout.
func (a *acks) hasRouters(rollout string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ro := a.rollouts[rollout]
	return ro != nil && len(ro.routers) > 0
}

// onCommand records a rollout's latest command (the highest seq).
func (a *acks) onCommand(r *kgo.Record) {
	var c schemas.Command
	if r.Value == nil || json.Unmarshal(r.Value, &c) != nil || c.Validate() != nil {
		return // the control topic's own readers count these
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ro := a.rollout(c.Rollout)
	if c.Seq > ro.latest.Seq {
		ro.latest, ro.latestAt = c, r.Timestamp
		ro.latest.Evidence = nil // not needed here
		a.markDirty(c.Rollout)
	}
}

// onAck checks an ack record and keeps, per router, the one of the highest
// seq. A bad record is counted and skipped.
func (a *acks) onAck(r *kgo.Record) {
	var ack schemas.Ack
	reason := ""
	switch {
	case r.Value == nil || json.Unmarshal(r.Value, &ack) != nil:
		reason = ackNotJSON
	case ack.Validate() != nil:
		reason = ackInvalid
	case string(r.Key) != ack.Rollout:
		reason = ackKeyMismatch
	case !a.known(ack.Rollout):
		reason = ackUnknownRollout
	}
	if reason != "" {
		a.ms.GetOrCreateCounter(`canaryd_acks_invalid_total{reason="` + reason + `"}`).Inc()
		a.logger.Debug("ack skipped", "reason", reason, "partition", r.Partition, "offset", r.Offset, "key", string(r.Key))
		return
	}
	if a.tooManyRouters(ack.Rollout, ack.Router) {
		a.ms.GetOrCreateCounter(`canaryd_acks_invalid_total{reason="` + ackTooManyRouters + `"}`).Inc()
		a.logger.Debug("ack skipped", "reason", ackTooManyRouters, "rollout", ack.Rollout, "router", ack.Router)
		return
	}
	a.ms.GetOrCreateCounter(routerSeries("canaryd_router_acks_total", ack.Rollout, ack.Router)).Inc()
	// The gauge reads the state at each scrape (taking a.mu: so it is
	// created without it).
	rollout, router := ack.Rollout, ack.Router
	a.ms.GetOrCreateGauge(routerSeries("canaryd_router_weight", rollout, router), func() float64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		if ro := a.rollouts[rollout]; ro != nil && ro.routers[router] != nil {
			return float64(ro.routers[router].last.Weight)
		}
		return math.NaN()
	})
	a.ms.GetOrCreateGauge(routerSeries("canaryd_router_ack_missing", rollout, router), func() float64 {
		if a.lagging(rollout, router, time.Now()) {
			return 1
		}
		return 0
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	ro := a.rollout(ack.Rollout)
	ra := ro.routers[ack.Router]
	if ra == nil {
		ra = &routerAcks{}
		ro.routers[ack.Router] = ra
	}
	if ack.Seq <= ra.last.Seq {
		return // older than what the router already acknowledged
	}
	if ra.last.Seq == 0 || ra.last.Weight != ack.Weight {
		ra.since = ack.AppliedAt
	}
	ra.last = ack
	a.markDirty(ack.Rollout)
}

func routerSeries(name, rollout, router string) string {
	return fmt.Sprintf(`%s{rollout=%q,router=%q}`, name, rollout, router)
}

// rollout returns ro's state, created empty. a.mu must be held.
func (a *acks) rollout(id string) *ackRollout {
	ro := a.rollouts[id]
	if ro == nil {
		ro = &ackRollout{routers: map[string]*routerAcks{}}
		a.rollouts[id] = ro
	}
	return ro
}

// isLagging is the decision: a router that has acknowledged something of
// the rollout is late when the rollout's latest command was published
// timeout or longer before now and the router's last ack is of an older
// command.
func isLagging(last schemas.Ack, latest schemas.Command, latestAt, now time.Time, timeout time.Duration) bool {
	return latest.Seq > last.Seq && now.Sub(latestAt) >= timeout
}

func (a *acks) lagging(rollout, router string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ro := a.rollouts[rollout]
	if ro == nil || ro.routers[router] == nil {
		return false
	}
	return isLagging(ro.routers[router].last, ro.latest, ro.latestAt, now, a.timeout)
}

// check logs each router that is late, once per command.
func (a *acks) check(now time.Time) {
	type late struct {
		rollout, router, id string
		seq, acked          uint64
		since               time.Duration
	}
	var lates []late
	a.mu.Lock()
	for id, ro := range a.rollouts {
		for name, ra := range ro.routers {
			if ra.logged != ro.latest.CommandID && isLagging(ra.last, ro.latest, ro.latestAt, now, a.timeout) {
				ra.logged = ro.latest.CommandID
				lates = append(lates, late{id, name, ro.latest.CommandID, ro.latest.Seq, ra.last.Seq, now.Sub(ro.latestAt)})
			}
		}
	}
	a.mu.Unlock()
	for _, l := range lates {
		a.logger.Warn("router has not acknowledged the rollout's latest command", "rollout", l.rollout, "router", l.router,
			"command_id", l.id, "seq", l.seq, "acknowledged_seq", l.acked, "published_ago", l.since.Round(time.Millisecond), "timeout", a.timeout)
	}
}

// routers returns what the acks say of rollout's routers, sorted by router.
func (a *acks) routers(rollout string, now time.Time) []schemas.RouterAck {
	a.mu.Lock()
	defer a.mu.Unlock()
	ro := a.rollouts[rollout]
	if ro == nil || len(ro.routers) == 0 {
		return nil
	}
	out := make([]schemas.RouterAck, 0, len(ro.routers))
	for name, ra := range ro.routers {
		out = append(out, schemas.RouterAck{Router: name, Weight: ra.last.Weight, Action: ra.last.Action, CommandID: ra.last.CommandID,
			Seq: ra.last.Seq, AppliedAt: ra.last.AppliedAt, Since: ra.since, LatestSeq: ro.latest.Seq,
			Lagging: isLagging(ra.last, ro.latest, ro.latestAt, now, a.timeout)})
	}
	slices.SortFunc(out, func(x, y schemas.RouterAck) int { return strings.Compare(x.Router, y.Router) })
	return out
}

// acksTopicSpec is the acks topic canaryd creates: key = rollout, so not
// compacted (every router's acks share the key); a week of retention.
func acksTopicSpec(name string) sink.TopicSpec {
	week := "604800000"
	return sink.TopicSpec{Name: name, Partitions: 1, Purpose: "routers' acknowledgements of applied commands (key = rollout)",
		Configs: map[string]*string{"retention.ms": &week}}
}

// closeAcks closes the ack reader's client when its goroutine was never
// started.
func (d *Daemon) closeAcks() {
	if d.acks != nil {
		d.acks.client.Close()
	}
}

// knownRollout reports whether canaryd has a spec for rollout. It takes
// d.mu: the ack reader calls it holding no lock.
func (d *Daemon) knownRollout(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, file := d.fileSpecs[id]
	_, auto := d.autoSpecs[id]
	return file || auto || d.judges[id] != nil
}

// onApplied is the ack reader's applied callback: the rollout's judge
// expects acknowledgements from now on (its routers are known), and a step
// whose set_weight every router acknowledged starts counting
// (detector.Judge.Applied). Takes d.mu; called with no lock held.
func (d *Daemon) onApplied(rollout, cmdID string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	j := d.judges[rollout]
	if j == nil {
		return
	}
	changed := j.ExpectAcks()
	if j.Applied(cmdID, at) {
		changed = true
		d.cfg.Logger.Info("routers acknowledged the step: it counts from now", "rollout", rollout, "command_id", cmdID, "acknowledged_at", at)
	}
	if changed {
		delete(d.saved, rollout) // the next checkpoint holds it
	}
}
