package router

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/schemas"
)

// DefaultTopic is canaryd's control topic.
const DefaultTopic = "canary.control"

// ErrInvalidConfig is wrapped by New's errors about its options.
var ErrInvalidConfig = errors.New("router: invalid config")

// Opt configures a Subscriber.
type Opt func(*cfg)

type cfg struct {
	brokers    []string
	topic      string
	key        []byte
	clientOpts []kgo.Opt
	onChange   func(Change)
	onRefused  func(*kgo.Record, error)
	logger     *slog.Logger
	clock      func() time.Time
	retry      time.Duration

	apply     func(Change) error
	acksTopic string // "" = no acks
	routerID  string
	ackFlush  time.Duration
}

func defaultCfg() cfg {
	return cfg{
		topic:  DefaultTopic,
		logger: slog.New(slog.DiscardHandler),
		clock:  time.Now,
		retry:  time.Second,

		ackFlush: 5 * time.Second,
	}
}

func (c *cfg) validate() error {
	switch {
	case len(c.brokers) == 0:
		return fmt.Errorf("%w: no brokers", ErrInvalidConfig)
	case c.topic == "":
		return fmt.Errorf("%w: empty topic", ErrInvalidConfig)
	case c.retry <= 0:
		return fmt.Errorf("%w: retry interval %v must be > 0", ErrInvalidConfig, c.retry)
	case c.acksTopic != "" && c.routerID == "":
		return fmt.Errorf("%w: acks without a router id", ErrInvalidConfig)
	case len(c.routerID) > schemas.MaxRouterBytes:
		return fmt.Errorf("%w: router id longer than %d bytes", ErrInvalidConfig, schemas.MaxRouterBytes)
	case c.ackFlush < 0:
		return fmt.Errorf("%w: ack flush timeout %v must be >= 0", ErrInvalidConfig, c.ackFlush)
	}
	return nil
}

// Brokers sets the seed brokers. Required.
func Brokers(brokers ...string) Opt {
	return func(c *cfg) { c.brokers = slices.Clone(brokers) }
}

// Topic sets the control topic; default DefaultTopic ("canary.control").
func Topic(topic string) Opt { return func(c *cfg) { c.topic = topic } }

// SigningKey sets the HMAC key shared with canaryd (the contents of its --sign-key-file).
// With a key, unsigned and badly signed commands are refused and counted;
// without one (the default) every valid command is applied, signed or not.
func SigningKey(key []byte) Opt { return func(c *cfg) { c.key = slices.Clone(key) } }

// ClientOpts adds franz-go options to the consumer's: TLS, SASL, client id.
// Consumer options that choose what is read (topics, groups, offsets) are
// the Subscriber's own and must not be given.
func ClientOpts(opts ...kgo.Opt) Opt {
	return func(c *cfg) { c.clientOpts = append(c.clientOpts, opts...) }
}

// OnChange sets a function called with every applied command, in topic
// order, from Run's goroutine and with no lock held: an adapter applies the
// new state there. While it runs, later commands wait, so it should not
// block for long. Default none.
func OnChange(f func(Change)) Opt { return func(c *cfg) { c.onChange = f } }

// OnRefused sets a function called, like OnChange, with every record that
// was not applied and the reason: a *RefusedError, ErrStale, ErrDuplicate or
// ErrTombstone. Default none (Stats counts them, the logger logs them).
func OnRefused(f func(*kgo.Record, error)) Opt { return func(c *cfg) { c.onRefused = f } }

// Logger sets the logger of refused commands and fetch errors (Warn) and of
// applied and ignored ones (Debug: the adapter logs what it does with them);
// default none.
func Logger(l *slog.Logger) Opt {
	return func(c *cfg) {
		if l != nil {
			c.logger = l
		}
	}
}

// Clock sets the clock of State.AppliedAt; default time.Now.
func Clock(now func() time.Time) Opt {
	return func(c *cfg) {
		if now != nil {
			c.clock = now
		}
	}
}

// RetryInterval sets how long Run waits before it asks again for the
// topic's end offsets when the broker could not tell them; default 1s.
func RetryInterval(d time.Duration) Opt { return func(c *cfg) { c.retry = d } }

// Apply sets a function called with every applied command, after OnChange,
// from Run's goroutine and with no lock held, that puts the command in force
// (sets the weights of a proxy, writes a route) and says whether it did: a
// nil error means applied, and with Acks the command is acknowledged; an
// error means not applied, and no ack is published (it is logged and counted
// in AckStats.NotApplied). The Table's state moves on either way: Assign
// follows the command, and the next command carries the whole state again.
// Apply may also return ErrAckLater: the command is being put in force
// asynchronously (the route package's Driver retries with backoff), and
// whoever took it over calls Subscriber.Ack once it is in force.
// Default none: every command that passes the rules counts as applied.
func Apply(f func(Change) error) Opt { return func(c *cfg) { c.apply = f } }

// Acks turns on acknowledgements: for every command it applied (OnChange
// returned and Apply, if set, returned nil), the Subscriber publishes a
// schemas.Ack (schemas/ack.v1.json) naming routerID to topic
// (schemas.DefaultAcksTopic, "canary.acks", when topic is empty), key = the
// rollout. routerID names this router instance (a pod name): canaryd keeps
// one state per rollout and router id, so keep it stable across restarts;
// at most schemas.MaxRouterBytes. Acks are produced asynchronously, so a
// slow broker never holds up the commands; franz-go retries each on
// retriable errors until the broker has it (idempotent, in order per
// rollout) or the Subscriber is closed. An ack that fails for good (no
// permission, the topic still missing after franz-go's UnknownTopicRetries)
// is logged and counted in AckStats.Failed; canaryd then shows the router
// as lagging, which is the truth it can see. Default off.
func Acks(topic, routerID string) Opt {
	return func(c *cfg) {
		if topic == "" {
			topic = schemas.DefaultAcksTopic
		}
		c.acksTopic, c.routerID = topic, routerID
	}
}

// AckFlushTimeout bounds how long Close waits for acks not yet on the
// broker before it closes the client (they are then lost, and counted in
// AckStats.Failed); default 5s.
func AckFlushTimeout(d time.Duration) Opt { return func(c *cfg) { c.ackFlush = d } }
