package route

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/canarydtest"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
)

var commandKey = []byte("route-command-test-key")

// routeProcess is a running `canaryd route`.
type routeProcess struct {
	URL string
	cmd *exec.Cmd
	mu  sync.Mutex
	log []string
}

// startRoute runs `canaryd route` with routes (a routes file's YAML) and
// args, and waits for its HTTP address and readiness.
func startRoute(t *testing.T, routes string, args ...string) *routeProcess {
	t.Helper()
	file := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(file, []byte(routes), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &routeProcess{}
	p.cmd = exec.Command(canarydtest.Binary(t), append([]string{"route", "--routes", file, "--http", "127.0.0.1:0"}, args...)...)
	p.cmd.Env = os.Environ()
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log = append(p.log, line)
			p.mu.Unlock()
			if _, a, ok := strings.Cut(line, `msg="serving HTTP" addr=`); ok {
				addr <- a
			}
		}
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		<-done
		if t.Failed() {
			for _, l := range p.log {
				t.Log("canaryd route: " + l)
			}
		}
	})
	select {
	case a := <-addr:
		p.URL = "http://" + a
	case <-time.After(60 * time.Second):
		t.Fatal("canaryd route logged no HTTP address within 60s")
	}
	waitUntil(t, "canaryd route ready", func() bool {
		resp, err := http.Get(p.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// waitUntil polls cond until it holds, failing the test after a minute. It
// waits for a state; it decides nothing.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *routeProcess) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(p.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// controlRecord signs c (unless key is nil) and returns its record as
// canaryd writes it.
func controlRecord(t *testing.T, topic string, c schemas.Command, key []byte) *kgo.Record {
	t.Helper()
	c.CommandID = schemas.CommandID(c.Rollout, c.Baseline, c.Canary, c.Action, c.Step, c.Weight)
	if c.DecidedAt.IsZero() {
		c.DecidedAt = time.Now().UTC()
	}
	if c.Reason == "" {
		c.Reason = "test"
	}
	if key != nil {
		if err := c.Sign(key); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(c.Rollout), Value: b}
}

func produce(t *testing.T, brokers []string, recs ...*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// ackReader reads the acks topic from the start.
type ackReader struct {
	cl   *kgo.Client
	acks []schemas.Ack
}

func newAckReader(t *testing.T, brokers []string, topic string) *ackReader {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &ackReader{cl: cl}
}

// until reads acks until stop holds for those read so far.
func (a *ackReader) until(t *testing.T, what string, stop func([]schemas.Ack) bool) []schemas.Ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for !stop(a.acks) {
		if ctx.Err() != nil {
			t.Fatalf("%s: acks after 60s: %+v", what, a.acks)
		}
		a.cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var ack schemas.Ack
			if err := json.Unmarshal(r.Value, &ack); err != nil {
				t.Errorf("ack does not decode: %v: %s", err, r.Value)
				return
			}
			if err := ack.Validate(); err != nil {
				t.Errorf("ack %s: %v", r.Value, err)
			}
			a.acks = append(a.acks, ack)
		})
	}
	return a.acks
}

func lastAckSeq(seq uint64) func([]schemas.Ack) bool {
	return func(acks []schemas.Ack) bool { return len(acks) > 0 && acks[len(acks)-1].Seq >= seq }
}

// TestRouteCommandGit runs `canaryd route` as a user would, with a routes
// file whose rollout is routed by a Git file (a local bare remote), on
// kfake and a real broker: signed commands become commits, each
// acknowledged once it is pushed; an unsigned command is refused and
// counted, and changes nothing; a rollback pushes weight 0; /v1/routes and
// /metrics say so.
func TestRouteCommandGit(t *testing.T) {
	// Built before gitTestEnv moves HOME, which holds go's build and
	// module caches.
	canarydtest.Binary(t)
	gitTestEnv(t)
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			brokers := kafkatest.Brokers(t, kind)
			control, acks := kafkatest.Topic(t), kafkatest.Topic(t)+".acks"
			kafkatest.CreateTopics(t, brokers, 1, control, acks)
			t0 := time.Now()
			bare := newBareRemote(t, nil)
			keyFile := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(keyFile, append(commandKey, '\n'), 0o600); err != nil {
				t.Fatal(err)
			}
			routes := fmt.Sprintf(`git:
  remote: %s
  dir: %s
routes:
  - rollout: support-agent
    git: {file: httproute-patch.yaml, baseline: support-agent-stable, canary: support-agent-canary}
`, bare, filepath.Join(t.TempDir(), "work"))
			cmd := func(seq uint64, a schemas.Action, step, w int) schemas.Command {
				return schemas.Command{Seq: seq, Rollout: "support-agent", Baseline: "v1", Canary: "v2", Action: a,
					Weight: w, Step: step, DeploymentID: "dep-9", Commit: "c0ffee1"}
			}
			// Before the router starts: replayed at its bootstrap.
			produce(t, brokers, controlRecord(t, control, cmd(1, schemas.ActionSetWeight, 0, 10), commandKey))
			p := startRoute(t, routes, "--brokers", strings.Join(brokers, ","), "--control-topic", control,
				"--acks-topic", acks, "--router-id", "router-a", "--sign-key-file", keyFile, "--min-backoff", "50ms")
			t.Logf("route ready after %v", time.Since(t0))
			ar := newAckReader(t, brokers, acks)
			ar.until(t, "set_weight 10", lastAckSeq(1))
			t.Logf("first ack after %v", time.Since(t0))
			if w := remoteWeights(t, bare); w != "100/10" && w != "90/10" {
				t.Fatalf("remote weights after set_weight 10: %s; want 90/10", w)
			}

			head := remoteHead(t, bare)
			produce(t, brokers, controlRecord(t, control, cmd(2, schemas.ActionSetWeight, 1, 50), nil)) // unsigned
			produce(t, brokers, controlRecord(t, control, cmd(3, schemas.ActionRollback, 1, 0), commandKey))
			got := ar.until(t, "rollback", lastAckSeq(3))
			t.Logf("rollback ack after %v", time.Since(t0))
			var seqs []string
			for _, a := range got {
				seqs = append(seqs, fmt.Sprintf("%d %s %d %s", a.Seq, a.Action, a.Weight, a.Router))
			}
			if s := strings.Join(seqs, ", "); s != "1 set_weight 10 router-a, 3 rollback 0 router-a" {
				t.Errorf("acks %s; want set_weight 10 and rollback 0 (the unsigned command refused)", s)
			}
			if w := remoteWeights(t, bare); w != "100/0" {
				t.Errorf("remote weights after the rollback: %s; want 100/0", w)
			}
			if n := tgit(t, bare, "rev-list", "--count", head+"..main"); n != "1" {
				t.Errorf("%s commits after the set_weight; want 1 (the rollback; nothing for the unsigned command)", n)
			}
			if tr := trailers(t, bare, "main"); tr["Action"] != "rollback" || tr["Deployment-Id"] != "dep-9" || tr["Commit"] != "c0ffee1" {
				t.Errorf("rollback commit's trailers %v", tr)
			}

			var st struct {
				Routes []RouteStatus `json:"routes"`
			}
			if err := json.Unmarshal([]byte(p.get(t, "/v1/routes")), &st); err != nil {
				t.Fatal(err)
			}
			if len(st.Routes) != 1 || st.Routes[0].Pending || st.Routes[0].Applied == nil || st.Routes[0].Applied.Seq != 3 || st.Routes[0].Applied.Weight != 0 {
				t.Errorf("/v1/routes: %+v; want support-agent applied seq 3 weight 0", st.Routes)
			}
			m := p.get(t, "/metrics")
			for _, want := range []string{
				`canaryd_route_commands_total{result="refused",reason="unsigned"} 1`,
				`canaryd_route_applies_total{rollout="support-agent",result="applied"} 2`,
				`canaryd_route_weight{rollout="support-agent"} 0`,
				`canaryd_route_acks_total{result="sent"} 2`,
				"# TYPE canaryd_route_commands_total counter",
				"# HELP canaryd_route_apply_duration_seconds ",
			} {
				if !strings.Contains(m, want) {
					t.Errorf("/metrics lacks %q", want)
				}
			}
		})
	}
}

// remoteWeights returns "baseline/canary" of the weighted rule of the
// remote's httproute-patch.yaml.
func remoteWeights(t *testing.T, bare string) string {
	t.Helper()
	var b, c string
	for _, line := range strings.Split(remoteShow(t, bare, "main", "httproute-patch.yaml"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "weight:" {
			if b == "" {
				b = f[1]
			} else {
				c = f[1]
			}
		}
	}
	return b + "/" + c
}
