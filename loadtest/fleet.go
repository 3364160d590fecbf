package loadtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/router"
	"github.com/inferensys/canaryd/schemas"
)

// Fleet is a simulated fleet of agents writing events to Kafka and following
// the weights that canaryd's control commands set, which closes the loop
// through Kafka: canaryd judges the events, the fleet obeys the verdicts.
//
// Weight, Commands and Produced are safe to call at any time, from any
// goroutine, also while Run runs.
type Fleet struct {
	cfg FleetConfig
	// sim is driven only by Run's goroutine; its weights are atomics that the
	// control consumer writes.
	sim     *sim
	otlp    bool           // Format is OTLP: one record per session
	index   map[string]int // rollout name → index in sim.rollouts
	promise func(*kgo.Record, error)
	records sync.Pool // *outRecord
	started atomic.Bool

	// produced counts acknowledged records, written by produce promises.
	produced [][2]atomicCounts
	failed   atomic.Int64
	errMu    sync.Mutex
	prodErr  error // first produce error other than a cancellation; guarded by errMu

	mu   sync.Mutex          // guards cmds
	cmds [][]schemas.Command // applied commands per rollout, in order
}

type atomicCounts struct {
	events, requests, errors, sessions, successes atomic.Int64
}

func (a *atomicCounts) add(c *Counts) {
	a.events.Add(c.Events)
	a.requests.Add(c.Requests)
	if c.Errors > 0 {
		a.errors.Add(c.Errors)
	}
	if c.Sessions > 0 {
		a.sessions.Add(c.Sessions)
	}
	if c.Successes > 0 {
		a.successes.Add(c.Successes)
	}
}

// outRecord is a pooled record and what the promise needs to count it.
// Record.Context points back to the outRecord, which is a context.Context by
// embedding context.Background(), so the promise finds it without a map or
// an allocation.
type outRecord struct {
	context.Context
	rec    kgo.Record
	r, ver int
	counts Counts   // what the record holds
	key    [32]byte // OTLP: the trace id in hex, the record's key
}

// NewFleet validates cfg and returns a Fleet ready to Run. It starts no
// goroutines and opens no connections.
func NewFleet(cfg FleetConfig) (*Fleet, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Rollouts = append([]Rollout(nil), cfg.Rollouts...)
	f := &Fleet{
		cfg:      cfg,
		sim:      newSim(cfg.Seed, cfg.Rollouts, 0),
		otlp:     cfg.Format != FormatJSON,
		index:    make(map[string]int, len(cfg.Rollouts)),
		produced: make([][2]atomicCounts, len(cfg.Rollouts)),
		cmds:     make([][]schemas.Command, len(cfg.Rollouts)),
	}
	f.sim.keepReqs = f.otlp
	for i, r := range cfg.Rollouts {
		f.index[r.Name] = i
	}
	f.promise = f.onProduced // one method value, not one per record
	f.records.New = func() any {
		o := &outRecord{Context: context.Background()}
		o.rec.Context = o
		return o
	}
	return f, nil
}

// Weight returns the canary's current percent of new sessions of rollout, or
// -1 if the fleet has no such rollout.
func (f *Fleet) Weight(rollout string) int {
	i, ok := f.index[rollout]
	if !ok {
		return -1
	}
	return int(f.sim.rollouts[i].weight.Load())
}

// Commands returns the commands applied to rollout, in the order they were
// read, each command_id once.
func (f *Fleet) Commands(rollout string) []schemas.Command {
	i, ok := f.index[rollout]
	if !ok {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]schemas.Command(nil), f.cmds[i]...)
}

// Produced returns the records Kafka has acknowledged so far: rollout →
// version → counts (see Counts for what a request is). After Run returns it
// is the run's total.
func (f *Fleet) Produced() map[string]map[string]Counts {
	out := make(map[string]map[string]Counts, len(f.produced))
	for i := range f.produced {
		r := &f.sim.rollouts[i]
		m := make(map[string]Counts, 2)
		for v := range 2 {
			a := &f.produced[i][v]
			m[string(r.version[v])] = Counts{
				Events:    a.events.Load(),
				Requests:  a.requests.Load(),
				Errors:    a.errors.Load(),
				Sessions:  a.sessions.Load(),
				Successes: a.successes.Load(),
			}
		}
		out[r.name] = m
	}
	return out
}

// Failed returns how many records failed to produce, including those still
// unsent FlushTimeout after Run's context ended. (In the OTLP formats a
// record is a session.)
func (f *Fleet) Failed() int64 { return f.failed.Load() }

