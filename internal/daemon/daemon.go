// Package daemon wires canaryd's pipeline together: the stream consumer
// feeds closed windows to one detector.Judge per rollout, whose commands go
// to the control topic through sink.Control; sink serves the state.
//
// Metrics (besides those of stream and sink; HELP texts: sink.Families;
// the per-rollout series and their eviction: rolloutmetrics.go):
//
//	canaryd_rollout_info{rollout,baseline,canary,deployment_id,commit,phase,mode}  1 per judged rollout
//	canaryd_rollout_step{rollout}, canaryd_rollout_weight{rollout}
//	canaryd_rollout_final{rollout,final}             1 once the release ended
//	canaryd_test_evalue{rollout,test,role}           each test's e-value at the last verdict
//	canaryd_test_threshold{rollout,test,role}        the e-value at which it fires
//	canaryd_requests_total{rollout,version}          requests in closed windows
//	canaryd_errors_total{rollout,version}            errors in closed windows
//	canaryd_latency_seconds{rollout,version,kind,name}  request durations per segment (histogram)
//	canaryd_verdicts_total{rollout,action}           decisions other than continue
//	canaryd_unjudged_windows_total                   windows of rollouts with no spec
//	canaryd_replayed_windows_total                   windows judged before (a replay after a restart): ignored
//	canaryd_judge_restores_total{result}             judge states at start: restored, mismatch (spec changed), corrupt
//	canaryd_outbox_commands                          commands decided and not yet on the control topic
//	canaryd_command_send_errors_total                failed attempts to put a command on the control topic (retried)
//	canaryd_router_acks_total{rollout,router}        routers' acks read (with Config.AcksTopic; acks.go)
//	canaryd_router_ack_missing{rollout,router}       1 while a router is late for its rollout's latest command
//	canaryd_acks_invalid_total{reason}               ack records skipped
//
// Goroutines, owners and locks: see concurrency.md beside this file.
//
// Per tool and per model (kind tool or llm; judged rollouts only; see agentmetrics.go):
//
//	canaryd_agent_calls_total{rollout,version,kind,name}              calls in closed windows
//	canaryd_agent_errors_total{rollout,version,kind,name,error_type}  failed calls by error type
//	canaryd_agent_tokens_total{rollout,version,kind,name,direction}   llm: input/output tokens
//	canaryd_agent_cost_usd_total{rollout,version,kind,name}           llm: cost of the calls that carry one
package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
	"github.com/inferensys/canaryd/stream"
	"github.com/inferensys/canaryd/window"
)

// Daemon is a running canaryd.
type Daemon struct {
	cfg      Config
	producer *kgo.Client
	consumer *stream.Consumer
	control  *sink.Control
	dlq      *sink.DLQ
	server   *sink.Server

	store *window.Store // nil without StateDir
	// mu guards judges and every Judge in it, saved, history and gen. It is
	// held for in-memory work only: never across network or disk I/O.
	mu       sync.Mutex
	judges   map[string]*detector.Judge
	saved    map[string]int // windows each judge had observed at its last checkpoint
	history  map[string]*history
	gen      map[string]uint64 // per rollout: bumped when the judge resumes from the topic
	replayed *metrics.Counter
	outbox   *outbox
	sendErrs *metrics.Counter
	// Spec reloads (reload.go); guarded by mu.
	previous map[string][]detector.Release // earlier releases per rollout
	specErrs map[string]string             // per rollout: why its spec edit is not in force
	fileErr  string                        // why the spec files are invalid ("" when they are not)
	// fileSpecs are the specs as last read from the files: a reload acts
	// only on rollouts whose file spec changed, so that a release started
	// over HTTP is not undone by reading unchanged files again.
	fileSpecs map[string]detector.Spec
	// autoSpecs are the canary: auto rollouts' templates (auto.go), judged
	// their versions judged per rollout, newest last.
	autoSpecs map[string]detector.Spec
	judged    map[string][]string
	revisions map[string]revision // per rollout, the controller's revision its release was called about
	// pendingWeights: per canary: auto rollout, a weight a controller
	// declared before the release it is about started (judgecalls.go).
	pendingWeights map[string]pendingWeight

	reloadReq  chan struct{} // Reload's requests, buffered 1
	rulesErr   string        // the last OTLP rules reload error (watchSpecs' goroutine only)
	specsValid atomic.Bool

	started  atomic.Bool // the control topic was read: judging may begin
	unjudged *metrics.Counter
	verdicts verdictLog // each rollout's verdicts over time (verdictlog.go); a lock of its own, taken after mu

	acks *acks // the ack reader (acks.go); nil without Config.AcksTopic

	// Two-stage aggregation (twostage.go); stage2 is nil without
	// Config.TwoStage.
	stage2          *stream.Stage2
	partialsOut     *metrics.Counter
	partialBytes    *metrics.Summary
	decisionLatency *metrics.PrometheusHistogram
	ownerCache      // stage 2's owners, for forwarding HTTP calls (twostage.go)
	// split: rollouts judged from several partitions while other instances
	// share the group, without two stages (warnSplit); guarded by mu.
	split map[string]bool

	rolloutMetrics *rolloutMetrics    // the per-rollout series (rolloutmetrics.go)
	latency        *latencyHistograms // canaryd_latency_seconds (latencyhist.go)
}

