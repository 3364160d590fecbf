package loadtest

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of FleetConfig.
const (
	DefaultEventsTopic    = "agent.events"
	DefaultControlTopic   = "canary.control"
	DefaultTick           = 10 * time.Millisecond
	DefaultMaxInFlight    = 10_000
	DefaultFlushTimeout   = 10 * time.Second
	DefaultCatchUpTimeout = 5 * time.Second
)

// ErrAlreadyRun is returned by a second call of Fleet.Run: a Fleet runs once.
var ErrAlreadyRun = errors.New("loadtest: fleet already run")

// FleetConfig configures a Fleet. Rollouts and one of Brokers or Client are
// required; every other zero value means the documented default.
type FleetConfig struct {
	// Brokers are the seed brokers of the clients the fleet creates: the
	// producer (when Client is nil) and the control-topic consumer. With
	// Client set and Brokers empty, the consumer uses the Client's seed
	// brokers.
	Brokers []string
	// Client, when set, produces the events. The fleet does not configure or
	// close it, and Run's final flush waits for everything buffered on it.
	Client *kgo.Client
	// ClientOpts are added to the options of the clients the fleet creates:
	// TLS, SASL, client id, or producer tuning.
	ClientOpts []kgo.Opt

	// Format is the records' format: FormatJSON (default; one agent event
	// v1 per record, key = rollout), FormatOTLPProto or FormatOTLPJSON (one
	// ExportTraceServiceRequest per finished session, key = its trace id in
	// hex, as the Collector's Kafka exporter writes with
	// partition_traces_by_id). See the package documentation.
	Format string
	// EventsTopic is where records go; default DefaultEventsTopic, or
	// DefaultOTLPTopic in the OTLP formats.
	EventsTopic string
	// ControlTopic is where canaryd's commands are read from, from the start,
	// without a consumer group; default DefaultControlTopic.
	ControlTopic string

	Rollouts []Rollout
	// Seed seeds the simulation's random stream. The events also depend on
	// the clock and on when commands arrive, so a Fleet run is reproducible
	// only in distribution; use Generator for byte-for-byte reproducibility.
	Seed int64

	// Clock gives the time that event times follow; default time.Now. Run
	// reads it every Tick and writes the events that are due.
	Clock func() time.Time
	// Speed makes event time run Speed times as fast as Clock from the moment
	// Run starts: 10 puts ten seconds of traffic (and of rollout progress, for
	// a judge that follows event time) into each second. Rates are per second
	// of event time. Default 1.
	Speed float64
	// Tick is how often Run wakes to write due events; default DefaultTick.
	Tick time.Duration
	// MaxEvents stops Run after this many events; 0 means no limit. In the
	// OTLP formats an event is a span (a request or an agent span) and Run
	// stops after the record that reaches MaxEvents.
	MaxEvents int64

	// MaxInFlight bounds the records buffered by the producer the fleet
	// creates (kgo.MaxBufferedRecords): when it is full, Run waits, and event
	// time catches up afterwards. Default DefaultMaxInFlight.
	MaxInFlight int
	// FlushTimeout bounds the flush at the end of Run; default
	// DefaultFlushTimeout.
	FlushTimeout time.Duration
	// CatchUpTimeout bounds how long Run reads the control topic's existing
	// commands before it starts producing, so that a restarted fleet resumes
	// at the weight canaryd last set. Default DefaultCatchUpTimeout.
	CatchUpTimeout time.Duration

	// SigningKey, when set, makes the fleet ignore commands without a valid
	// HMAC signature under it, verified on the bytes as received (router.Verify).
	SigningKey []byte
	// Logger receives applied and ignored commands and produce errors; nil
	// means no logging.
	Logger *slog.Logger
}

func (c *FleetConfig) setDefaults() {
	if c.Format == "" {
		c.Format = FormatJSON
	}
	if c.EventsTopic == "" {
		c.EventsTopic = DefaultEventsTopic
		if c.Format != FormatJSON {
			c.EventsTopic = DefaultOTLPTopic
		}
	}
	if c.ControlTopic == "" {
		c.ControlTopic = DefaultControlTopic
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Speed == 0 {
		c.Speed = 1
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.FlushTimeout == 0 {
		c.FlushTimeout = DefaultFlushTimeout
	}
	if c.CatchUpTimeout == 0 {
		c.CatchUpTimeout = DefaultCatchUpTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if len(c.Brokers) == 0 && c.Client != nil {
		if b, ok := c.Client.OptValue(kgo.SeedBrokers).([]string); ok {
			c.Brokers = b
		}
	}
}

func (c *FleetConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case len(c.Brokers) == 0:
		return bad("no brokers and no client")
	case !validFormat(c.Format):
		return bad("format %q: want %s, %s or %s", c.Format, FormatJSON, FormatOTLPProto, FormatOTLPJSON)
	case c.EventsTopic == c.ControlTopic:
		return bad("events and control topic are both %q", c.EventsTopic)
	case !(c.Speed > 0) || math.IsInf(c.Speed, 0):
		return bad("speed %v must be > 0 and finite", c.Speed)
	case c.Tick < 0 || c.FlushTimeout < 0 || c.CatchUpTimeout < 0:
		return bad("durations must be >= 0")
	case c.MaxEvents < 0:
		return bad("MaxEvents %d < 0", c.MaxEvents)
	case c.MaxInFlight < 0:
		return bad("MaxInFlight %d < 0", c.MaxInFlight)
	}
	return validateRollouts(c.Rollouts)
}
