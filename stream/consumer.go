// Package stream reads agent events from Kafka: a franz-go consumer group on
// the events topic, one goroutine owning each assigned partition (the only
// writer of that partition's window state), decoding records without
// allocating and counting them into windows. Malformed records go to the
// dead-letter callback with their reason; offsets are committed only for
// records whose windows have reached the detector.
//
// Metrics (on Options.Metrics):
//
//	canaryd_records_total                       records consumed
//	canaryd_records_rejected_total{reason="…"}  records sent to the DLQ, by reason
//	canaryd_events_late_total                   events behind the watermark, dropped
//	canaryd_consumer_lag{topic,partition}       high watermark − next offset
//	canaryd_partitions_assigned                 partitions owned by this instance
//	canaryd_fetch_errors_total                  fetch errors (the client retries)
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// DeadLetter is a record refused with its reason.
type DeadLetter struct {
	Record *kgo.Record
	Reason string
}

// Options configure a Consumer.
type Options struct {
	Brokers []string
	// Topics to consume, each with the decoder of its format. Default:
	// {"agent.events": JSONDecoder}.
	Topics map[string]NewDecoder
	// Group is the consumer group. Default "canaryd".
	Group string
	// Window configures each partition's windows; its Emit is set by the
	// Consumer to OnClosed.
	Window window.Options
	// OnClosed receives every closed window, from the partition goroutines
	// concurrently. Required.
	OnClosed func(window.Closed)
	// DeadLetters writes refused records durably before their offsets are
	// committed (for example to the DLQ topic). Required.
	DeadLetters func(context.Context, []DeadLetter) error
	// Metrics receives the consumer's metrics; nil means none.
	Metrics *metrics.Set
	// Logger; nil means none.
	Logger *slog.Logger
	// Clock gives the wall time for idleness and future checks. Default time.Now.
	Clock func() time.Time
	// KgoOpts are extra client options (TLS, SASL, …).
	KgoOpts []kgo.Opt
}

func (o *Options) validate() error {
	if len(o.Brokers) == 0 {
		return errors.New("stream: no brokers")
	}
	if o.OnClosed == nil || o.DeadLetters == nil {
		return errors.New("stream: OnClosed and DeadLetters are required")
	}
	if len(o.Topics) == 0 {
		o.Topics = map[string]NewDecoder{"agent.events": JSONDecoder}
	}
	if o.Group == "" {
		o.Group = "canaryd"
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return nil
}

// Consumer consumes the events topic in a consumer group.
type Consumer struct {
	opts Options
	cl   *kgo.Client

	mu    sync.Mutex // guards parts
	parts map[tp]*partConsumer

	records, late, fetchErrors *metrics.Counter
	rejected                   sync.Map // reason label → *metrics.Counter
}

// New validates opts and creates the Kafka client; it starts no goroutine
// until Run.
func New(opts Options) (*Consumer, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Consumer{opts: opts, parts: map[tp]*partConsumer{}}
	topics := make([]string, 0, len(opts.Topics))
	for t := range opts.Topics {
		topics = append(topics, t)
	}
	c.records = opts.Metrics.NewCounter("canaryd_records_total")
	c.late = opts.Metrics.NewCounter("canaryd_events_late_total")
	c.fetchErrors = opts.Metrics.NewCounter("canaryd_fetch_errors_total")
	opts.Metrics.NewGauge("canaryd_partitions_assigned", func() float64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return float64(len(c.parts))
	})
	kopts := append([]kgo.Opt{
		kgo.SeedBrokers(opts.Brokers...),
		kgo.ConsumerGroup(opts.Group),
		kgo.ConsumeTopics(topics...),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Second),
		kgo.OnPartitionsAssigned(c.assigned),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
		kgo.FetchMaxPartitionBytes(4 << 20),
		kgo.ClientID("canaryd"),
	}, opts.KgoOpts...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("stream: kafka client: %w", err)
	}
	c.cl = cl
	return c, nil
}

