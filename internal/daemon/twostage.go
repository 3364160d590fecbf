package daemon

// Two-stage aggregation (Config.TwoStage; DESIGN.md; README "Running several
// instances").
//
// Stage 1 is the stream consumer as always, except that its partitions'
// closed windows go to publishPartials instead of onClosed: each is
// published to the partials topic, keyed by rollout, and acknowledged by the
// broker before the partition checkpoints or commits past its records.
//
// Stage 2 (stream.Stage2) consumes the partials topic in a group of its own;
// the owner of a rollout's partition there feeds the partials of every
// source partition to the rollout's one judge (onClosed, as a single
// process does with its own partitions' windows: the judge's view is the
// same, window for window), and only it decides and sends commands. A
// partial is identified by (source partition, rollout, window start): a
// replay is ignored by the judge (detector.Judge.Observe). Its state — the
// judges of its rollouts, their unsent commands, the offset they saw up
// to — is published to the state topic every checkpoint interval, on revoke
// and at shutdown; the next owner continues from it (stage2Restore).
//
//	canaryd_partials_published_total        partials published by stage 1
//	canaryd_partial_bytes                   size of each published partial (summary)
//	canaryd_decision_latency_seconds        from a window's close in stage 1 to its command on the control topic

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/sink"
	"github.com/inferensys/canaryd/stream"
	"github.com/inferensys/canaryd/window"
)

// DecisionBuckets are the upper bounds, in seconds, of
// canaryd_decision_latency_seconds.
var DecisionBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// partialsTopicSpec is the partials topic: retained (not compacted: every
// window of a rollout shares its key) for a day, far longer than any stage-2
// owner takes to read it.
func partialsTopicSpec(name string, partitions int32) sink.TopicSpec {
	return sink.TopicSpec{Name: name, Partitions: partitions, Purpose: "closed windows per rollout from every source partition, for stage 2 (key = rollout)",
		Configs: map[string]*string{"cleanup.policy": strPtr("delete"), "retention.ms": strPtr("86400000"), "max.message.bytes": strPtr("8388608")}}
}

func strPtr(s string) *string { return &s }

// newStage2 builds stage 2's consumer.
func (d *Daemon) newStage2() (*stream.Stage2, error) {
	cfg := d.cfg
	group := cfg.Group + ".stage2"
	state := sink.NewStateTopic(d.producer, cfg.StateTopic, group, append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.KgoOpts...)...)
	return stream.NewStage2(stream.Stage2Options{
		ClientID: stage2ClientPrefix + d.advertiseURL(),
		Brokers:  cfg.Brokers, KgoOpts: cfg.KgoOpts, Group: group, Topic: cfg.PartialsTopic,
		State: state, SaveInterval: cfg.CheckpointInterval,
		OnPartial: d.onClosed, Side: d.handoverSide, Restore: d.stage2Restore, Release: d.stage2Release,
		Metrics: cfg.Metrics, Logger: cfg.Logger,
	})
}

// publishPartials is stage 1's stream.Options.Partials: each closed window
// as a partial on the partials topic, keyed by rollout, acknowledged by all
// in-sync replicas (the producer is idempotent: a retry does not write a
// partial twice).
func (d *Daemon) publishPartials(ctx context.Context, cs []window.Closed) error {
	rs := make([]*kgo.Record, 0, len(cs))
	for _, c := range cs {
		b, err := window.EncodePartial(c)
		if err != nil {
			panic("BUG: a closed window does not encode: " + err.Error())
		}
		d.partialBytes.Update(float64(len(b)))
		rs = append(rs, &kgo.Record{Topic: d.cfg.PartialsTopic, Key: []byte(c.Rollout), Value: b})
	}
	if err := d.producer.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return err
	}
	d.partialsOut.Add(len(rs))
	return nil
}

// stage2Restore continues the judges of an assigned partials partition from
// the state its previous owner published, and returns their rollouts.
func (d *Daemon) stage2Restore(p int32, side map[string][]byte) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.continueJudges(side, "stage2", func(id string, n *detector.Judge) bool {
		d.cfg.Logger.Info("judge continues from the published stage-2 state", "rollout", id, "partials_partition", p, "windows", n.Observed())
		return true
	})
}

// stage2Release: the rollouts of a partials partition revoked or lost are
// judged by another instance from now on; their judges here start afresh,
// so that this instance neither decides for them nor shows stale evidence.
func (d *Daemon) stage2Release(rollouts []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range rollouts {
		old := d.judges[id]
		if old == nil {
			continue
		}
		n := detector.NewJudge(old.Spec())
		n.SetSeqBase(d.seqBase(n.Spec()))
		d.judges[id] = n
		d.gen[id]++ // its unsent commands went with its state to the next owner
		delete(d.history, id)
	}
	d.cfg.Logger.Info("rollouts judged elsewhere from now on (partials partition moved)", "rollouts", rollouts)
}

// observeDecision records the time from the close of the window that
// decided cmd to now, when cmd is on the control topic.
func (d *Daemon) observeDecision(p pending) {
	if p.closedAt > 0 {
		d.decisionLatency.Update(time.Since(time.Unix(0, p.closedAt)).Seconds())
	}
}

