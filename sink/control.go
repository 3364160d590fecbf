// Package sink is where canaryd's decisions and numbers leave it: control
// commands on the control topic, malformed records on the dead-letter topic,
// Prometheus metrics and the HTTP API.
//
// Metrics (on the Set given to each part):
//
//	canaryd_commands_sent_total{rollout,action}   commands written to the control topic
//	canaryd_commands_skipped_total                decisions already sent before (deduplicated)
//	canaryd_commands_unsigned_ignored_total       control-topic commands without a valid signature (with a sign key): ignored
//	canaryd_dlq_records_total                     records written to the dead-letter topic
//	canaryd_http_refused_total{reason}            HTTP requests refused (no or bad token, actions off, unknown rollout or action, bad body, conflict; see http_auth.go)
//
// /metrics writes every family with its HELP text and TYPE (WriteMetrics):
// Families in metricsdoc.go documents all of canaryd's, and a family
// missing there fails TestMetricsPromtool.
package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/stream"
)

// Control writes control commands to the control topic, key = rollout, and
// never sends the same command_id twice: at start it reads the topic back to
// learn what an earlier run already sent, and before each command it reads
// what was added since (by other instances).
type Control struct {
	cl      *kgo.Client
	topic   string
	signKey []byte
	ms      *metrics.Set
	log     *slog.Logger

	forged *metrics.Counter

	mu   sync.Mutex
	sent map[string]bool             // command_id → sent
	last map[string]*schemas.Command // rollout → latest command sent or found
	next map[int32]int64             // partition → offset Load reads from next
}

// NewControl returns a Control producing with cl (which must not be a
// consumer-group client of the control topic). signKey, when set, signs each
// command with HMAC-SHA256.
func NewControl(cl *kgo.Client, topic string, signKey []byte, ms *metrics.Set, log *slog.Logger) *Control {
	if ms == nil {
		ms = metrics.NewSet()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Control{cl: cl, topic: topic, signKey: signKey, ms: ms, log: log, sent: map[string]bool{}, last: map[string]*schemas.Command{}, next: map[int32]int64{},
		forged: ms.GetOrCreateCounter("canaryd_commands_unsigned_ignored_total")}
}

// Load reads the control topic to its current end, so that commands already
// sent are not sent again and rollouts that already ended are known. The
// first call reads from the start; later ones only what was added since the
// previous one (a partition that shrank — the topic recreated — is read
// again from its start). It uses its own short-lived client built from
// opts, and returns how many commands it read.
func (c *Control) Load(ctx context.Context, opts ...kgo.Opt) (int, error) {
	rd, err := kgo.NewClient(append(opts, kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return 0, fmt.Errorf("read control topic: %w", err)
	}
	defer rd.Close()
	ends, err := endOffsets(ctx, rd, c.topic)
	if err != nil {
		return 0, err
	}
	from := map[int32]kgo.Offset{}
	c.mu.Lock()
	for p, e := range ends {
		if e < c.next[p] {
			c.next[p] = 0
		}
		if e > c.next[p] {
			from[p] = kgo.NewOffset().At(c.next[p])
		} else {
			delete(ends, p)
		}
	}
	c.mu.Unlock()
	if len(from) == 0 {
		return 0, nil
	}
	rd.AddConsumePartitions(map[string]map[int32]kgo.Offset{c.topic: from})
	n := 0
	for len(ends) > 0 {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("read control topic: %w", err)
		}
		fs.EachError(func(_ string, _ int32, err error) { c.log.Warn("reading control topic", "err", err) })
		fs.EachRecord(func(r *kgo.Record) {
			var cmd schemas.Command
			switch {
			case json.Unmarshal(r.Value, &cmd) != nil || cmd.CommandID == "":
			case len(c.signKey) > 0 && !cmd.Verify(c.signKey):
				// Not canaryd's: a writer without the key must not end,
				// move or pre-empt (by taking a command_id) a rollout.
				c.forged.Inc()
				c.log.Warn("control topic: command without a valid signature ignored", "partition", r.Partition, "offset", r.Offset,
					"rollout", cmd.Rollout, "action", cmd.Action, "command_id", cmd.CommandID)
			default:
				c.remember(&cmd)
				n++
			}
			c.mu.Lock()
			c.next[r.Partition] = r.Offset + 1
			c.mu.Unlock()
			if end, ok := ends[r.Partition]; ok && r.Offset+1 >= end {
				delete(ends, r.Partition)
			}
		})
	}
	return n, nil
}

func (c *Control) remember(cmd *schemas.Command) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent[cmd.CommandID] = true
	if l := c.last[cmd.Rollout]; l == nil || cmd.Seq >= l.Seq {
		c.last[cmd.Rollout] = cmd
	}
}

