package router

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

var testKey = []byte("router-test-key")

// producer is a client that writes control records and waits for the acks.
type producer struct {
	t     *testing.T
	cl    *kgo.Client
	topic string
}

func newProducer(t *testing.T, brokers []string, topic string) *producer {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &producer{t: t, cl: cl, topic: topic}
}

// raw writes a record as it is.
func (p *producer) raw(key string, value []byte) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.cl.ProduceSync(ctx, &kgo.Record{Key: []byte(key), Value: value}).FirstErr(); err != nil {
		p.t.Fatal(err)
	}
}

// send signs c with key (none when empty) and writes it as canaryd does.
func (p *producer) send(c schemas.Command, key []byte) {
	p.t.Helper()
	if err := c.Sign(key); err != nil {
		p.t.Fatal(err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		p.t.Fatal(err)
	}
	p.raw(c.Rollout, b)
}

// recorder collects a Subscriber's callbacks.
type recorder struct {
	mu      sync.Mutex
	changes []Change
	refused []error
}

func (r *recorder) opts() []Opt {
	return []Opt{
		OnChange(func(c Change) { r.mu.Lock(); r.changes = append(r.changes, c); r.mu.Unlock() }),
		OnRefused(func(_ *kgo.Record, err error) { r.mu.Lock(); r.refused = append(r.refused, err); r.mu.Unlock() }),
	}
}

// wait waits until the callbacks have seen n records: each record gets
// exactly one of them, after the Table has applied or refused it.
func (r *recorder) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r.mu.Lock()
		seen := len(r.changes) + len(r.refused)
		r.mu.Unlock()
		if seen >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("callbacks saw %d records after 60s; want %d", seen, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *recorder) get() ([]Change, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.changes), slices.Clone(r.refused)
}

// start runs a Subscriber until the test ends and waits for its bootstrap.
func start(t *testing.T, opts ...Opt) *Subscriber {
	t.Helper()
	s, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		// Shutdown order: end Run, wait for it, close the client.
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		s.Close()
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run returned before the bootstrap: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("bootstrap not done after 60s")
	}
	return s
}

func cmd(rollout string, seq uint64, a schemas.Action, step, weight int) schemas.Command {
	c := schemas.Command{Seq: seq, Rollout: rollout, Baseline: "v1", Canary: "v2", Action: a, Weight: weight, Step: step,
		Reason: "test <" + string(a) + "> & more", DecidedAt: time.Date(2026, 12, 3, 16, 0, int(seq), 0, time.UTC)}
	c.CommandID = schemas.CommandID(c.Rollout, c.Baseline, c.Canary, c.Action, c.Step, c.Weight)
	return c
}

func checkState(t *testing.T, s *Subscriber, rollout string, a schemas.Action, weight int, seq uint64) {
	t.Helper()
	st, ok := s.State(rollout)
	if !ok || st.Action != a || st.Weight != weight || st.Seq != seq {
		t.Errorf("State(%s) = %+v, %v; want %s weight %d seq %d", rollout, st, ok, a, weight, seq)
	}
}