// Client returns the underlying Kafka client (for lag and admin queries).
func (c *Consumer) Client() *kgo.Client { return c.cl }

// Run polls until ctx is done, then stops every partition goroutine
// (flushing their open windows), commits, leaves the group and closes the
// client. It returns nil on a clean stop.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.cl.Close()
	for {
		fetches := c.cl.PollRecords(ctx, 10_000)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
			c.fetchErrors.Inc()
			c.opts.Logger.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		// Hand each partition's records to its goroutine and poll again at
		// once: fetching and decoding overlap. The send blocks when the
		// partition is queueBatches behind, which bounds memory. c.mu is held
		// so that a revoke cannot close the channel under the send.
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) == 0 {
				return
			}
			c.mu.Lock()
			if pc := c.parts[tp{ftp.Topic, ftp.Partition}]; pc != nil {
				pc.work <- ftp
			}
			c.mu.Unlock()
		})
	}
	// Shutdown, in order: stop partition goroutines (they flush their windows
	// and mark their offsets), commit what was marked, then leave the group.
	c.stopAll(c.allParts(), true)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.cl.CommitMarkedOffsets(cctx); err != nil {
		c.opts.Logger.Warn("final commit failed", "err", err)
	}
	return nil
}

// tp names one partition of one topic.
type tp struct {
	topic string
	p     int32
}

func (c *Consumer) allParts() map[string][]int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]int32{}
	for k := range c.parts {
		out[k.topic] = append(out[k.topic], k.p)
	}
	return out
}

func (c *Consumer) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, ps := range assigned {
		for _, p := range ps {
			k := tp{topic, p}
			if c.parts[k] != nil {
				continue
			}
			pc := c.newPart(topic, p)
			c.parts[k] = pc
			go pc.run()
		}
	}
	c.opts.Logger.Info("partitions assigned", "partitions", assigned)
}

func (c *Consumer) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	c.stopAll(revoked, true)
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		c.opts.Logger.Warn("commit on revoke failed", "err", err)
	}
	c.opts.Logger.Info("partitions revoked", "partitions", revoked)
}

func (c *Consumer) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	// Lost partitions may already be someone else's: do not flush half
	// windows into the detector as if they were complete; the new owner
	// replays from the last commit.
	c.stopAll(lost, false)
	c.opts.Logger.Warn("partitions lost", "partitions", lost)
}

func (c *Consumer) stopAll(tps map[string][]int32, flush bool) {
	var stopped []*partConsumer
	c.mu.Lock()
	for topic, ps := range tps {
		for _, p := range ps {
			if pc := c.parts[tp{topic, p}]; pc != nil {
				delete(c.parts, tp{topic, p})
				stopped = append(stopped, pc)
			}
		}
	}
	c.mu.Unlock()
	for _, pc := range stopped {
		pc.flush = flush
		close(pc.work)
	}
	for _, pc := range stopped {
		<-pc.done
	}
}

func (c *Consumer) rejectCounter(reason string) *metrics.Counter {
	label := reasonLabel(reason)
	if v, ok := c.rejected.Load(label); ok {
		return v.(*metrics.Counter)
	}
	ctr := c.opts.Metrics.GetOrCreateCounter(`canaryd_records_rejected_total{reason="` + label + `"}`)
	c.rejected.Store(label, ctr)
	return ctr
}

// reasonLabel reduces a reason to a bounded metric label: the field name of
// a DecodeError, or a fixed word.
func reasonLabel(reason string) string {
	for i := 0; i < len(reason); i++ {
		if reason[i] == ':' {
			reason = reason[:i]
			break
		}
	}
	if len(reason) > 40 {
		reason = reason[:40]
	}
	b := []byte(reason)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '.' || ch == ' ') {
			b[i] = '_'
		}
	}
	return string(b)
}

// queueBatches is how many polled batches a partition may have waiting.
const queueBatches = 4

