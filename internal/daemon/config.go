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
	Specs          []detector.Spec
	// Models, when set, fills in the context limit and the cost of llm
	// events whose model it lists and whose source sent none (events and
	// OTLP spans topics; see stream.Enrich). Load it with
	// stream.LoadModelTable.
	Models *stream.ModelTable
	// StateDir holds the Badger checkpoints (window state, offsets and the
	// judges' state). Empty: state is in memory only, and a restart replays
	// from the committed offsets with the judges' evidence lost.
	StateDir string
	// StateTopic carries checkpoints of revoked partitions to their next
	// owner (with StateDir). Default canaryd.state.
	StateTopic string
	// CheckpointInterval: see stream.Options. Default 5s.
	CheckpointInterval time.Duration
	// HistoryWindows is how many closed windows per rollout are kept for the
	// Arrow export; older ones are folded into one row per series. Default 360.
	HistoryWindows int
	// EvictAfter: a rollout's state is dropped this long (event time) after
	// its last event in a partition, and its export history this long after
	// its final verdict. Default 1h (window.Options.EvictAfter).
	EvictAfter time.Duration
	// ShutdownTimeout bounds how long Run takes to return once its context
	// ends: flushing partitions, sending the last commands and dead letters,
	// committing offsets. What could not be done by then is logged. Default 30s.
	ShutdownTimeout time.Duration
	// HTTPAddr to serve on; empty means no HTTP server.
	HTTPAddr string
	Window   window.Options
	// SignKey signs commands with HMAC-SHA256 when set.
	SignKey []byte
	// KgoOpts are extra Kafka client options (TLS, SASL).
	KgoOpts []kgo.Opt
	Logger  *slog.Logger
	Metrics *metrics.Set
	// OnVerdict, when set, is called with every verdict and whether a
	// command was sent for it: a verdict without a command from the
	// partition goroutine that judged it, one with a command from the
	// sender once the command's fate is known. No lock is held.
	OnVerdict func(v detector.Verdict, sent bool)
}

func (c *Config) setDefaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("no Kafka brokers: set --brokers or CANARYD_BROKERS")
	}
	if len(c.Specs) == 0 {
		return errors.New("no rollout specs: set --specs to a YAML file or directory")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.EventsTopic, "agent.events")
	def(&c.ControlTopic, "canary.control")
	def(&c.DLQTopic, "agent.events.dlq")
	def(&c.Group, "canaryd")
	def(&c.StateTopic, "canaryd.state")
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Partitions <= 0 {
		c.Partitions = 6
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	return nil
}