// New validates cfg and creates the Kafka clients and the HTTP listener.
// It starts no goroutine; Run does.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, judges: map[string]*detector.Judge{}, saved: map[string]int{}, history: map[string]*history{}, gen: map[string]uint64{}, outbox: newOutbox(),
		previous: map[string][]detector.Release{}, specErrs: map[string]string{}, reloadReq: make(chan struct{}, 1)}
	d.specsValid.Store(true)
	cfg.Metrics.NewGauge("canaryd_specs_valid", func() float64 {
		if d.specsValid.Load() {
			return 1
		}
		return 0
	})
	d.fileSpecs, d.autoSpecs, d.judged = map[string]detector.Spec{}, map[string]detector.Spec{}, map[string][]string{}
	d.revisions = map[string]revision{}
	d.pendingWeights = map[string]pendingWeight{}
	for _, s := range cfg.Specs {
		d.fileSpecs[s.Rollout] = s
		d.watchGate(s.Rollout)
		if s.Auto() {
			d.autoSpecs[s.Rollout] = s // a release starts with the first new version
			continue
		}
		d.judges[s.Rollout] = detector.NewJudge(s)
	}
	d.unjudged = cfg.Metrics.NewCounter("canaryd_unjudged_windows_total")
	cfg.Metrics.NewGauge("canaryd_rollouts_split", func() float64 {
		d.mu.Lock()
		defer d.mu.Unlock()
		return float64(len(d.split))
	})
	d.replayed = cfg.Metrics.NewCounter("canaryd_replayed_windows_total")
	d.sendErrs = cfg.Metrics.NewCounter("canaryd_command_send_errors_total")
	d.decisionLatency = cfg.Metrics.NewPrometheusHistogramExt("canaryd_decision_latency_seconds", DecisionBuckets)
	cfg.Metrics.NewGauge("canaryd_outbox_commands", func() float64 { return float64(d.outbox.len()) })
	d.rolloutMetrics = &rolloutMetrics{evictAfter: cfg.EvictAfter, endedAt: map[string]time.Time{}, staleAt: map[string]time.Time{}}
	d.latency = newLatencyHistograms()
	cfg.Metrics.RegisterMetricsWriter(d.latency.writeTo)
	cfg.Metrics.RegisterMetricsWriter(d.writeRolloutMetrics)
	var err error
	d.producer, err = kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ProducerBatchMaxBytes(8 << 20),
		kgo.ClientID("canaryd-producer"),
	}, cfg.KgoOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	if cfg.AcksTopic != "" {
		if d.acks, err = newAcks(cfg, d.knownRollout); err == nil {
			d.acks.applied = d.onApplied
		}
		if err != nil {
			d.producer.Close()
			return nil, err
		}
	}
	d.control = sink.NewControl(d.producer, cfg.ControlTopic, cfg.SignKey, cfg.Metrics, cfg.Logger)
	d.dlq = sink.NewDLQ(d.producer, cfg.DLQTopic, cfg.Metrics)
	topics := map[string]stream.NewDecoder{cfg.EventsTopic: stream.Enrich(stream.JSONDecoder, cfg.Models, cfg.Metrics)}
	if cfg.OTLPSpansTopic != "" || cfg.OTLPLogsTopic != "" {
		ocfg := stream.DefaultOTLPConfig()
		ocfg.Encoding, ocfg.Metrics, ocfg.Rules = cfg.OTLPEncoding, cfg.Metrics, cfg.OTLPRules
		if err := ocfg.Validate(); err != nil {
			d.producer.Close()
			d.closeAcks()
			return nil, err
		}
		if cfg.OTLPSpansTopic != "" && cfg.OTLPLogsTopic != "" {
			// Evaluation records name their trace, often not their version:
			// the spans decoders index each trace's version for the logs ones.
			ocfg.Traces = stream.NewTraceIndex(stream.DefaultTraceIndexCapacity, cfg.Metrics)
		}
		if cfg.OTLPSpansTopic != "" {
			// Enrich before Sessions: agent events sum their llm spans' costs.
			topics[cfg.OTLPSpansTopic] = stream.Sessions(stream.Enrich(stream.OTLPTraces(ocfg), cfg.Models, cfg.Metrics), stream.SessionConfig{Metrics: cfg.Metrics})
		}
		if cfg.OTLPLogsTopic != "" {
			topics[cfg.OTLPLogsTopic] = stream.OTLPLogs(ocfg)
		}
	}
	var handover stream.Handover
	if cfg.StateDir != "" {
		// A directory that cannot be opened (read-only, no permission, full)
		// does not stop canaryd: it judges from memory, commits no offset
		// until a checkpoint succeeds, and retries the directory.
		if d.store, err = window.OpenStoreOrDegraded(cfg.StateDir, cfg.Logger); err != nil {
			cfg.Logger.Error("checkpoint directory unusable: judging from memory; offsets are not committed until checkpoints succeed", "dir", cfg.StateDir, "err", err)
		}
		handover = sink.NewStateTopic(d.producer, cfg.StateTopic, cfg.Group, append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.KgoOpts...)...)
	}
	sopts := stream.Options{
		Brokers: cfg.Brokers, Topics: topics, Group: cfg.Group,
		Window: windowOpts(cfg), OnClosed: d.onClosed, DeadLetters: d.dlq.Send,
		Metrics: cfg.Metrics, Logger: cfg.Logger, KgoOpts: cfg.KgoOpts,
		Checkpoints: d.store, CheckpointInterval: cfg.CheckpointInterval, SideState: d.sideState,
		Handover: handover, HandoverSide: d.handoverSide, OnHandover: d.onHandover,
	}
	if !cfg.TwoStage {
		sopts.OnListed = d.warnSplit
	}
	if cfg.TwoStage {
		// Stage 1's partitions hold windows only: the judges live with
		// stage 2's partitions and their state goes to the state topic.
		sopts.Partials, sopts.SideState, sopts.HandoverSide, sopts.OnHandover = d.publishPartials, nil, nil, nil
		if sopts.Checkpoints != nil && handover == nil {
			panic("BUG: checkpoints without a state topic")
		}
		d.partialsOut = cfg.Metrics.NewCounter("canaryd_partials_published_total")
		d.partialBytes = cfg.Metrics.NewSummary("canaryd_partial_bytes")
	}
	d.consumer, err = stream.New(sopts)
	if err != nil {
		d.producer.Close()
		d.closeAcks()
		d.closeStore()
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		d.server, err = sink.NewServer(cfg.HTTPAddr, d, cfg.Metrics, d.readyErr,
			sink.TokenFile(cfg.HTTPTokenFile), sink.ProtectReads(cfg.HTTPProtectReads),
			sink.TLSFiles(cfg.HTTPTLSCert, cfg.HTTPTLSKey), sink.HTTPLogger(cfg.Logger))
		if err != nil {
			d.producer.Close()
			d.consumer.Client().Close()
			d.closeAcks()
			d.closeStore()
			return nil, err
		}
	}
	if cfg.TwoStage {
		// After the server: stage 2's members advertise its URL.
		if d.stage2, err = d.newStage2(); err != nil {
			d.producer.Close()
			d.consumer.Client().Close()
			d.closeAcks()
			d.closeStore()
			return nil, err
		}
	}
	return d, nil
}

