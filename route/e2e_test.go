package route

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/canarydtest"
	"github.com/inferensys/canaryd/schemas"
)

// The end-to-end tests run the whole loop with real parts: canaryd (the
// binary, on its kfake broker) judges agent events; its commands go to the
// control topic; `canaryd route` (the router library and the HAProxy
// adapter) sets the weights of a real HAProxy through its runtime API and
// acknowledges them on canary.acks, which canaryd reads; the test's agent
// traffic goes through that HAProxy, and each answer becomes an event of
// the version that served it. So the split canaryd judges, and checks with
// its SRM test, is the split HAProxy really served.
//
// The traffic is real time: each event is stamped when its answer came.
// canaryd starts a step's clock when the routers acknowledged it, by their
// clocks, so events of the past would not count for a step, and events of
// the future would count traffic served before the weight changed.

// e2eSpec: with alpha 1e-4, the chance that the good canary (identical
// to its baseline) is rolled back by luck is at most 1e-4 (Ville's
// inequality over the whole release); the margins let it be promoted
// within a minute at 1000 requests a second.
const e2eSpec = `rollout: support-agent
baseline: v1
canary: v2
alpha: 0.0001
settle: 3s
steps:
  - {weight: 25, min_duration: 10s, min_canary_events: 1000}
  - {weight: 50, min_duration: 10s, min_canary_events: 2000}
  - {weight: 100}
metrics:
  error_rate: {margin: 2.0}
  latency_p95: {margin: 0.2}
`

// agentBackend is one version of the agent behind HAProxy: it answers with
// its name, and fails errRate of the requests with a 500.
func agentBackend(t *testing.T, name string, errRate float64, seed uint64) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	var mu = make(chan struct{}, 1)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu <- struct{}{}
		fail := rng.Float64() < errRate
		<-mu
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

type e2e struct {
	c      *canarydtest.Canaryd
	hp     *haproxyProc
	fc     *hpFrontClient
	route  *routeProcess
	rng    *rand.Rand
	seq    int
	served map[int][2]int // canary weight in HAProxy → requests served by [v1, v2]
}

// startE2E starts canaryd, HAProxy in front of the two versions (the
// canary failing canaryErr of its requests) and `canaryd route`.
func startE2E(t *testing.T, canaryErr float64) *e2e {
	t.Helper()
	c := canarydtest.Start(t, e2eSpec, "--acks-topic", "canary.acks", "--ack-timeout", "10s")
	hp := startHAProxy(t, hpBackend{name: "agents", balance: "roundrobin", servers: []hpServer{
		{name: "v1", addr: agentBackend(t, "v1", 0.01, 1), weight: 100},
		{name: "v2", addr: agentBackend(t, "v2", canaryErr, 2), weight: 0},
	}})
	routes := fmt.Sprintf(`haproxy: {address: %s}
routes:
  - rollout: support-agent
    haproxy: {backend: agents, baseline_server: v1, canary_server: v2}
`, hp.admin)
	rp := startRoute(t, routes, "--brokers", strings.Join(c.Brokers, ","), "--acks-topic", "canary.acks",
		"--router-id", "haproxy-1", "--min-backoff", "50ms")
	return &e2e{c: c, hp: hp, fc: newHPFrontClient(hp), route: rp, rng: rand.New(rand.NewPCG(3, 3)), served: map[int][2]int{}}
}

// batch sends n requests through HAProxy and produces an event per answer,
// of the version that answered, stamped when it answered.
func (e *e2e) batch(t *testing.T, n int) {
	t.Helper()
	w := e.hp.weight(t, "agents", "v2")
	events := make([]canarydtest.Event, 0, n)
	counts := e.served[w]
	for range n {
		code, body, err := e.fc.do()
		if err != nil {
			t.Fatalf("request through haproxy: %v", err)
		}
		if body != "v1" && body != "v2" {
			t.Fatalf("haproxy answered %d %q", code, body)
		}
		if body == "v1" {
			counts[0]++
		} else {
			counts[1]++
		}
		e.seq++
		events = append(events, canarydtest.Event{Rollout: "support-agent", Version: body,
			TS:       time.Now(),
			Duration: 800 * math.Exp(0.4*e.rng.NormFloat64()), Error: code != http.StatusOK,
			Session: fmt.Sprintf("s%d", e.seq)})
	}
	e.served[w] = counts
	e.c.Produce(events)
}

type e2eStatus struct {
	Final   string `json:"final"`
	Weight  int    `json:"weight"`
	Step    int    `json:"step"`
	Routers []struct {
		Router  string `json:"router"`
		Weight  int    `json:"weight"`
		Action  string `json:"action"`
		Lagging bool   `json:"lagging"`
	} `json:"routers"`
	Verdict struct {
		Reason string `json:"reason"`
	} `json:"verdict"`
}

func (e *e2e) status(t *testing.T) e2eStatus {
	t.Helper()
	resp, err := http.Get(e.c.URL + "/v1/rollouts/support-agent")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st e2eStatus
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// run sends 1000 requests a second (100 every 100 ms: a pace, not a
// decision) until canaryd's rollout ends, at most limit, and returns its
// status.
func (e *e2e) run(t *testing.T, limit time.Duration) e2eStatus {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		e.batch(t, 100)
		if st := e.status(t); st.Final != "" {
			return st
		}
		<-tick.C
	}
	st := e.status(t)
	t.Fatalf("no final verdict within %v: step %d weight %d: %s", limit, st.Step, st.Weight, st.Verdict.Reason)
	return st
}

