package daemon

import (
	"errors"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/stream"
	"github.com/inferensys/canaryd/window"
)

// Config configures a Daemon. Zero values mean the documented defaults.
type Config struct {
	Brokers      []string
	EventsTopic  string // default agent.events
	ControlTopic string // default canary.control
	DLQTopic     string // default agent.events.dlq
	Group        string // default canaryd
	// Partitions of the events topic when canaryd creates it. Default 6.
	Partitions int32
	// NoCreateTopics: do not create missing topics (fail with what to create).
	NoCreateTopics bool
	// OTLPSpansTopic, when set, is consumed as well: OTLP spans as the
	// OpenTelemetry Collector's Kafka exporter writes them (encoding
	// OTLPEncoding, default otlp_proto), mapped to agent events, sessions
	// assembled from traces. OTLPLogsTopic likewise for evaluation log
	// events. canaryd does not create these topics: the exporter's are used.
	OTLPSpansTopic string
	OTLPLogsTopic  string
	OTLPEncoding   string
	// AcksTopic, when set, is read for the routers' acknowledgements
	// (schemas/ack.v1.json, published by router.Acks; canaryd creates it
	// unless NoCreateTopics): the status shows per rollout each router's
	// applied weight, and a router late for the latest command is counted.
	// Empty: off.
	AcksTopic string
	// AckTimeout: a router that acknowledged a rollout's earlier commands
	// and has not acknowledged its latest this long after it was published
	// is lagging (status, metric, one log line per command). Default 30s.
	AckTimeout time.Duration
	Specs      []detector.Spec
	// SpecsPath, when set, is the spec file or directory Specs came from:
	// it is watched (polled every SpecsPoll, and read again on Reload) and
	// the specs are applied again when its contents change. Empty: Specs
	// stay as they are.
	SpecsPath string
	// SpecsPoll between two looks at SpecsPath. Default 5s.
	SpecsPoll time.Duration
	// Models, when set, fills in the context limit and the cost of llm
	// events whose model it lists and whose source sent none (events and
	// OTLP spans topics; see stream.Enrich). Load it with
	// stream.LoadModelTable.
	Models *stream.ModelTable
	// OTLPRules resolve the rollout and version of the OTLP topics' events;
	// nil means stream.DefaultOTLPRules. Store on it (or Reload, for rules
	// read by stream.LoadOTLPRules) changes them while canaryd runs.
	OTLPRules *stream.RulesRef
	// StateDir holds the Badger checkpoints (window state, offsets and the
	// judges' state). Empty: state is in memory only, and a restart replays
	// from the committed offsets with the judges' evidence lost.
	StateDir string
	// StateTopic carries checkpoints of revoked partitions to their next
	// owner (with StateDir), and with TwoStage stage 2's states. Default
	// canaryd.state.
	StateTopic string
	// TwoStage aggregates in two stages (DESIGN.md, README "Running several
	// instances"): every instance publishes its partitions' closed windows
	// per rollout to PartialsTopic, keyed by rollout, and the owner of a
	// rollout's partition of that topic runs its one judge. For input not
	// keyed by rollout (OTLP spans keyed by trace id) read by several
	// instances.
	TwoStage bool
	// PartialsTopic (default canaryd.partials) and the partitions it is
	// created with (default 6): stage 2 spreads over at most that many
	// instances.
	PartialsTopic      string
	PartialsPartitions int32
	// AdvertiseURL is this instance's HTTP API as the other instances
	// reach it (with TwoStage, they forward the calls about rollouts judged
	// here to it). Default: http(s)://<host name>:<port of HTTPAddr>, or
	// the listening address when it names a host.
	AdvertiseURL string
	// CheckpointInterval: see stream.Options. Default 5s.
	CheckpointInterval time.Duration
	// HistoryWindows is how many closed windows per rollout are kept for the
	// Arrow export; older ones are folded into one row per series. Default 360.
	HistoryWindows int
	// EvictAfter: a rollout's state is dropped this long (event time) after
	// its last event in a partition, and its export history this long after
	// its final verdict; its metric series this long after this instance saw
	// that verdict (rolloutmetrics.go). Default 1h (window.Options.EvictAfter).
	EvictAfter time.Duration
	// ShutdownTimeout bounds how long Run takes to return once its context
	// ends: flushing partitions, sending the last commands and dead letters,
	// committing offsets. What could not be done by then is logged. Default 30s.
	ShutdownTimeout time.Duration
	// SessionTimeout of the consumer group: how long a crashed instance's
	// partitions wait before they move to the others. Kafka bounds it with
	// group.min.session.timeout.ms (default 6s). Default 45s.
	SessionTimeout time.Duration
	// HTTPAddr to serve on; empty means no HTTP server (DefaultConfig: ":8080").
	HTTPAddr string
	// HTTPTokenFile holds the bearer tokens of the mutating HTTP endpoints
	// (sink.TokenFile: one per line, "NAME TOKEN" or "TOKEN", re-read when
	// it changes). Empty: those endpoints are off (403), never open.
	HTTPTokenFile string
	// HTTPProtectReads: the GET endpoints other than /healthz and /readyz
	// need a token too (sink.ProtectReads). Needs HTTPTokenFile.
	HTTPProtectReads bool
	// HTTPTLSCert and HTTPTLSKey, PEM files, serve HTTPS instead of HTTP
	// (sink.TLSFiles; re-read when they change). Both or neither.
	HTTPTLSCert, HTTPTLSKey string
	// Window: event-time windows. Defaults: Width 10s, Lateness 5s,
	// MaxFuture 1m (events further ahead of the wall clock go to the DLQ).
	Window window.Options
	// SignKey signs commands with HMAC-SHA256 when set.
	SignKey []byte
	// KgoOpts are extra Kafka client options (TLS, SASL).
	KgoOpts []kgo.Opt
	Logger  *slog.Logger
	Metrics *metrics.Set
	// OnVerdict, when set, is called with every verdict and whether a
	// command was sent for it, in the order each rollout's verdicts were
	// decided: a verdict with a command once the command's fate is known
	// (from the sender goroutine), one without at once (under the daemon's
	// lock: keep it short) unless commands of its rollout still wait, then
	// after them (only the newest such verdict is kept).
	OnVerdict func(v detector.Verdict, sent bool)
}