// partConsumer owns one partition: its goroutine is the only writer of part.
type partConsumer struct {
	c     *Consumer
	topic string
	id    int32
	part  *window.Partition
	dec   Decoder
	emit  func(*schemas.Event)         // pc.add, bound once
	off   int64                        // offset of the record being decoded
	err   error                        // first refusal of an event of the record
	work  chan kgo.FetchTopicPartition // closed on revoke; drained before stop
	done  chan struct{}
	flush bool // set before work is closed

	next     int64 // offset after the last record processed
	epoch    int32
	dead     []DeadLetter
	lagGauge *metrics.Gauge
}

func (c *Consumer) newPart(topic string, id int32) *partConsumer {
	wopts := c.opts.Window
	wopts.Emit = c.opts.OnClosed
	pc := &partConsumer{c: c, topic: topic, id: id, part: window.NewPartition(id, wopts), dec: c.opts.Topics[topic](),
		work: make(chan kgo.FetchTopicPartition, queueBatches), done: make(chan struct{}), next: -1, epoch: -1}
	pc.emit = pc.add
	pc.lagGauge = c.opts.Metrics.GetOrCreateGauge(`canaryd_consumer_lag{topic="`+topic+`",partition="`+strconv.Itoa(int(id))+`"}`, nil)
	return pc
}

// add counts one decoded event; late events are counted and dropped, other
// refusals send the record to the DLQ.
func (pc *partConsumer) add(ev *schemas.Event) {
	if err := pc.part.Add(ev, pc.off); err != nil {
		if errors.Is(err, window.ErrLate) {
			pc.c.late.Inc()
		} else if pc.err == nil {
			pc.err = err
		}
	}
}

func (pc *partConsumer) run() {
	defer close(pc.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case ftp, ok := <-pc.work:
			if !ok {
				pc.stop()
				return
			}
			pc.process(ftp)
		case <-tick.C:
			// Quiet partitions still close windows as the wall clock moves.
			pc.part.SetNow(pc.c.opts.Clock())
			pc.part.Advance()
			pc.mark()
		}
	}
}

func (pc *partConsumer) stop() {
	if pc.flush {
		pc.part.Flush()
	}
	pc.mark()
}

func (pc *partConsumer) process(ftp kgo.FetchTopicPartition) {
	c := pc.c
	pc.part.SetNow(c.opts.Clock())
	for _, r := range ftp.Records {
		pc.off, pc.err = r.Offset, nil
		if err := pc.dec.Decode(r.Value, pc.emit); err != nil {
			pc.dead = append(pc.dead, DeadLetter{Record: r, Reason: err.Error()})
		} else if pc.err != nil {
			pc.dead = append(pc.dead, DeadLetter{Record: r, Reason: pc.err.Error()})
		}
		pc.next = r.Offset + 1
		pc.epoch = r.LeaderEpoch
	}
	c.records.Add(len(ftp.Records))
	pc.part.Advance()
	if len(pc.dead) > 0 {
		// Dead letters are written before the offsets that pass them are
		// committed; on failure the client retries (franz-go produce retries
		// until delivered), so nothing is lost.
		for {
			err := c.opts.DeadLetters(context.Background(), pc.dead)
			if err == nil {
				break
			}
			c.opts.Logger.Error("dead-letter write failed; retrying", "err", err)
			time.Sleep(time.Second)
		}
		for _, d := range pc.dead {
			c.rejectCounter(d.Reason).Inc()
		}
		clear(pc.dead)
		pc.dead = pc.dead[:0]
	}
	if ftp.HighWatermark > 0 {
		pc.lagGauge.Set(float64(ftp.HighWatermark - pc.next))
	}
	pc.mark()
}

// mark marks for commit the offset up to which every record has reached the
// detector (or the DLQ).
func (pc *partConsumer) mark() {
	if pc.next < 0 {
		return
	}
	off := pc.part.CommitOffset(pc.next)
	pc.c.cl.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{
		pc.topic: {pc.id: {Epoch: pc.epoch, Offset: off}},
	})
}