// Run writes events at the configured rates until ctx is done or MaxEvents
// events are written, then flushes. It returns nil when it stopped for one of
// those reasons, and an error when producing failed, the flush did not finish
// within FlushTimeout, or a client could not be created. Run may be called
// once.
//
// Run starts one goroutine, the control consumer (a router.Subscriber, the
// library real routers use), and waits for it before it returns. The consumer
// reads ControlTopic from the start and applies every command of the fleet's
// rollouts; Run lets it read the commands already there
// (for up to CatchUpTimeout) before the first session starts. Sessions in
// flight when Run stops are abandoned: their agent events are never written
// (in the OTLP formats, none of their spans are).
func (f *Fleet) Run(ctx context.Context) (err error) {
	if !f.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	prod := f.cfg.Client
	if prod == nil {
		opts := append([]kgo.Opt{
			kgo.SeedBrokers(f.cfg.Brokers...),
			kgo.MaxBufferedRecords(f.cfg.MaxInFlight),
		}, f.cfg.ClientOpts...)
		if prod, err = kgo.NewClient(opts...); err != nil {
			return fmt.Errorf("producer: %w", err)
		}
		defer prod.Close() // last: after the flush below
	}
	sub, err := router.New(
		router.Brokers(f.cfg.Brokers...),
		router.Topic(f.cfg.ControlTopic),
		router.SigningKey(f.cfg.SigningKey),
		router.ClientOpts(f.cfg.ClientOpts...),
		router.Logger(f.cfg.Logger),
		router.OnChange(f.apply),
	)
	if err != nil {
		return fmt.Errorf("control consumer: %w", err)
	}
	defer sub.Close()

	cctx, stopConsumer := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := sub.Run(cctx); err != nil && cctx.Err() == nil {
			f.cfg.Logger.Error("control consumer", "err", err)
		}
	})
	// Shutdown order: stop producing (produce returns), flush, then stop the
	// consumer and wait for it, then close the clients (deferred above).
	defer func() {
		stopConsumer()
		wg.Wait()
	}()

	select {
	case <-sub.Ready():
	case <-time.After(f.cfg.CatchUpTimeout):
		f.cfg.Logger.Warn("control topic not caught up; starting anyway", "topic", f.cfg.ControlTopic, "timeout", f.cfg.CatchUpTimeout)
	case <-ctx.Done():
		return nil
	}

	// kgo fails buffered records when the context given to Produce ends, so
	// records get their own context: it ends FlushTimeout after ctx does, or
	// when Run returns, which bounds both a Produce blocked on a full buffer
	// and the final flush.
	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer pcancel()
	stopTimer := context.AfterFunc(ctx, func() { time.AfterFunc(f.cfg.FlushTimeout, pcancel) })
	defer stopTimer()

	err = f.produce(ctx, pctx, prod)
	fctx, cancel := context.WithTimeout(pctx, f.cfg.FlushTimeout)
	defer cancel()
	if ferr := prod.Flush(fctx); ferr != nil {
		err = errors.Join(err, fmt.Errorf("flush: %w", ferr))
	}
	if perr := f.produceErr(); perr != nil && err == nil {
		err = perr
	}
	return err
}

// produce runs the simulation against the clock until ctx is done, MaxEvents
// is reached or a record fails. Records are produced with pctx.
func (f *Fleet) produce(ctx, pctx context.Context, cl *kgo.Client) error {
	start := f.cfg.Clock()
	base := start.UnixNano()
	f.sim.reset(base)
	tick := time.NewTicker(f.cfg.Tick)
	defer tick.Stop()
	var n, records int64 // events (OTLP: spans) and records produced
	for {
		now := base + int64(float64(f.cfg.Clock().Sub(start))*f.cfg.Speed)
		for f.sim.next(now) {
			s := f.sim
			if f.otlp && s.done == nil {
				continue // a request: written with its session
			}
			o := f.records.Get().(*outRecord)
			o.rec = kgo.Record{Topic: f.cfg.EventsTopic, Value: o.rec.Value[:0], Context: o}
			o.r, o.ver = s.cur, s.curVer
			if f.otlp {
				ss := s.done
				o.key = ss.trace
				o.rec.Key = o.key[:]
				o.rec.Value = s.appendOTLP(o.rec.Value, ss, f.cfg.Format == FormatOTLPJSON)
				o.counts = sessionCounts(ss)
			} else {
				o.rec.Key = s.rollouts[s.cur].key
				o.rec.Value = schemas.AppendEvent(o.rec.Value, &s.ev)
				o.counts = eventCounts(&s.ev)
			}
			n += o.counts.Events
			cl.Produce(pctx, &o.rec, f.promise)
			if f.cfg.MaxEvents > 0 && n >= f.cfg.MaxEvents {
				return nil
			}
			if records++; records%256 == 0 {
				if ctx.Err() != nil {
					return nil
				}
				if err := f.produceErr(); err != nil {
					return err
				}
			}
		}
		if err := f.produceErr(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// onProduced is the promise of every record: it counts the record and
// returns it to the pool.
func (f *Fleet) onProduced(r *kgo.Record, err error) {
	o := r.Context.(*outRecord)
	if err == nil {
		f.produced[o.r][o.ver].add(&o.counts)
	} else {
		f.failed.Add(1)
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			f.errMu.Lock()
			if f.prodErr == nil {
				f.prodErr = fmt.Errorf("produce to %s: %w", r.Topic, err)
				f.cfg.Logger.Error("produce failed", "topic", r.Topic, "err", err)
			}
			f.errMu.Unlock()
		}
	}
	o.rec.Value = o.rec.Value[:0]
	f.records.Put(o)
}

func (f *Fleet) produceErr() error {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return f.prodErr
}

// apply is the control subscriber's OnChange: the router library has
// checked the command (valid, signed when a key is set, seq above the last,
// command_id new). The fleet obeys it when it is for one of its rollouts and
// names that rollout's versions (when it names them).
func (f *Fleet) apply(ch router.Change) {
	log := f.cfg.Logger
	c := &ch.Command
	i, ok := f.index[c.Rollout]
	if !ok {
		return // another rollout's
	}
	r := &f.sim.rollouts[i]
	if (c.Baseline != "" && c.Baseline != string(r.version[0])) || (c.Canary != "" && c.Canary != string(r.version[1])) {
		log.Debug("ignored command for other versions", "rollout", c.Rollout, "baseline", c.Baseline, "canary", c.Canary)
		return
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds[i] = append(f.cmds[i], *c)
	switch c.Action {
	case schemas.ActionSetWeight, schemas.ActionPromote, schemas.ActionRollback:
		r.weight.Store(int32(ch.State.Weight)) // 100 after promote, 0 after rollback
	case schemas.ActionHold:
	}
	log.Info("applied command", "rollout", c.Rollout, "action", c.Action, "weight", r.weight.Load(), "seq", c.Seq, "reason", c.Reason)
}
