package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/schemas"
)

// Subscriber follows canaryd's control topic and keeps the state of every
// rollout in a Table. It reads the topic from the start without a consumer
// group (every router needs every command): first to the end offsets the
// topic had when Run started (the bootstrap: on a compacted topic, the latest
// command of each rollout), then whatever comes.
//
// State, States, Assign and Stats are safe to call at any time from any
// goroutine, also before Run (they then know no rollout).
type Subscriber struct {
	cfg   cfg
	cl    *kgo.Client
	table *Table

	ready     chan struct{} // closed when the bootstrap is done
	readyOnce sync.Once
	started   atomic.Bool // Run was called

	acksSent, acksFailed, notApplied atomic.Uint64
}

// AckStats counts the acknowledgements of a Subscriber with Acks.
type AckStats struct {
	Sent       uint64 // acks the broker has
	Failed     uint64 // acks that could not be produced (logged at Warn)
	NotApplied uint64 // applied commands that Apply said were not put in force: no ack
}

// ErrAckLater, returned by an Apply function, says that the command was
// taken over to be put in force asynchronously: the Subscriber neither
// acknowledges it nor counts it as not applied; the taker calls Ack when it
// is in force.
var ErrAckLater = errors.New("router: command taken over; acknowledged later")

// ErrAlreadyRun is returned by a second call of Subscriber.Run.
var ErrAlreadyRun = errors.New("router: subscriber already run")

// New validates the options and creates the Kafka client. It starts no
// goroutine of its own (franz-go's client runs its own) and reads nothing
// until Run.
func New(opts ...Opt) (*Subscriber, error) {
	c := defaultCfg()
	for _, o := range opts {
		o(&c)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(c.brokers...)}, c.clientOpts...),
		kgo.ConsumeTopics(c.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("router: kafka client: %w", err)
	}
	return &Subscriber{cfg: c, cl: cl, table: NewTable(c.key), ready: make(chan struct{})}, nil
}

// Ready returns a channel that is closed once Run has applied every record
// that was on the topic when it started. Until then Assign may answer from
// an older command than the latest.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// Run bootstraps from the control topic and then follows it, applying
// commands, until ctx ends or the Subscriber is closed; it then returns nil
// (or ctx's error when ctx ended before the bootstrap was done). It runs in
// the caller's goroutine and starts none. Run may be called once; a second
// call returns ErrAlreadyRun.
//
// The bootstrap ends when every partition's record at its end offset minus
// one has been read; canaryd writes no transactions, so that record is a
// command, not a transaction marker.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}

	end, err := s.endOffsets(ctx)
	if err != nil {
		return err
	}
	replayTo := maps.Clone(end) // offsets below these are the bootstrap's
	s.markReady(end)
	for {
		fs := s.cl.PollFetches(ctx)
		if fs.IsClientClosed() || ctx.Err() != nil {
			if len(end) > 0 && ctx.Err() != nil {
				return fmt.Errorf("router: bootstrap from %s: %w", s.cfg.topic, ctx.Err())
			}
			return nil
		}
		fs.EachError(func(topic string, p int32, err error) {
			s.cfg.logger.Warn("fetch control topic", "topic", topic, "partition", p, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			s.apply(r, r.Offset < replayTo[r.Partition])
			if e, ok := end[r.Partition]; ok && r.Offset+1 >= e {
				delete(end, r.Partition)
			}
		})
		s.markReady(end)
	}
}

// Close ends a running Run and shuts the client down: with Acks, it first
// waits up to AckFlushTimeout for the acks not yet on the broker, then
// closes the Kafka client (acks still unsent then are counted as failed).
func (s *Subscriber) Close() {
	if s.cfg.acksTopic != "" && s.cfg.ackFlush > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ackFlush)
		if err := s.cl.Flush(ctx); err != nil {
			s.cfg.logger.Warn("acks not flushed before close", "err", err)
		}
		cancel()
	}
	s.cl.Close()
}

// AckStats returns the counters of the acknowledgements.
func (s *Subscriber) AckStats() AckStats {
	return AckStats{Sent: s.acksSent.Load(), Failed: s.acksFailed.Load(), NotApplied: s.notApplied.Load()}
}

