package router

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
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
}

func defaultCfg() cfg {
	return cfg{
		topic:  DefaultTopic,
		logger: slog.New(slog.DiscardHandler),
		clock:  time.Now,
		retry:  time.Second,
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
