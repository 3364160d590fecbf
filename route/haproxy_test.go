package route

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/inferensys/canaryd/schemas"
)

func TestHAProxyConfigValidate(t *testing.T) {
	good := HAProxyRoute{Backend: "be", BaselineServer: "v1", CanaryServer: "v2"}
	for _, tc := range []struct {
		name string
		cfg  HAProxyConfig
		r    HAProxyRoute
		want string // "" = valid
	}{
		{"unix", HAProxyConfig{Address: "/run/haproxy/admin.sock"}, good, ""},
		{"tcp", HAProxyConfig{Address: "127.0.0.1:9999", Timeout: time.Second}, good, ""},
		{"names with . - _ :", HAProxyConfig{Address: "lb.internal:9999"}, HAProxyRoute{Backend: "be_support-agent.v1:x", BaselineServer: "a", CanaryServer: "b"}, ""},
		{"no address", HAProxyConfig{}, good, "address is required"},
		{"relative path", HAProxyConfig{Address: "admin.sock"}, good, "address \"admin.sock\""},
		{"no host", HAProxyConfig{Address: ":9999"}, good, "has no host"},
		{"bad port", HAProxyConfig{Address: "h:http"}, good, "port \"http\""},
		{"negative timeout", HAProxyConfig{Address: "/s", Timeout: -time.Second}, good, "timeout -1s is negative"},
		{"no backend", HAProxyConfig{Address: "/s"}, HAProxyRoute{BaselineServer: "a", CanaryServer: "b"}, "backend: is required"},
		{"no baseline", HAProxyConfig{Address: "/s"}, HAProxyRoute{Backend: "be", CanaryServer: "b"}, "baseline_server: is required"},
		{"no canary", HAProxyConfig{Address: "/s"}, HAProxyRoute{Backend: "be", BaselineServer: "a"}, "canary_server: is required"},
		{"same server", HAProxyConfig{Address: "/s"}, HAProxyRoute{Backend: "be", BaselineServer: "a", CanaryServer: "a"}, "both \"a\""},
		{"command injection", HAProxyConfig{Address: "/s"}, HAProxyRoute{Backend: "be", BaselineServer: "a", CanaryServer: "b; shutdown frontend fe"}, "canary_server: \"b; shutdown frontend fe\" has ';'"},
		{"slash", HAProxyConfig{Address: "/s"}, HAProxyRoute{Backend: "be/x", BaselineServer: "a", CanaryServer: "b"}, "backend: \"be/x\" has '/'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewHAProxy(tc.cfg, map[string]HAProxyRoute{"r": tc.r}, nil)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v; want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestHAProxyConfigYAML decodes the shapes the routes file embeds.
func TestHAProxyConfigYAML(t *testing.T) {
	var f struct {
		HAProxy HAProxyConfig `yaml:"haproxy"`
		Routes  []struct {
			Rollout string       `yaml:"rollout"`
			HAProxy HAProxyRoute `yaml:"haproxy"`
		} `yaml:"routes"`
	}
	src := `
haproxy: {address: /run/haproxy/admin.sock, timeout: 1500ms}
routes:
  - rollout: support-agent
    haproxy: {backend: support_agent, baseline_server: v1, canary_server: v2}
`
	if err := yaml.Unmarshal([]byte(src), &f); err != nil {
		t.Fatal(err)
	}
	if got, want := f.HAProxy, (HAProxyConfig{Address: "/run/haproxy/admin.sock", Timeout: 1500 * time.Millisecond}); got != want {
		t.Fatalf("got %+v; want %+v", got, want)
	}
	if got, want := f.Routes[0].HAProxy, (HAProxyRoute{Backend: "support_agent", BaselineServer: "v1", CanaryServer: "v2"}); got != want {
		t.Fatalf("got %+v; want %+v", got, want)
	}
	if err := errors.Join(f.HAProxy.Validate(), f.Routes[0].HAProxy.Validate()); err != nil {
		t.Fatal(err)
	}
}

// TestHAProxyApplySplit applies 5, 25, 50 and 100 percent and then a
// rollback to a real HAProxy and measures the split it serves: 2,000
// requests after each Apply, counted by the version that answered.
//
// The backend balances roundrobin, which in HAProxy is a smooth weighted
// round robin: the split of consecutive requests is deterministic (no
// chance of failing by luck) and within a request or two of the weights, so
// ±2 percentage points is a wide margin; at weight 0 a server must get
// exactly no request. The canary is declared "weight 0" in the config, so
// this also shows set weight raising a server from an initial 0.
//
// The requests go over one keep-alive client connection (the test counts
// the connections it opens): HAProxy in HTTP mode balances each request, not
// each connection, so the split of a single connection follows the weights.
func TestHAProxyApplySplit(t *testing.T) {
	p := startHAProxy(t, hpBackend{name: "agent", balance: "roundrobin", servers: []hpServer{
		{name: "v1", addr: hpVersionServer(t, "v1"), weight: 100},
		{name: "v2", addr: hpVersionServer(t, "v2"), weight: 0},
	}})
	h, err := NewHAProxy(HAProxyConfig{Address: p.admin},
		map[string]HAProxyRoute{"support-agent": {Backend: "agent", BaselineServer: "v1", CanaryServer: "v2"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fc := newHPFrontClient(p)
	if got := fc.count(t, 200); got["v2"] != 0 {
		t.Fatalf("before any Apply: %v; want no answer from v2 (declared weight 0)", got)
	}

	const n = 2000
	prev := 0
	for _, step := range []struct {
		w      int
		action schemas.Action
	}{{5, schemas.ActionSetWeight}, {25, schemas.ActionSetWeight}, {50, schemas.ActionSetWeight}, {100, schemas.ActionPromote}, {0, schemas.ActionRollback}} {
		tg := Target{Rollout: "support-agent", Baseline: "v1", Canary: "v2", CanaryWeight: step.w, Action: step.action}
		start := time.Now()
		if err := h.Apply(context.Background(), tg); err != nil {
			t.Fatalf("Apply(%d): %v", step.w, err)
		}
		took := time.Since(start)
		if gc, gb := p.weight(t, "agent", "v2"), p.weight(t, "agent", "v1"); gc != step.w || gb != 100-step.w {
			t.Fatalf("after Apply(%d): weights canary %d baseline %d; want %d %d", step.w, gc, gb, step.w, 100-step.w)
		}
		// The first request that can only be answered under the new split:
		// the canary's first answer when it rises from 0, the baseline's
		// when it rises from 0 (the rollback after the promote).
		seen := ""
		var firstIn time.Duration
		var sent int
		switch {
		case prev == 0 && step.w > 0:
			seen = "v2"
		case prev == 100 && step.w < 100:
			seen = "v1"
		}
		if seen != "" {
			for sent = 1; fc.get(t) != seen; sent++ {
				if sent > 1000 {
					t.Fatalf("after Apply(%d): no answer from %s in 1000 requests", step.w, seen)
				}
			}
			firstIn = time.Since(start)
		}
		got := fc.count(t, n)
		pct := 100 * float64(got["v2"]) / n
		t.Logf("canary weight %3d (%s): Apply took %v; canary answered %4d/%d = %5.1f%%, baseline %4d", step.w, step.action, took, got["v2"], n, pct, got["v1"])
		if seen != "" {
			t.Logf("    first answer from %s %v after Apply began (request %d after Apply returned)", seen, firstIn, sent)
		}
		if got["v1"]+got["v2"] != n {
			t.Fatalf("answers %v; want only v1 and v2", got)
		}
		if math.Abs(pct-float64(step.w)) > 2 {
			t.Fatalf("canary weight %d: canary served %.1f%%; want within 2 points", step.w, pct)
		}
		if (step.w == 0 && got["v2"] != 0) || (step.w == 100 && got["v1"] != 0) {
			t.Fatalf("canary weight %d: %v; want no answer from the server at weight 0", step.w, got)
		}
		prev = step.w
	}
	conns := fc.conns.Load()
	t.Logf("%d requests over %d client connection(s)", 200+5*n, conns)
	if conns > 2 {
		t.Fatalf("the client opened %d connections; want 1 (keep-alive), so the split shows per-request balancing", conns)
	}
}

// TestHAProxyApplyNoGap flips a route between promote (100) and rollback
// (0) while requests flow: every request must find a server. Writing the
// canary's 0 first in the rollback would leave both servers at weight 0
// between the two commands, and HAProxy answers 503 to what arrives then
// (writeOrder avoids it; TestHAProxyWriteOrder checks the order itself, as
// this test only catches the gap when a request falls into it).
func TestHAProxyApplyNoGap(t *testing.T) {
	p := startHAProxy(t, hpBackend{name: "agent", balance: "roundrobin", servers: []hpServer{
		{name: "v1", addr: hpVersionServer(t, "v1"), weight: 100},
		{name: "v2", addr: hpVersionServer(t, "v2"), weight: 0},
	}})
	h, err := NewHAProxy(HAProxyConfig{Address: p.admin},
		map[string]HAProxyRoute{"r": {Backend: "agent", BaselineServer: "v1", CanaryServer: "v2"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fc := newHPFrontClient(p)
	stop := make(chan struct{})
	type result struct {
		n, failed int
		first     string
	}
	done := make(chan result)
	go func() {
		var r result
		for {
			select {
			case <-stop:
				done <- r
				return
			default:
			}
			code, body, err := fc.do()
			r.n++
			if err != nil || code != 200 {
				if r.failed++; r.first == "" {
					r.first = fmt.Sprintf("status %d %q %v", code, body, err)
				}
			}
		}
	}()
	const flips = 100
	for i := range flips {
		for _, w := range []int{100, 0} {
			if err := h.Apply(context.Background(), Target{Rollout: "r", CanaryWeight: w}); err != nil {
				close(stop)
				<-done
				t.Fatalf("flip %d: Apply(%d): %v", i, w, err)
			}
		}
	}
	close(stop)
	r := <-done
	t.Logf("%d promote/rollback pairs, %d requests meanwhile, %d failed", flips, r.n, r.failed)
	if r.failed > 0 {
		t.Fatalf("%d of %d requests failed while flipping; first: %s", r.failed, r.n, r.first)
	}
}

// TestHAProxyApplyTCP reaches the runtime API over TCP.
func TestHAProxyApplyTCP(t *testing.T) {
	p := startHAProxy(t, hpBackend{name: "agent", balance: "roundrobin", servers: []hpServer{
		{name: "v1", addr: "127.0.0.1:1", weight: 100},
		{name: "v2", addr: "127.0.0.1:1", weight: 0},
	}})
	h, err := NewHAProxy(HAProxyConfig{Address: p.tcpAdmin},
		map[string]HAProxyRoute{"r": {Backend: "agent", BaselineServer: "v1", CanaryServer: "v2"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []int{30, 30, 0} { // twice: Apply is idempotent
		if err := h.Apply(context.Background(), Target{Rollout: "r", CanaryWeight: w}); err != nil {
			t.Fatalf("Apply(%d) over TCP %s: %v", w, p.tcpAdmin, err)
		}
		if gc, gb := p.weight(t, "agent", "v2"), p.weight(t, "agent", "v1"); gc != w || gb != 100-w {
			t.Fatalf("weights %d %d; want %d %d", gc, gb, w, 100-w)
		}
	}
}

// TestHAProxyApplyRefused covers the routes and sockets Apply must refuse:
// each error names what is wrong, is permanent where retrying cannot help,
// and leaves every weight as it was (read back through the admin socket).
func TestHAProxyApplyRefused(t *testing.T) {
	dead := "127.0.0.1:1" // no health checks: servers count as up
	p := startHAProxy(t,
		hpBackend{name: "agent", balance: "roundrobin", servers: []hpServer{{name: "v1", addr: dead, weight: 90}, {name: "v2", addr: dead, weight: 10}}},
		hpBackend{name: "three", balance: "roundrobin", servers: []hpServer{{name: "v1", addr: dead, weight: 90}, {name: "v2", addr: dead, weight: 10}, {name: "old", addr: dead, weight: 5}, {name: "spare", addr: dead, weight: 0}, {name: "off", addr: dead, weight: 50, extra: "disabled"}}},
		hpBackend{name: "static", balance: "static-rr", servers: []hpServer{{name: "v1", addr: dead, weight: 1}, {name: "v2", addr: dead, weight: 1}}},
	)
	routes := map[string]HAProxyRoute{
		"agent":      {Backend: "agent", BaselineServer: "v1", CanaryServer: "v2"},
		"no-backend": {Backend: "nope", BaselineServer: "v1", CanaryServer: "v2"},
		"no-server":  {Backend: "agent", BaselineServer: "v1", CanaryServer: "v3"},
		"three":      {Backend: "three", BaselineServer: "v1", CanaryServer: "v2"},
		"static":     {Backend: "static", BaselineServer: "v1", CanaryServer: "v2"},
	}
	admin, err := NewHAProxy(HAProxyConfig{Address: p.admin}, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	user, err := NewHAProxy(HAProxyConfig{Address: p.user}, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := NewHAProxy(HAProxyConfig{Address: filepath.Join(filepath.Dir(p.admin), "gone.sock")}, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused, err := NewHAProxy(HAProxyConfig{Address: "127.0.0.1:1"}, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	type wt struct{ backend, server string }
	all := []wt{{"agent", "v1"}, {"agent", "v2"}, {"three", "v1"}, {"three", "v2"}, {"three", "old"}, {"static", "v1"}, {"static", "v2"}}
	weights := func() map[wt]int {
		m := map[wt]int{}
		for _, s := range all {
			m[s] = p.weight(t, s.backend, s.server)
		}
		return m
	}
	before := weights()

	for _, tc := range []struct {
		name      string
		h         *HAProxy
		rollout   string
		w         int
		want      []string
		permanent bool
	}{
		{"unknown rollout", admin, "checkout", 50, []string{`rollout "checkout"`, ErrUnknownRollout.Error()}, true},
		{"weight above 100", admin, "agent", 101, []string{"canary weight 101 is outside 0..100"}, true},
		{"unknown backend", admin, "no-backend", 50, []string{`backend "nope" does not exist`}, true},
		{"unknown server", admin, "no-server", 50, []string{`backend "agent" has no server "v3"`, "its servers: v1, v2"}, true},
		{"third live server", admin, "three", 50, []string{`backend "three" must have exactly one baseline server ("v1") and one canary server ("v2")`, "old (weight 5)"}, true},
		{"level user", user, "agent", 50, []string{"set weight agent/v2 50", `HAProxy answered "Permission denied"`, "level admin"}, true},
		{"static algorithm", admin, "static", 50, []string{"set weight static/v2 50", "static LB algorithm", "roundrobin"}, true},
		// The canary's 0 is accepted (a static algorithm allows 0), the
		// baseline's 100 is not (only 0 and its configured 1): the canary's
		// write must be undone.
		{"static algorithm, second write", admin, "static", 0, []string{"set weight static/v1 100", "static LB algorithm", "static/v2 put back to weight 1"}, true},
		{"connection refused", refused, "agent", 50, []string{"runtime API 127.0.0.1:1", "connection refused"}, false},
		{"no socket file", gone, "agent", 50, []string{"runtime API " + filepath.Dir(p.admin) + "/gone.sock", "no such file"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.h.Apply(context.Background(), Target{Rollout: tc.rollout, Baseline: "v1", Canary: "v2", CanaryWeight: tc.w})
			if err == nil {
				t.Fatalf("got nil; want an error")
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q; want it to contain %q", err, w)
				}
			}
			if got := IsPermanent(err); got != tc.permanent {
				t.Errorf("IsPermanent = %v; want %v", got, tc.permanent)
			}
			if tc.rollout == "checkout" && !errors.Is(err, ErrUnknownRollout) {
				t.Errorf("got %v; want it to wrap ErrUnknownRollout", err)
			}
			after := weights()
			for k, v := range before {
				if after[k] != v {
					t.Errorf("%s/%s weight %d after the refused Apply; want %d (unchanged)", k.backend, k.server, after[k], v)
				}
			}
		})
	}

	// The check counts servers that can take traffic: once the third one is
	// in maintenance (as "off", disabled in the config, and "spare", at
	// weight 0, already are), the route is accepted.
	p.cmdOK(t, "set server three/old state maint")
	if err := admin.Apply(context.Background(), Target{Rollout: "three", CanaryWeight: 40}); err != nil {
		t.Fatalf("Apply with the third server in maintenance: %v", err)
	}
	if gc, gb := p.weight(t, "three", "v2"), p.weight(t, "three", "v1"); gc != 40 || gb != 60 {
		t.Fatalf("weights %d %d; want 40 60", gc, gb)
	}

	// A named server in maintenance: the weights are set but the split is
	// not served, so Apply reports it and a retry succeeds once the server
	// is back.
	p.cmdOK(t, "set server agent/v2 state maint")
	err = admin.Apply(context.Background(), Target{Rollout: "agent", CanaryWeight: 20})
	if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "agent/v2 is in maintenance") {
		t.Fatalf("Apply with the canary in maintenance: got %v; want a retriable error naming agent/v2", err)
	}
	p.cmdOK(t, "set server agent/v2 state ready")
	if err := admin.Apply(context.Background(), Target{Rollout: "agent", CanaryWeight: 20}); err != nil {
		t.Fatalf("Apply once the canary is ready: %v", err)
	}
}

// TestHAProxyApplyTimeout stops HAProxy (SIGSTOP): the kernel still accepts
// connections on the socket, but nothing answers, so only the command
// timeout ends Apply, with a retriable error. After SIGCONT the same Apply
// succeeds.
func TestHAProxyApplyTimeout(t *testing.T) {
	p := startHAProxy(t, hpBackend{name: "agent", balance: "roundrobin", servers: []hpServer{
		{name: "v1", addr: "127.0.0.1:1", weight: 100}, {name: "v2", addr: "127.0.0.1:1", weight: 0},
	}})
	h, err := NewHAProxy(HAProxyConfig{Address: p.admin, Timeout: 300 * time.Millisecond},
		map[string]HAProxyRoute{"r": {Backend: "agent", BaselineServer: "v1", CanaryServer: "v2"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	hpWaitStopped(t, p.cmd.Process.Pid)
	start := time.Now()
	err = h.Apply(context.Background(), Target{Rollout: "r", CanaryWeight: 10})
	took := time.Since(start)
	t.Logf("Apply on a stopped HAProxy: %v after %v", err, took)
	if err == nil || IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want a retriable deadline error", err)
	}
	if took > 5*time.Second {
		t.Fatalf("Apply took %v with a 300ms command timeout", took)
	}
	// A cancelled context ends the wait as well.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Apply(ctx, Target{Rollout: "r", CanaryWeight: 10}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with a cancelled context: got %v; want context.Canceled", err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := h.Apply(context.Background(), Target{Rollout: "r", CanaryWeight: 10}); err != nil {
		t.Fatalf("Apply after SIGCONT: %v", err)
	}
	if gc := p.weight(t, "agent", "v2"); gc != 10 {
		t.Fatalf("canary weight %d; want 10", gc)
	}
}

// hpWaitStopped waits until every thread of the process is stopped (state T
// in /proc): the signal is delivered asynchronously, and a thread still
// running would answer the first command.
func hpWaitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil || len(tasks) == 0 {
			t.Fatalf("list threads of %d: %v", pid, err)
		}
		stopped := 0
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			// The state follows the ")" that ends the command name.
			if i := strings.LastIndexByte(string(b), ')'); err == nil && i >= 0 && i+2 < len(b) && b[i+2] == 'T' {
				stopped++
			}
		}
		if stopped == len(tasks) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy (pid %d): %d of %d threads stopped 10s after SIGSTOP", pid, stopped, len(tasks))
		}
		time.Sleep(time.Millisecond) // polling interval, not a decision
	}
}

// BenchmarkHAProxyApply measures one Apply against a real HAProxy over its
// unix socket: show servers state, two set weight, two get weight.
func BenchmarkHAProxyApply(b *testing.B) {
	p := startHAProxy(b, hpBackend{name: "agent", balance: "roundrobin", servers: []hpServer{
		{name: "v1", addr: "127.0.0.1:1", weight: 100}, {name: "v2", addr: "127.0.0.1:1", weight: 0},
	}})
	h, err := NewHAProxy(HAProxyConfig{Address: p.admin},
		map[string]HAProxyRoute{"r": {Backend: "agent", BaselineServer: "v1", CanaryServer: "v2"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if err := h.Apply(context.Background(), Target{Rollout: "r", CanaryWeight: 10 + i%2*10}); err != nil {
			b.Fatal(err)
		}
	}
}