// commandsAndAcks reads the control and acks topics of canaryd's broker.
func (e *e2e) commandsAndAcks(t *testing.T, nCommands, nAcks int) ([]schemas.Command, []schemas.Ack) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.c.Brokers...), kgo.ConsumeTopics("canary.control", "canary.acks"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cmds []schemas.Command
	var acks []schemas.Ack
	for len(cmds) < nCommands || len(acks) < nAcks {
		if ctx.Err() != nil {
			t.Fatalf("after 60s: %d commands, %d acks; want %d, %d", len(cmds), len(acks), nCommands, nAcks)
		}
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			switch r.Topic {
			case "canary.control":
				var c schemas.Command
				if json.Unmarshal(r.Value, &c) == nil && c.Rollout == "support-agent" {
					cmds = append(cmds, c)
				}
			case "canary.acks":
				var a schemas.Ack
				if err := json.Unmarshal(r.Value, &a); err != nil {
					t.Errorf("ack %s: %v", r.Value, err)
				}
				acks = append(acks, a)
			}
		})
	}
	return cmds, acks
}

// checkLoop checks that every command was acknowledged by the router, in
// order, once, and logs the time from decision to applied.
func checkLoop(t *testing.T, cmds []schemas.Command, acks []schemas.Ack) {
	t.Helper()
	if len(acks) != len(cmds) {
		t.Fatalf("%d acks for %d commands", len(acks), len(cmds))
	}
	for i, c := range cmds {
		a := acks[i]
		if a.CommandID != c.CommandID || a.Seq != c.Seq || a.Weight != c.Weight && !(c.Action == schemas.ActionPromote && a.Weight == 100) || a.Router != "haproxy-1" {
			t.Errorf("ack %d %+v; want command %s seq %d weight %d by haproxy-1", i, a, c.CommandID, c.Seq, c.Weight)
		}
		t.Logf("%s %d%%: decided %s, applied in HAProxy and acknowledged %v later",
			c.Action, a.Weight, c.DecidedAt.Format(time.TimeOnly), a.AppliedAt.Sub(c.DecidedAt).Round(time.Millisecond))
	}
}

// TestEndToEndPromote: a canary as good as its baseline is ramped 25% →
// 50% → promoted. Each step's weight is in force in HAProxy (measured from
// the answers: within ±2 points, HAProxy's roundrobin being exact), each
// command acknowledged, and canaryd's status shows the router at 100.
func TestEndToEndPromote(t *testing.T) {
	e := startE2E(t, 0.01)
	st := e.run(t, 3*time.Minute)
	if st.Final != "promote" {
		t.Fatalf("final %q: %s; want promote", st.Final, st.Verdict.Reason)
	}
	cmds, acks := e.commandsAndAcks(t, 3, 3)
	var got []string
	for _, c := range cmds {
		got = append(got, fmt.Sprintf("%s %d", c.Action, c.Weight))
	}
	if s := strings.Join(got, ", "); s != "set_weight 25, set_weight 50, promote 100" {
		t.Fatalf("commands %s; want set_weight 25, set_weight 50, promote 100", s)
	}
	checkLoop(t, cmds, acks)
	for w, n := range e.served {
		if share := 100 * float64(n[1]) / float64(n[0]+n[1]); math.Abs(share-float64(w)) > 2 {
			t.Errorf("at canary weight %d HAProxy served %.1f%% to the canary (%d of %d)", w, share, n[1], n[0]+n[1])
		} else {
			t.Logf("at canary weight %d HAProxy served %.1f%% to the canary (%d of %d)", w, share, n[1], n[0]+n[1])
		}
	}
	if w := e.hp.weight(t, "agents", "v2"); w != 100 || e.hp.weight(t, "agents", "v1") != 0 {
		t.Errorf("HAProxy weights after the promotion: v2 %d, v1 %d; want 100, 0", w, e.hp.weight(t, "agents", "v1"))
	}
	waitUntil(t, "canaryd showing haproxy-1 at 100", func() bool {
		st := e.status(t)
		return len(st.Routers) == 1 && st.Routers[0].Router == "haproxy-1" && st.Routers[0].Weight == 100 && !st.Routers[0].Lagging
	})
}

// TestEndToEndRollback: a canary failing 25% of its requests is rolled back
// at its first step; HAProxy sends it nothing from then on, and the
// rollback is acknowledged.
func TestEndToEndRollback(t *testing.T) {
	e := startE2E(t, 0.25)
	st := e.run(t, 2*time.Minute)
	if st.Final != "rollback" || !strings.Contains(st.Verdict.Reason, "error") {
		t.Fatalf("final %q: %s; want a rollback for errors", st.Final, st.Verdict.Reason)
	}
	cmds, acks := e.commandsAndAcks(t, 2, 2)
	if cmds[0].Action != schemas.ActionSetWeight || cmds[1].Action != schemas.ActionRollback {
		t.Fatalf("commands %s, %s; want set_weight, rollback", cmds[0].Action, cmds[1].Action)
	}
	checkLoop(t, cmds, acks)
	canary := 0
	for range 500 {
		if _, body, err := e.fc.do(); err != nil {
			t.Fatal(err)
		} else if body != "v1" {
			canary++
		}
	}
	if canary != 0 {
		t.Errorf("after the rollback HAProxy sent %d of 500 requests to the canary; want 0", canary)
	}
	waitUntil(t, "canaryd showing haproxy-1 at 0", func() bool {
		st := e.status(t)
		return len(st.Routers) == 1 && st.Routers[0].Weight == 0 && st.Routers[0].Action == "rollback"
	})
}