// TestSubscriber bootstraps from a control topic with several rollouts and
// then follows it, with commands of every kind that must not be applied, on
// kfake and a real broker.
func TestSubscriber(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			topic := kafkatest.Topic(t)
			kafkatest.CreateTopicsConfig(t, brokers, 1, map[string]string{"cleanup.policy": "compact"}, topic)
			p := newProducer(t, brokers, topic)

			// History before the router starts: three rollouts.
			p.send(cmd("a", 1, schemas.ActionSetWeight, 0, 5), testKey)
			p.send(cmd("b", 1, schemas.ActionSetWeight, 0, 10), testKey)
			p.send(cmd("a", 2, schemas.ActionSetWeight, 1, 25), testKey)
			p.send(cmd("c", 7, schemas.ActionSetWeight, 0, 50), testKey)
			p.send(cmd("b", 2, schemas.ActionRollback, 1, 0), testKey)
			p.send(cmd("c", 3, schemas.ActionPromote, 1, 100), testKey) // seq back
			p.send(cmd("a", 3, schemas.ActionPromote, 2, 100), nil)     // unsigned
			const history = 7

			var rec recorder
			s := start(t, append(rec.opts(), Brokers(brokers...), Topic(topic), SigningKey(testKey))...)
			if st := s.Stats(); st.Records != history || st.Applied != 5 || st.Stale != 1 || st.Refused[ReasonUnsigned] != 1 {
				t.Fatalf("after the bootstrap: %+v; want 7 records, 5 applied, 1 stale, 1 unsigned", st)
			}
			checkState(t, s, "a", schemas.ActionSetWeight, 25, 2)
			checkState(t, s, "b", schemas.ActionRollback, 0, 2)
			checkState(t, s, "c", schemas.ActionSetWeight, 50, 7)
			changes, _ := rec.get()
			for _, c := range changes {
				if !c.Replay {
					t.Errorf("change %+v read in the bootstrap has Replay false", c.State)
				}
			}
			if c := changes[2]; c.State.Rollout != "a" || c.Prev.Weight != 5 || c.State.Weight != 25 {
				t.Errorf("third change: %+v → %+v; want a 5 → 25", c.Prev, c.State)
			}

			// Follow: a new command, a duplicate id, a seq going back, bad
			// signatures, records that are not commands.
			p.send(cmd("a", 3, schemas.ActionSetWeight, 2, 50), testKey)
			dup := cmd("a", 4, schemas.ActionSetWeight, 2, 50) // same id, higher seq
			p.send(dup, testKey)
			p.send(cmd("a", 2, schemas.ActionRollback, 2, 0), testKey)
			p.send(cmd("a", 5, schemas.ActionRollback, 2, 0), []byte("wrong key"))
			forged := cmd("a", 5, schemas.ActionPromote, 3, 100)
			if err := forged.Sign(testKey); err != nil {
				t.Fatal(err)
			}
			forged.Weight = 0 // changed after signing
			b, _ := json.Marshal(forged)
			p.raw("a", b)
			p.raw("a", []byte("not json"))
			p.raw("a", nil)
			p.send(cmd("b", 3, schemas.ActionSetWeight, 0, 1), testKey)
			rec.wait(t, history+8)

			checkState(t, s, "a", schemas.ActionSetWeight, 50, 3)
			checkState(t, s, "b", schemas.ActionSetWeight, 1, 3)
			st := s.Stats()
			want := Stats{Records: 15, Applied: 7, Stale: 2, Duplicate: 1, Tombstone: 1,
				Refused: map[Reason]uint64{ReasonNotJSON: 1, ReasonInvalid: 0, ReasonKeyMismatch: 0, ReasonUnsigned: 1, ReasonBadSignature: 2}}
			if st.Records != want.Records || st.Applied != want.Applied || st.Stale != want.Stale || st.Duplicate != want.Duplicate ||
				st.Tombstone != want.Tombstone || !mapsEqual(st.Refused, want.Refused) {
				t.Errorf("Stats = %+v; want %+v", st, want)
			}
			changes, refused := rec.get()
			if len(changes) != 7 || changes[5].Replay || changes[6].Replay {
				t.Errorf("changes: %d, last ones replay %v; want 7, followed ones not replays", len(changes), changes[len(changes)-1].Replay)
			}
			var reasons []string
			for _, err := range refused {
				reasons = append(reasons, outcome(err))
			}
			wantReasons := []string{"stale", "refused:unsigned", "duplicate", "stale", "refused:bad_signature",
				"refused:bad_signature", "refused:not_json", "tombstone"}
			if !slices.Equal(reasons, wantReasons) {
				t.Errorf("refused: %q; want %q", reasons, wantReasons)
			}
			if got := s.Assign("b", "any", nil); got != "v2" && got != "v1" {
				t.Errorf("Assign(b) = %q", got)
			}
			if err := s.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
				t.Errorf("second Run: %v; want ErrAlreadyRun", err)
			}
			if got := s.Assign("nope", "any", nil); got != "" {
				t.Errorf("Assign(unknown rollout) = %q; want \"\"", got)
			}
		})
	}
}