// HTTPAddr returns the address the HTTP server listens on, or "".
func (d *Daemon) HTTPAddr() string {
	if d.server == nil {
		return ""
	}
	return d.server.Addr()
}

func windowOpts(cfg Config) window.Options {
	o := cfg.Window
	o.EvictAfter = cfg.EvictAfter
	return o
}

// unreachableAfter is how long the broker may not answer before canaryd
// reports itself not ready.
const unreachableAfter = 10 * time.Second

// readyErr says why canaryd is not ready to judge, or nil: it must have read
// the control topic, heard from the broker within unreachableAfter, and own
// partitions unless the group has more members than there are partitions.
// It reads atomics and copies only: it never waits on Kafka.
func (d *Daemon) readyErr() error {
	if !d.started.Load() {
		return errors.New("starting: creating topics and reading the control topic")
	}
	h := d.consumer.Health()
	now := time.Now()
	if h.LastContact.IsZero() || now.Sub(h.LastContact) > unreachableAfter {
		if h.LastContact.IsZero() {
			return errors.New("the broker has not answered yet")
		}
		return fmt.Errorf("the broker has not answered for %s", now.Sub(h.LastContact).Round(time.Second))
	}
	if h.Assigned == 0 && (h.GroupMembers < 0 || h.GroupMembers <= h.TopicPartitions) {
		return fmt.Errorf("no partitions assigned (group members %d, partitions %d)", h.GroupMembers, h.TopicPartitions)
	}
	return nil
}