// Last returns the latest command known for a rollout, or nil.
func (c *Control) Last(rollout string) *schemas.Command {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last[rollout]
}

// Sent reports whether a command with this id was sent or found on the topic.
func (c *Control) Sent(commandID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[commandID]
}

// Send writes cmd and waits until the broker has it. A command whose id was
// already sent is skipped (returns false).
func (c *Control) Send(ctx context.Context, cmd *schemas.Command) (bool, error) {
	c.mu.Lock()
	dup := c.sent[cmd.CommandID]
	c.mu.Unlock()
	if dup {
		c.ms.GetOrCreateCounter("canaryd_commands_skipped_total").Inc()
		return false, nil
	}
	if err := cmd.Validate(); err != nil {
		panic("BUG: detector produced an invalid command: " + err.Error())
	}
	if err := cmd.Sign(c.signKey); err != nil {
		return false, err
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return false, fmt.Errorf("encode command: %w", err)
	}
	rec := &kgo.Record{Topic: c.topic, Key: []byte(cmd.Rollout), Value: b, Timestamp: time.Now(),
		Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte("application/json")}, {Key: "schema", Value: []byte("canaryd.control-command.v1")}}}
	if err := c.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return false, fmt.Errorf("send command %s to %s: %w", cmd.CommandID, c.topic, err)
	}
	c.remember(cmd)
	c.ms.GetOrCreateCounter(fmt.Sprintf(`canaryd_commands_sent_total{rollout=%q,action=%q}`, cmd.Rollout, cmd.Action)).Inc()
	return true, nil
}

// DLQ writes refused records to the dead-letter topic with the reason, the
// source topic, partition and offset in headers, and the original key and
// value unchanged.
type DLQ struct {
	cl    *kgo.Client
	topic string
	n     *metrics.Counter
}

// NewDLQ returns a DLQ producing with cl.
func NewDLQ(cl *kgo.Client, topic string, ms *metrics.Set) *DLQ {
	if ms == nil {
		ms = metrics.NewSet()
	}
	return &DLQ{cl: cl, topic: topic, n: ms.NewCounter("canaryd_dlq_records_total")}
}

// Send writes the dead letters and waits for all of them.
func (d *DLQ) Send(ctx context.Context, dead []stream.DeadLetter) error {
	recs := make([]*kgo.Record, len(dead))
	for i, dl := range dead {
		r := dl.Record
		recs[i] = &kgo.Record{
			Topic: d.topic, Key: r.Key, Value: r.Value,
			Headers: append([]kgo.RecordHeader{
				{Key: "canaryd.reason", Value: []byte(dl.Reason)},
				{Key: "canaryd.source", Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)},
			}, r.Headers...),
		}
	}
	res := d.cl.ProduceSync(ctx, recs...)
	var retry []*kgo.Record
	for _, r := range res {
		switch {
		case r.Err == nil:
		case errors.Is(r.Err, kerr.MessageTooLarge) || errors.Is(r.Err, kerr.RecordListTooLarge):
			// The broker refuses the whole record: keep its head, say so.
			rec := r.Record
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "canaryd.truncated", Value: fmt.Appendf(nil, "%d", len(rec.Value))})
			rec.Value = rec.Value[:min(len(rec.Value), dlqTruncate)]
			retry = append(retry, rec)
		default:
			return fmt.Errorf("dead-letter topic %s: %w", d.topic, r.Err)
		}
	}
	if len(retry) > 0 {
		if err := d.cl.ProduceSync(ctx, retry...).FirstErr(); err != nil {
			return fmt.Errorf("dead-letter topic %s (truncated records): %w", d.topic, err)
		}
	}
	d.n.Add(len(recs))
	return nil
}

// dlqTruncate is how much of a record too large for the DLQ topic is kept.
const dlqTruncate = 64 << 10