// advertiseURL is Config.AdvertiseURL, or the HTTP server's URL with the
// host name in place of an unspecified listening address.
func (d *Daemon) advertiseURL() string {
	if d.cfg.AdvertiseURL != "" {
		return strings.TrimRight(d.cfg.AdvertiseURL, "/")
	}
	if d.server == nil {
		return ""
	}
	host, port, err := net.SplitHostPort(d.server.Addr())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if host, err = os.Hostname(); err != nil {
			return ""
		}
	}
	scheme := "http"
	if d.cfg.HTTPTLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// stage2ClientPrefix starts the client id of stage 2's members; the rest is
// the member's advertised URL (Daemon.Owner reads it).
const stage2ClientPrefix = "canaryd-stage2 "

// Owner is sink.OwnerSource: where a rollout is judged. Without two
// stages, here. With them, the instance owning the rollout's partition of
// the partials topic (the group's assignment, asked of the broker at most
// once a second).
func (d *Daemon) Owner(ctx context.Context, rollout string) (string, bool) {
	if d.judgedHere(rollout) {
		return "", true
	}
	p := int32(partitioner.Partition(&kgo.Record{Key: []byte(rollout)}, int(d.partialsN.Load())))
	d.ownersMu.Lock()
	fresh := time.Since(d.ownersAt) < time.Second
	owners := d.owners
	d.ownersMu.Unlock()
	if !fresh {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		got, err := stream.Owners(ctx, d.producer, d.cfg.Group+".stage2", d.cfg.PartialsTopic)
		cancel()
		if err != nil {
			d.cfg.Logger.Warn("asking the broker which instance judges a rollout failed", "rollout", rollout, "err", err)
		} else {
			owners = got
		}
		d.ownersMu.Lock()
		d.owners, d.ownersAt = owners, time.Now()
		d.ownersMu.Unlock()
	}
	id, ok := owners[p]
	url, isOurs := strings.CutPrefix(id, stage2ClientPrefix)
	if !ok || !isOurs || url == d.advertiseURL() {
		return "", false // not assigned (a rebalance), or assigned here but not yet taken
	}
	return url, false
}

// ownerCache is the last answer of stream.Owners (Daemon.Owner).
type ownerCache struct {
	partialsN atomic.Int32 // partitions of the partials topic (0: not known yet)
	ownersMu  sync.Mutex   // guards owners and ownersAt; never held across I/O
	owners    map[int32]string
	ownersAt  time.Time
}

// partitioner is the producer's: partials of a rollout go to the partition
// its key hashes to (murmur2, as Kafka's Java clients).
var partitioner = kgo.StickyKeyPartitioner(nil).ForTopic("")

// partitionsOf returns the number of partitions of topic, waiting out the
// retriable errors of a topic just created (its metadata is not everywhere
// yet).
func partitionsOf(ctx context.Context, cl *kgo.Client, topic string) (int32, error) {
	for {
		ts, err := kadm.NewClient(cl).ListTopics(ctx, topic)
		if err == nil {
			t, ok := ts[topic]
			switch {
			case ok && t.Err == nil && len(t.Partitions) > 0:
				return int32(len(t.Partitions)), nil
			case !ok:
				err = fmt.Errorf("not in the metadata")
			case t.Err != nil:
				err = t.Err
			default:
				err = fmt.Errorf("no partitions")
			}
		}
		if !kerr.IsRetriable(err) && err.Error() != "not in the metadata" && err.Error() != "no partitions" {
			return 0, fmt.Errorf("partitions of %s: %w", topic, err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("partitions of %s: %w (%v)", topic, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// judgedHere reports whether this instance judges rollout: always without
// two stages; with them, when it owns the rollout's partials partition. No
// I/O: safe under d.mu.
func (d *Daemon) judgedHere(rollout string) bool {
	n := d.partialsN.Load()
	if d.stage2 == nil || n <= 0 {
		return true
	}
	return d.stage2.Owns(int32(partitioner.Partition(&kgo.Record{Key: []byte(rollout)}, int(n))))
}

// learnPartials learns how many partitions the partials topic has, for
// Owner and judgedHere (until then every rollout is taken as judged here).
// Not part of starting: the producer's metadata answer for a topic it has
// just created is cached as missing for up to 5 s (franz-go's
// MetadataMinAge), and the input partitions would wait meanwhile.
func (d *Daemon) learnPartials(ctx context.Context) {
	n, err := partitionsOf(ctx, d.producer, d.cfg.PartialsTopic)
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Error("partitions of the partials topic unknown: calls about rollouts are answered here, not forwarded", "topic", d.cfg.PartialsTopic, "err", err)
		}
		return
	}
	d.partialsN.Store(n)
	d.cfg.Logger.Info("two-stage aggregation", "partials_topic", d.cfg.PartialsTopic, "partitions", n, "stage2_group", d.cfg.Group+".stage2", "advertise_url", d.advertiseURL())
}

// warnSplit is the consumer's Options.OnListed without two stages: it
// warns, once per rollout, when this instance judges a rollout whose windows
// come from several partitions while other instances share the group: each
// instance then judges its own share of the rollout, with its own alpha
// (canaryd_rollouts_split).
func (d *Daemon) warnSplit(h stream.Health) {
	if h.GroupMembers < 2 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, j := range d.judges {
		if d.split[id] || j.SourceCount() < 2 {
			continue
		}
		if d.split == nil {
			d.split = map[string]bool{}
		}
		d.split[id] = true
		d.cfg.Logger.Warn("rollout spread over partitions that several instances share: each instance judges only its share, with its own alpha, and may send its own commands; run every instance with --two-stage (README \"Running several instances\")",
			"rollout", id, "sources", j.Sources(), "group_members", h.GroupMembers)
	}
}