// Run creates missing topics, reads back the commands already sent, then
// consumes until ctx is done. It starts the HTTP server's goroutine and the
// consumer's partition goroutines and waits for all of them before returning.
// It returns at once when starting fails.
//
// Once ctx ends, Run returns within Config.ShutdownTimeout whatever the
// broker or the disk do: the I/O of stopping (dead letters, checkpoints'
// handover, commands still in the outbox, the final commit) gives up at
// 80% of it, and at the full timeout Run returns ErrShutdownTimeout,
// logging what it could not finish, without waiting further.
func (d *Daemon) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	timer := time.NewTimer(d.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		d.cfg.Logger.Error("shutdown timed out: exiting without finishing", "timeout", d.cfg.ShutdownTimeout,
			"commands_unsent", d.outbox.len(), "partitions_still_stopping", d.consumer.Health().Assigned)
		return ErrShutdownTimeout
	}
}

// ErrShutdownTimeout is returned by Run when stopping took longer than
// Config.ShutdownTimeout.
var ErrShutdownTimeout = errors.New("shutdown timed out")

func (d *Daemon) run(ctx context.Context) error {
	defer d.producer.Close()
	defer d.closeStore()
	// abort ends the I/O of stopping: at 80% of the shutdown timeout after
	// ctx ends, leaving time to log and return.
	abort, cancelAbort := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAbort()
	stopAbort := context.AfterFunc(ctx, func() { time.AfterFunc(d.cfg.ShutdownTimeout*4/5, cancelAbort) })
	defer stopAbort()
	// The server stops with ctx, or as soon as starting fails: Run must not
	// wait for a signal to report a start error.
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	var wg sync.WaitGroup
	var serveErr error
	if d.server != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveErr = d.server.Serve(serveCtx)
		}()
	}
	err := d.start(ctx)
	if err != nil && ctx.Err() != nil {
		// Stopped while starting (SIGTERM before the broker answered):
		// a clean stop, not a start error.
		d.cfg.Logger.Info("stopped while starting", "err", err)
		err = nil
		d.consumer.Client().Close()
		d.closeAcks()
	} else if err == nil {
		// The sender drains the outbox until the consumer has stopped (its
		// last windows flushed) and the outbox is empty, or abort ends.
		consumed := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.sendLoop(abort, consumed)
		}()
		if d.acks != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.acks.run(serveCtx) // closes its client
			}()
		}
		if d.cfg.SpecsPath != "" && d.cfg.SpecsPoll > 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.watchSpecs(serveCtx)
			}()
		}
		d.started.Store(true)
		// Stage 2 goes on after stage 1 stopped, for the partials stage 1
		// published while stopping, until a poll finds none or abort ends.
		stage1Done, stopStage2 := context.WithCancel(context.WithoutCancel(ctx))
		stage2Done := make(chan struct{})
		if d.stage2 != nil {
			go func() {
				defer close(stage2Done)
				d.stage2.Run(stage1Done, abort)
			}()
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.learnPartials(serveCtx)
			}()
		} else {
			close(stage2Done)
		}
		err = d.consumer.Run(ctx, abort)
		stopStage2()
		<-stage2Done
		close(consumed)
		d.logTotals()
	} else {
		d.consumer.Client().Close()
		d.closeAcks()
	}
	stopServing()
	wg.Wait()
	if n := d.outbox.len(); n > 0 {
		d.cfg.Logger.Error("stopping with commands not sent: they are decided again from the checkpoint or the replay after a restart", "commands", n)
	}
	if err == nil && ctx.Err() == nil {
		err = serveErr
	}
	return err
}