// TestSubscriberCompacted checks that a router starting from a compacted
// topic (only the latest command per rollout left) ends in the same state as
// one that read the whole history: what makes the bootstrap correct whether
// or not the broker has compacted yet. Compaction is simulated by writing
// only the last applied command of each rollout to a second topic, since a
// broker compacts when it likes.
func TestSubscriberCompacted(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			full, compacted := kafkatest.Topic(t), kafkatest.Topic(t)
			kafkatest.CreateTopicsConfig(t, brokers, 1, map[string]string{"cleanup.policy": "compact"}, full, compacted)
			pf, pc := newProducer(t, brokers, full), newProducer(t, brokers, compacted)
			last := map[string]schemas.Command{}
			var order []string
			for i, w := range []int{1, 5, 10, 25, 50} {
				for _, r := range []string{"r1", "r2", "r3", "r4"} {
					if r == "r3" && i > 2 {
						continue
					}
					c := cmd(r, uint64(i+1), schemas.ActionSetWeight, i, w)
					if r == "r4" && i == 4 {
						c = cmd(r, uint64(i+1), schemas.ActionRollback, i, 0)
					}
					c.Cohort = &schemas.Cohort{Attribute: "tier", Values: []string{"internal"}}
					pf.send(c, testKey)
					if _, ok := last[r]; !ok {
						order = append(order, r)
					}
					last[r] = c
				}
			}
			for _, r := range order {
				pc.send(last[r], testKey)
			}
			sf := start(t, Brokers(brokers...), Topic(full), SigningKey(testKey))
			sc := start(t, Brokers(brokers...), Topic(compacted), SigningKey(testKey))
			fs, cs := sf.States(), sc.States()
			if len(fs) != 4 {
				t.Fatalf("full history: %d states; want 4", len(fs))
			}
			for i := range fs {
				a, b := fs[i], cs[i]
				a.AppliedAt, b.AppliedAt = time.Time{}, time.Time{}
				if a.Rollout != b.Rollout || a.Seq != b.Seq || a.Weight != b.Weight || a.Action != b.Action ||
					a.CommandID != b.CommandID || a.Cohort.Attribute != b.Cohort.Attribute {
					t.Errorf("state of %s: full history %+v; compacted %+v", a.Rollout, a, b)
				}
				for k := range 200 {
					key := "user-" + string(rune('a'+k%26)) + string(rune('0'+k/26))
					attrs := map[string]string{"tier": []string{"internal", "external"}[k%2]}
					if x, y := sf.Assign(a.Rollout, key, attrs), sc.Assign(a.Rollout, key, attrs); x != y {
						t.Fatalf("Assign(%s, %s): full history %s; compacted %s", a.Rollout, key, x, y)
					}
				}
			}
		})
	}
}

func TestNewInvalid(t *testing.T) {
	for name, opts := range map[string][]Opt{
		"no brokers":  {Topic("x")},
		"empty topic": {Brokers("localhost:1"), Topic("")},
		"retry 0":     {Brokers("localhost:1"), RetryInterval(0)},
	} {
		if _, err := New(opts...); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New() error %v; want ErrInvalidConfig", name, err)
		}
	}
}

// TestRunCancelledBeforeBootstrap checks that Run gives up when its context
// ends while no broker answers, and says so.
func TestRunCancelledBeforeBootstrap(t *testing.T) {
	s, err := New(Brokers("127.0.0.1:1"), RetryInterval(10*time.Millisecond),
		ClientOpts(kgo.RetryTimeout(100*time.Millisecond), kgo.DialTimeout(100*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v; want context.DeadlineExceeded", err)
	}
	select {
	case <-s.Ready():
		t.Fatal("Ready closed without a bootstrap")
	default:
	}
}

func mapsEqual(a, b map[Reason]uint64) bool {
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return len(a) == len(b)
}
