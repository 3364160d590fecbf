package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/window"
)

const waitSpecs = `
rollout: good
baseline: v1
canary: v2
alpha: 0.00002
steps:
  - {weight: 20, min_duration: 3s, min_canary_events: 300}
  - {weight: 50, min_duration: 3s, min_canary_events: 300}
  - {weight: 100}
metrics: {error_rate: {margin: 2.0}}
---
rollout: bad
baseline: v1
canary: v2
alpha: 0.01
steps:
  - {weight: 20, min_duration: 3s, min_canary_events: 300}
  - {weight: 50, min_duration: 3s, min_canary_events: 300}
  - {weight: 100}
metrics: {error_rate: {margin: 2.0}}
`

// TestWaitOnDaemon uses canaryd wait as a deploy pipeline would, against a
// real canaryd on an embedded broker judging a simulated fleet: the good
// canary's wait exits 0, the bad one's 1, and a wait for a release that is
// not the one judged times out with 2 although the rollout has a verdict.
// runTestDaemon runs a daemon on kfake topics named after topic, with
// specs, until the test ends; tweak, when set, adjusts its config.
func runTestDaemon(t *testing.T, brokers []string, topic, specs string, tweak func(*daemon.Config)) *daemon.Daemon {
	t.Helper()
	ss, err := detector.ParseSpecs("test.yaml", []byte(specs))
	if err != nil {
		t.Fatal(err)
	}
	cfg := daemon.Config{
		Brokers: brokers, EventsTopic: topic + ".events", ControlTopic: topic + ".control", DLQTopic: topic + ".dlq",
		Group: topic + ".group", Partitions: 3, Specs: ss, HTTPAddr: "127.0.0.1:0",
		Window: window.Options{Width: time.Second, Lateness: 500 * time.Millisecond}, Metrics: metrics.NewSet(),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon.Run: %v", err)
		}
	})
	return d
}

func TestWaitOnDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a simulated fleet for 20 to 60 s")
	}
	brokers := kafkatest.Fake(t)
	topic := kafkatest.Topic(t)
	d := runTestDaemon(t, brokers, topic, waitSpecs, nil)

	good, bad := loadtest.DefaultProfile(), loadtest.DefaultProfile()
	bad.ErrorRateMult = 4
	bad.ToolLatencyMult = 1.5
	fleet, err := loadtest.NewFleet(loadtest.FleetConfig{
		Brokers: brokers, EventsTopic: topic + ".events", ControlTopic: topic + ".control", Seed: 7,
		Rollouts: []loadtest.Rollout{
			{Name: "good", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: good, Rate: 300},
			{Name: "bad", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: bad, Rate: 300},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	fctx, stopFleet := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := fleet.Run(fctx); err != nil {
			t.Errorf("fleet: %v", err)
		}
	})
	defer func() { stopFleet(); wg.Wait() }()

	server := "http://" + d.HTTPAddr()
	type result struct {
		code           int
		stdout, stderr string
	}
	wait := func(args ...string) <-chan result {
		c := make(chan result, 1)
		go func() {
			var r result
			r.code, r.stdout, r.stderr = runCLI(t, append([]string{"wait", "--server", server, "--interval", "200ms"}, args...)...)
			c <- r
		}()
		return c
	}
	// Started before the daemon knows the rollouts: the pipeline's wait
	// begins as the deployment does.
	goodC := wait("good", "--canary", "v2", "--timeout", "2m")
	badC := wait("bad", "--canary", "v2", "--timeout", "2m")
	for _, tc := range []struct {
		name  string
		c     <-chan result
		code  int
		final string
	}{{"good", goodC, 0, "good v2 promoted"}, {"bad", badC, 1, "bad v2 rolled back"}} {
		r := <-tc.c
		t.Logf("wait %s: exit %d\n%s%s", tc.name, r.code, r.stdout, r.stderr)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.final) {
			t.Errorf("wait %s: exit %d; want %d and %q", tc.name, r.code, tc.code, tc.final)
		}
		if !strings.Contains(r.stdout, "weight 20%") {
			t.Errorf("wait %s printed no progress through the steps", tc.name)
		}
		// A line per change of step, weight or action, not per poll.
		if n := strings.Count(r.stdout, "\n"); n > 12 {
			t.Errorf("wait %s printed %d lines; want one per change (at most 12)", tc.name, n)
		}
	}
	// good has its verdict (v2 promoted); a wait for v3 does not take it.
	r := <-wait("good", "--canary", "v3", "--timeout", "1s")
	if r.code != 2 || !strings.Contains(r.stdout, "good is at v2 (promoted); waiting for good canary v3") || !strings.Contains(r.stderr, "timeout after 1s") {
		t.Errorf("wait for another release: exit %d, stdout %q, stderr %q; want 2 after the timeout", r.code, r.stdout, r.stderr)
	}
}