// logTotals logs each rollout's per-version totals once the consumer has
// stopped (its windows flushed): with the other instances' logs, what was
// judged can be checked against what was produced.
func (d *Daemon) logTotals() {
	for _, st := range d.Statuses() {
		if st.Windows == 0 {
			continue // not judged here
		}
		for _, a := range st.Totals {
			d.cfg.Logger.Info("final totals", "rollout", st.Rollout, "version", a.Version, "requests", a.Requests, "errors", a.Errors,
				"sessions", a.Sessions, "windows", st.Windows, "final", st.Final, "digest", d.Digest(st.Rollout, a.Version))
		}
	}
}

// Digest returns a fingerprint of a version's whole-rollout aggregates
// (counts, sums and latency sketch, bit for bit), for checking that two runs
// judged exactly the same events.
func (d *Daemon) Digest(rollout, version string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if j := d.judges[rollout]; j != nil {
		return j.Digest(version)
	}
	return ""
}

// start prepares the topics and reads the control topic. A broker that does
// not answer is waited for (not ready meanwhile, one log line per attempt),
// until ctx ends; other errors (topics missing with creation off, creation
// refused) return at once.
func (d *Daemon) start(ctx context.Context) error {
	backoff := time.Second
	for {
		err := d.startOnce(ctx)
		if err == nil || ctx.Err() != nil || !unreachable(err) {
			return err
		}
		d.cfg.Logger.Error("Kafka unreachable at start; retrying (not ready meanwhile)", "brokers", d.cfg.Brokers, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// unreachable reports whether err means the brokers did not answer (as
// opposed to answering no).
func unreachable(err error) bool {
	var ne net.Error // dial errors (*net.OpError) and timeouts
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed) || kerr.IsRetriable(err)
}

func (d *Daemon) startOnce(ctx context.Context) error {
	topics := sink.Topics(d.cfg.EventsTopic, d.cfg.ControlTopic, d.cfg.DLQTopic, d.cfg.Partitions)
	if d.store != nil || d.cfg.TwoStage {
		topics = append(topics, sink.StateTopicSpec(d.cfg.StateTopic))
	}
	if d.cfg.TwoStage {
		topics = append(topics, partialsTopicSpec(d.cfg.PartialsTopic, d.cfg.PartialsPartitions))
	}
	if d.cfg.AcksTopic != "" {
		topics = append(topics, acksTopicSpec(d.cfg.AcksTopic))
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	var err error
	if d.cfg.NoCreateTopics {
		err = checkTopics(tctx, d.producer, topics)
	} else {
		err = sink.EnsureTopics(tctx, d.producer, topics)
	}
	cancel()
	if err != nil {
		return err
	}
	// A topic just created is in the metadata before its leader serves it:
	// reading the control topic then fails with a retriable error
	// (UNKNOWN_TOPIC_OR_PARTITION, seen on a freshly started broker).
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	n, err := d.loadControl(lctx)
	for err != nil && kerr.IsRetriable(err) && lctx.Err() == nil {
		select {
		case <-lctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		n, err = d.loadControl(lctx)
	}
	if err != nil {
		return err
	}
	d.autoFromControl()
	restored := map[string]bool{}
	if !d.cfg.TwoStage {
		restored = d.restoreJudges() // with two stages, stage 2 restores them from the state topic
	}
	d.mu.Lock()
	for id, j := range d.judges {
		j.SetSeqBase(d.seqBase(j.Spec()))
		// A judge restored from its checkpoint replays the windows after it
		// and re-decides what it decided then (same command ids, not sent
		// twice); jumping to the control topic's newest command first would
		// judge those windows in the wrong step.
		if restored[id] {
			continue
		}
		if last := d.control.Last(id); last != nil && j.Restore(last) {
			d.cfg.Logger.Info("rollout resumed from the control topic", "rollout", id, "action", last.Action, "step", last.Step, "seq", last.Seq)
		}
	}
	d.mu.Unlock()
	d.cfg.Logger.Info("canaryd started", "brokers", d.cfg.Brokers, "events", d.cfg.EventsTopic, "control", d.cfg.ControlTopic,
		"rollouts", len(d.judges), "commands_found", n)
	return nil
}

// seqBase derives a release's seq base from the control topic (see
// detector.Judge.SetSeqBase): from the rollout's latest command when it is
// of this release, else after it.
func (d *Daemon) seqBase(s detector.Spec) uint64 {
	last := d.control.Last(s.Rollout)
	switch {
	case last == nil:
		return 0
	case last.Baseline == s.Baseline && last.Canary == s.Canary:
		return detector.SeqBase(last)
	default:
		return last.Seq
	}
}

// checkTopics returns an error naming each missing topic and the command
// that creates it. Without it, NoCreateTopics on a missing control topic
// failed only after reading it for 60 s, with a bare
// UNKNOWN_TOPIC_OR_PARTITION that named no topic, and a missing events
// topic was waited for silently.
func checkTopics(ctx context.Context, cl *kgo.Client, specs []sink.TopicSpec) error {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	// A metadata request of kadm never asks the broker to auto-create.
	md, err := kadm.NewClient(cl).ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	var errs []error
	for _, s := range specs {
		if t, ok := md[s.Name]; ok && t.Err == nil {
			continue
		}
		var flags strings.Builder
		for _, k := range slices.Sorted(maps.Keys(s.Configs)) {
			fmt.Fprintf(&flags, " --config %s=%s", k, *s.Configs[k])
		}
		errs = append(errs, fmt.Errorf("topic %s (%s) does not exist and topic creation is off (--no-create-topics); create it: kafka-topics.sh --create --topic %s --partitions %d%s",
			s.Name, s.Purpose, s.Name, s.Partitions, flags.String()))
	}
	return errors.Join(errs...)
}

// onClosed runs on partition goroutines. It judges the window under d.mu
// and leaves the command, if any, in the outbox: it never waits for Kafka.
func (d *Daemon) onClosed(c window.Closed) {
	d.mu.Lock()
	j := d.judges[c.Rollout]
	if tpl, ok := d.autoSpecs[c.Rollout]; ok {
		j = d.autoRelease(tpl, j, c)
	}
	if j == nil {
		d.mu.Unlock()
		d.unjudged.Inc()
		return
	}
	if !j.Observe(c) {
		d.mu.Unlock()
		d.replayed.Inc()
		return
	}
	if j.Final() == "" || c.End-j.LastVerdictAt().UnixNano() < int64(d.cfg.EvictAfter) {
		d.historyOf(c.Rollout).add(c)
		// The series of a release ended long enough ago are evicted
		// (rolloutmetrics.go): its windows no longer add any.
		exportWindowSeries(d.cfg.Metrics, d.latency, c)
	} else if _, ok := d.history[c.Rollout]; ok {
		delete(d.history, c.Rollout) // ended long enough ago: free the export history
		d.cfg.Logger.Info("rollout ended: its window history is evicted", "rollout", c.Rollout, "final", j.Final())
	}
	v, cmd := j.Decide(c.Watermark)
	d.verdicts.record(j.Spec(), v)
	switch {
	case cmd != nil:
		// Queued under d.mu, so that the outbox holds each rollout's
		// commands in the order they were decided, and a checkpoint of the
		// judge (sideState, also under d.mu) holds its unsent commands.
		d.outbox.push(pending{cmd: cmd, v: v, gen: d.gen[c.Rollout], closedAt: c.Wall})
	case !d.outbox.note(v, d.gen[c.Rollout]):
		// No command of the rollout waits: report it now, under d.mu, so
		// that verdicts are reported in the order they were decided.
		d.verdictDone(pending{v: v}, false)
	}
	d.mu.Unlock()
}

// sendLoop is the sender goroutine: it puts the outbox's commands on the
// control topic in order, retrying each with backoff, until consumed is
// closed and the outbox is empty, or abort ends.
func (d *Daemon) sendLoop(abort context.Context, consumed <-chan struct{}) {
	for {
		p, ok := d.outbox.peek()
		if !ok {
			select {
			case <-d.outbox.wake:
				continue
			case <-consumed:
				if d.outbox.empty() {
					return
				}
				continue
			case <-abort.Done():
				return
			}
		}
		// A verdict is reported before its entry leaves the outbox: a
		// verdict decided meanwhile sees the entry and queues behind it.
		if p.cmd == nil {
			d.verdictDone(p, false)
		} else if !d.deliver(abort, p) {
			return // abort ended
		}
		d.outbox.pop()
	}
}

// deliver puts one command on the control topic, retrying until it is there
// or abort ends (then it returns false). The judge's lock is taken only to
// read its generation and to resume it: never across the I/O.
//
// Each attempt first reads the control topic back. Judges do not move with
// partitions: when a rebalance gives this instance a rollout that another
// instance judged meanwhile, this judge is behind the commands already sent,
// and its decision would reuse a command_id with different content (its own
// set_weight 20% after the other's set_weight 50%), or walk the rollout back.
// If the topic holds a command for the same versions at cmd's seq or later,
// cmd is not sent and the judge resumes from that command, as at start;
// commands it decided before resuming are dropped.
func (d *Daemon) deliver(abort context.Context, p pending) bool {
	cmd := p.cmd
	backoff := 100 * time.Millisecond
	for {
		d.mu.Lock()
		stale := d.gen[cmd.Rollout] != p.gen
		d.mu.Unlock()
		if stale {
			return true // decided before the judge resumed from the topic
		}
		lctx, cancel := context.WithTimeout(abort, 10*time.Second)
		_, err := d.loadControl(lctx)
		cancel()
		sent := false
		if err == nil {
			if d.control.Sent(cmd.CommandID) {
				// This very decision was sent before: a judge replaying
				// windows after a restart from its checkpoint re-decides
				// what it decided then, with the same id.
				d.verdictDone(p, false)
				return true
			}
			if last := d.control.Last(cmd.Rollout); last != nil && last.Baseline == cmd.Baseline && last.Canary == cmd.Canary && last.Seq >= cmd.Seq {
				d.resume(cmd, last)
				return true
			}
			sctx, cancel := context.WithTimeout(abort, 10*time.Second)
			sent, err = d.control.Send(sctx, cmd)
			cancel()
		}
		if err == nil {
			if sent {
				d.observeDecision(p)
				d.cfg.Logger.Info("command sent", "rollout", cmd.Rollout, "action", cmd.Action, "weight", cmd.Weight, "seq", cmd.Seq, "id", cmd.CommandID, "reason", cmd.Reason)
				d.cfg.Metrics.GetOrCreateCounter(fmt.Sprintf(`canaryd_verdicts_total{rollout=%q,action=%q}`, cmd.Rollout, p.v.Action)).Inc()
			}
			d.verdictDone(p, sent)
			return true
		}
		d.sendErrs.Inc()
		if abort.Err() != nil {
			d.cfg.Logger.Error("command not sent: shutdown out of time", "rollout", cmd.Rollout, "id", cmd.CommandID, "err", err)
			return false
		}
		d.cfg.Logger.Error("sending command failed; retrying", "rollout", cmd.Rollout, "id", cmd.CommandID, "retry_in", backoff, "err", err)
		select {
		case <-abort.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// resume moves cmd's judge to last, the newer command another instance put
// on the control topic, and drops the commands it decided before.
func (d *Daemon) resume(cmd, last *schemas.Command) {
	d.mu.Lock()
	j := d.judges[cmd.Rollout]
	resumed := j != nil && j.Restore(last)
	d.gen[cmd.Rollout]++
	var v detector.Verdict
	if j != nil {
		v = j.Status().Verdict
	}
	d.mu.Unlock()
	d.cfg.Logger.Info("rollout judged elsewhere meanwhile: resumed from the control topic", "rollout", cmd.Rollout,
		"decided", cmd.Action, "seq", cmd.Seq, "found", last.Action, "found_seq", last.Seq, "resumed", resumed)
	if resumed && d.cfg.OnVerdict != nil {
		d.cfg.OnVerdict(v, false)
	}
}

// verdictDone reports a command's verdict once its fate is known (the
// metrics read the judges: rolloutmetrics.go).
func (d *Daemon) verdictDone(p pending, sent bool) {
	if d.cfg.OnVerdict != nil {
		d.cfg.OnVerdict(p.v, sent)
	}
}

// loadControl reads the control topic to its end into d.control, with a
// client of its own (no stale metadata), and returns how many commands it
// read.
func (d *Daemon) loadControl(ctx context.Context) (int, error) {
	return d.control.Load(ctx, append([]kgo.Opt{kgo.SeedBrokers(d.cfg.Brokers...)}, d.cfg.KgoOpts...)...)
}

// Statuses implements sink.StatusSource.
func (d *Daemon) Statuses() []detector.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]detector.Status, 0, len(d.judges))
	for _, j := range d.judges {
		st := j.Status()
		d.decorate(&st)
		out = append(out, st)
	}
	for id, tpl := range d.autoSpecs {
		if d.judges[id] == nil {
			st := autoStatus(tpl)
			d.decorate(&st)
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b detector.Status) int {
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

// Status implements sink.StatusSource.
func (d *Daemon) Status(id string) (detector.Status, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	j := d.judges[id]
	if j == nil {
		tpl, ok := d.autoSpecs[id]
		if !ok {
			return detector.Status{}, false
		}
		st := autoStatus(tpl)
		d.decorate(&st)
		return st, true
	}
	st := j.Status()
	d.decorate(&st)
	return st, true
}

var _ sink.StatusSource = (*Daemon)(nil)

var _ sink.RulesSource = (*Daemon)(nil)

// OTLPRules implements sink.RulesSource: the OTLP rules in force and the
// canaryd_otlp_resolved_total counts, read from the metrics set.
func (d *Daemon) OTLPRules() *sink.OTLPRulesInfo {
	if d.cfg.OTLPSpansTopic == "" && d.cfg.OTLPLogsTopic == "" {
		return nil
	}
	rules := stream.DefaultOTLPRules()
	if d.cfg.OTLPRules != nil {
		rules = d.cfg.OTLPRules.Load()
	}
	info := &sink.OTLPRulesInfo{Rules: rules.String(), File: rules.File(), Resolved: map[string]map[string]map[string]uint64{}}
	const prefix = "canaryd_otlp_resolved_total{"
	for _, name := range d.cfg.Metrics.ListMetricNames() {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(name, prefix), "}"), ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
		sig, field, rule := labels["signal"], labels["field"], labels["rule"]
		if info.Resolved[sig] == nil {
			info.Resolved[sig] = map[string]map[string]uint64{}
		}
		if info.Resolved[sig][field] == nil {
			info.Resolved[sig][field] = map[string]uint64{}
		}
		info.Resolved[sig][field][rule] += d.cfg.Metrics.GetOrCreateCounter(name).Get()
	}
	return info
}