// endOffsets returns the end offset of each non-empty partition of the
// topic, asking until the broker answers or ctx ends. A topic that does not
// exist yet is empty.
func (s *Subscriber) endOffsets(ctx context.Context) (map[int32]int64, error) {
	adm := kadm.NewClient(s.cl)
	for {
		listed, err := adm.ListEndOffsets(ctx, s.cfg.topic)
		if err == nil {
			err = listed.Error()
		}
		if err == nil || errors.Is(err, kerr.UnknownTopicOrPartition) {
			end := map[int32]int64{}
			listed.Each(func(o kadm.ListedOffset) {
				if o.Err == nil && o.Offset > 0 {
					end[o.Partition] = o.Offset
				}
			})
			return end, nil
		}
		s.cfg.logger.Warn("list control topic end offsets; retrying", "topic", s.cfg.topic, "err", err, "in", s.cfg.retry)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("router: bootstrap from %s: %w (last error: %v)", s.cfg.topic, ctx.Err(), err)
		case <-time.After(s.cfg.retry):
		}
	}
}

func (s *Subscriber) markReady(end map[int32]int64) {
	if len(end) == 0 {
		s.readyOnce.Do(func() { close(s.ready) })
	}
}

func (s *Subscriber) apply(r *kgo.Record, replay bool) {
	ch, err := s.table.Apply(r.Key, r.Value, s.cfg.clock())
	log := s.cfg.logger
	if err != nil {
		var refused *RefusedError
		if errors.As(err, &refused) {
			log.Warn("refused control command", "partition", r.Partition, "offset", r.Offset, "reason", refused.Reason, "rollout", refused.Rollout, "err", err)
		} else {
			log.Debug("ignored control command", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
		}
		if s.cfg.onRefused != nil {
			s.cfg.onRefused(r, err)
		}
		return
	}
	ch.Replay = replay
	st := &ch.State
	log.Debug("applied control command", "rollout", st.Rollout, "action", st.Action, "weight", st.Weight,
		"seq", st.Seq, "command_id", st.CommandID, "replay", ch.Replay)
	if s.cfg.onChange != nil {
		s.cfg.onChange(ch)
	}
	if s.cfg.apply != nil {
		err := s.cfg.apply(ch)
		if errors.Is(err, ErrAckLater) {
			return
		}
		if err != nil {
			s.notApplied.Add(1)
			log.Warn("command not applied: not acknowledged", "rollout", st.Rollout, "seq", st.Seq, "command_id", st.CommandID, "err", err)
			return
		}
	}
	if s.cfg.acksTopic != "" {
		s.ack(st)
	}
}

// Ack publishes the acknowledgement of st, a state that an Apply function
// took over with ErrAckLater and has now put in force (set st.AppliedAt to
// when). Without Acks it does nothing. Safe from any goroutine.
func (s *Subscriber) Ack(st State) {
	if s.cfg.acksTopic != "" {
		s.ack(&st)
	}
}

// NotApplied counts a command that an Apply function took over with
// ErrAckLater and then could not put in force (AckStats.NotApplied).
func (s *Subscriber) NotApplied() { s.notApplied.Add(1) }

// ack publishes the acknowledgement of an applied command without waiting
// for the broker: franz-go retries it (in order per rollout, which is the
// key) until the broker has it or the client is closed.
func (s *Subscriber) ack(st *State) {
	a := schemas.Ack{CommandID: st.CommandID, Rollout: st.Rollout, Seq: st.Seq, Weight: st.Weight, Action: st.Action,
		Router: s.cfg.routerID, AppliedAt: st.AppliedAt}
	b, err := json.Marshal(a)
	if err != nil {
		panic("BUG: encode ack: " + err.Error())
	}
	rec := &kgo.Record{Topic: s.cfg.acksTopic, Key: []byte(st.Rollout), Value: b}
	s.cl.Produce(context.Background(), rec, func(r *kgo.Record, err error) {
		if err != nil {
			s.acksFailed.Add(1)
			s.cfg.logger.Warn("ack not published", "topic", r.Topic, "rollout", a.Rollout, "seq", a.Seq, "err", err)
			return
		}
		s.acksSent.Add(1)
	})
}

// State returns the state of rollout and whether it has one.
func (s *Subscriber) State(rollout string) (State, bool) { return s.table.State(rollout) }

// States returns the state of every rollout, sorted by rollout.
func (s *Subscriber) States() []State { return s.table.States() }

// Assign returns the version a request goes to (see State.Assign), or ""
// when the rollout has no state.
func (s *Subscriber) Assign(rollout, key string, attrs map[string]string) string {
	return s.table.Assign(rollout, key, attrs)
}

// Stats returns the counters of the records read.
func (s *Subscriber) Stats() Stats { return s.table.Stats() }