// Defaults of Config: DefaultConfig is the one place they are written.
// cmd/canaryd builds its flags from it and setDefaults fills zero fields from it.
const (
	DefaultEventsTopic        = "agent.events"
	DefaultControlTopic       = "canary.control"
	DefaultDLQTopic           = "agent.events.dlq"
	DefaultGroup              = "canaryd"
	DefaultStateTopic         = "canaryd.state"
	DefaultPartialsTopic      = "canaryd.partials"
	DefaultPartitions         = 6
	DefaultCheckpointInterval = 5 * time.Second
	DefaultHistoryWindows     = 360
	DefaultEvictAfter         = time.Hour
	DefaultShutdownTimeout    = 30 * time.Second
	DefaultSpecsPoll          = 5 * time.Second
	DefaultAckTimeout         = 30 * time.Second
	DefaultSessionTimeout     = 45 * time.Second
	DefaultHTTPAddr           = ":8080"
	DefaultWindowWidth        = 10 * time.Second
	DefaultLateness           = 5 * time.Second
	DefaultMaxFuture          = time.Minute
)

// DefaultConfig returns a Config with every default filled in; Brokers,
// Specs and the optional inputs (OTLP topics, models, state dir, sign key)
// are left empty. HTTPAddr is ":8080" here, but a zero HTTPAddr given to New
// still means no HTTP server.
func DefaultConfig() Config {
	return Config{
		EventsTopic:        DefaultEventsTopic,
		ControlTopic:       DefaultControlTopic,
		DLQTopic:           DefaultDLQTopic,
		Group:              DefaultGroup,
		Partitions:         DefaultPartitions,
		OTLPEncoding:       stream.EncodingOTLPProto,
		StateTopic:         DefaultStateTopic,
		PartialsTopic:      DefaultPartialsTopic,
		PartialsPartitions: DefaultPartitions,
		CheckpointInterval: DefaultCheckpointInterval,
		HistoryWindows:     DefaultHistoryWindows,
		EvictAfter:         DefaultEvictAfter,
		ShutdownTimeout:    DefaultShutdownTimeout,
		SpecsPoll:          DefaultSpecsPoll,
		AckTimeout:         DefaultAckTimeout,
		SessionTimeout:     DefaultSessionTimeout,
		HTTPAddr:           DefaultHTTPAddr,
		Window: window.Options{
			Width:     DefaultWindowWidth,
			Lateness:  DefaultLateness,
			MaxFuture: DefaultMaxFuture,
		},
	}
}

// setDefaults fills c's zero fields from DefaultConfig (except HTTPAddr: empty
// means no server) and refuses a Config that cannot run.
func (c *Config) setDefaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("no Kafka brokers: set --brokers or CANARYD_BROKERS")
	}
	if len(c.Specs) == 0 {
		return errors.New("no rollout specs: set --specs to a YAML file or directory")
	}
	d := DefaultConfig()
	str := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	dur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	str(&c.EventsTopic, d.EventsTopic)
	str(&c.ControlTopic, d.ControlTopic)
	str(&c.DLQTopic, d.DLQTopic)
	str(&c.Group, d.Group)
	str(&c.StateTopic, d.StateTopic)
	str(&c.PartialsTopic, d.PartialsTopic)
	if c.PartialsPartitions <= 0 {
		c.PartialsPartitions = d.PartialsPartitions
	}
	str(&c.OTLPEncoding, d.OTLPEncoding)
	if c.Partitions <= 0 {
		c.Partitions = d.Partitions
	}
	if c.HistoryWindows <= 0 {
		c.HistoryWindows = d.HistoryWindows
	}
	dur(&c.CheckpointInterval, d.CheckpointInterval)
	dur(&c.EvictAfter, d.EvictAfter)
	dur(&c.ShutdownTimeout, d.ShutdownTimeout)
	dur(&c.SpecsPoll, d.SpecsPoll)
	dur(&c.AckTimeout, d.AckTimeout)
	dur(&c.SessionTimeout, d.SessionTimeout)
	dur(&c.Window.Width, d.Window.Width)
	// A negative Lateness means none (window.Options); only zero is defaulted.
	if c.Window.Lateness == 0 {
		c.Window.Lateness = d.Window.Lateness
	}
	dur(&c.Window.MaxFuture, d.Window.MaxFuture)
	// The session timeout is a group option: the clients without a group
	// (producer, control reader) ignore it. A copy, so the caller's slice is
	// not appended to; a SessionTimeout in KgoOpts itself comes later and wins.
	c.KgoOpts = append([]kgo.Opt{kgo.SessionTimeout(c.SessionTimeout)}, c.KgoOpts...)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	return nil
}
