package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
)

// script is a StatusSource whose rollout goes through a fixed sequence of
// states, one per GET of the rollout (then stays at the last): what a
// client sees at each poll does not depend on timing. A nil state is
// "unknown rollout".
type script struct {
	mu     sync.Mutex
	states []*detector.Status
	polls  int
}

func (s *script) Status(id string) (detector.Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.states[min(s.polls, len(s.states)-1)]
	s.polls++
	if st == nil || st.Rollout != id {
		return detector.Status{}, false
	}
	return *st, true
}

func (s *script) Statuses() []detector.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.states[min(s.polls, len(s.states)-1)]; st != nil {
		return []detector.Status{*st}
	}
	return nil
}

// serve runs a real sink.Server on a free port for the test and returns
// its URL.
func serve(t *testing.T, src sink.StatusSource, opts ...sink.ServerOpt) string {
	t.Helper()
	srv, err := sink.NewServer("127.0.0.1:0", src, metrics.NewSet(), nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + srv.Addr()
}

// st is a status of rollout support-agent, v1 → canary, at step (index)
// with a verdict action and final.
func st(canary string, step, weight int, action schemas.Action, final string) *detector.Status {
	return &detector.Status{
		Rollout: "support-agent", Baseline: "v1", Canary: canary, Step: step, Steps: 3, Weight: weight, Final: final,
		Verdict: detector.Verdict{Rollout: "support-agent", Action: action, Step: step, Weight: weight,
			Reason: fmt.Sprintf("%s at step %d", action, step)},
	}
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestWait drives canaryd wait, as a pipeline step would, against a real
// HTTP server through each way a release can end.
func TestWait(t *testing.T) {
	running := func(c string) []*detector.Status {
		return []*detector.Status{
			st(c, -1, 0, "", ""),
			st(c, 0, 5, detector.ActionContinue, ""),
			st(c, 0, 5, detector.ActionContinue, ""), // no change: no line
			st(c, 1, 25, schemas.ActionSetWeight, ""),
		}
	}
	for _, tc := range []struct {
		name    string
		states  []*detector.Status
		args    []string
		code    int
		stdout  []string // lines, in order, each containing these
		notOut  string   // must not appear on stdout
		stderr  string
		timeout bool
	}{
		{
			name:   "promote",
			states: append(append([]*detector.Status{nil, nil}, running("v2")...), st("v2", 2, 100, schemas.ActionPromote, "promote")),
			code:   0,
			stdout: []string{"waiting for support-agent at", "support-agent unknown", "v2: pending, step -, weight 0%",
				"v2: running, step 1/3, weight 5%, continue: continue at step 0",
				"v2: running, step 2/3, weight 25%, set_weight", "v2: promoted, step 3/3, weight 100%, promote", "support-agent v2 promoted"},
		},
		{
			name:   "rollback",
			states: append(running("v2"), st("v2", 1, 0, schemas.ActionRollback, "rollback")),
			code:   1,
			stdout: []string{"weight 25%", "v2: rolled back, step 2/3, weight 0%, rollback", "support-agent v2 rolled back"},
		},
		{
			name:   "hold",
			states: append(running("v2"), st("v2", 1, 25, schemas.ActionHold, "hold")),
			code:   2,
			stdout: []string{"weight 25%", "support-agent v2 held: hold at step 1"},
		},
		{
			name:    "no verdict until the timeout",
			states:  running("v2"),
			args:    []string{"--timeout", "300ms"},
			code:    2,
			stdout:  []string{"weight 25%, set_weight"},
			stderr:  "timeout after 300ms without a verdict: support-agent v2: running at step 2/3, weight 25%",
			timeout: true,
		},
		{
			// The final verdict of the previous release does not count.
			name:   "an older release's verdict",
			states: append([]*detector.Status{st("v2", 2, 100, schemas.ActionPromote, "promote")}, append(running("v3"), st("v3", 1, 0, schemas.ActionRollback, "rollback"))...),
			args:   []string{"--canary", "v3"},
			code:   1,
			stdout: []string{"support-agent is at v2 (promoted); waiting for support-agent canary v3", "v3: pending", "support-agent v3 rolled back"},
			notOut: "v2 promoted",
		},
		{
			name:   "superseded",
			states: append(running("v3"), st("v4", -1, 0, "", "")),
			args:   []string{"--canary", "v3"},
			code:   2,
			stdout: []string{"v3: running, step 2/3", "support-agent is at v4 (pending)", "release support-agent canary v3 was superseded by v4 before its verdict"},
		},
		{
			name:    "unknown rollout",
			states:  []*detector.Status{nil},
			args:    []string{"--timeout", "200ms"},
			code:    2,
			stdout:  []string{`rollout support-agent unknown to the server (no rollout "support-agent"); waiting for it to appear`},
			stderr:  "timeout after 200ms: rollout support-agent is unknown to",
			timeout: true,
		},
		{
			// Waiting on a deployment id the server does not report (today's
			// detector.Status has none) cannot end in a verdict.
			name:    "deployment id not reported",
			states:  []*detector.Status{st("v2", 2, 100, schemas.ActionPromote, "promote")},
			args:    []string{"--deployment-id", "deploy-7", "--timeout", "200ms"},
			code:    2,
			stdout:  []string{"support-agent is at v2 (promoted); waiting for support-agent deployment deploy-7"},
			stderr:  "timeout after 200ms: no status of support-agent deployment deploy-7 yet: support-agent is at v2 (promoted); waiting for support-agent deployment deploy-7 (this server's status carries no deployment_id: wait with --canary instead)",
			timeout: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := serve(t, &script{states: tc.states})
			args := append([]string{"wait", "support-agent", "--server", url, "--interval", "1ms"}, tc.args...)
			if !tc.timeout {
				args = append(args, "--timeout", "30s") // a hang fails the test instead of blocking it
			}
			code, stdout, stderr := runCLI(t, args...)
			if code != tc.code {
				t.Errorf("exit %d; want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stdout), "\n")
			i := 0
			for _, want := range tc.stdout {
				for i < len(lines) && !strings.Contains(lines[i], want) {
					i++
				}
				if i == len(lines) {
					t.Errorf("stdout has no line containing %q after the earlier ones:\n%s", want, stdout)
					break
				}
				i++
			}
			if tc.notOut != "" && strings.Contains(stdout, tc.notOut) {
				t.Errorf("stdout contains %q:\n%s", tc.notOut, stdout)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr %q; want it to contain %q", stderr, tc.stderr)
			}
			// Each state change is printed once: the repeated state is not.
			if n := strings.Count(stdout, "weight 5%, continue"); n > 1 {
				t.Errorf("the same progress printed %d times:\n%s", n, stdout)
			}
		})
	}
}

// TestWaitErrors: usage errors and an unreachable or refusing server exit 3.
func TestWaitErrors(t *testing.T) {
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()

	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "cccccccccccccccccccccccc-0003"
	if err := os.WriteFile(tokenFile, []byte("ci "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	protected := serve(t, &script{states: []*detector.Status{st("v2", 2, 100, schemas.ActionPromote, "promote")}},
		sink.TokenFile(tokenFile), sink.ProtectReads(true))

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no rollout", []string{"wait"}, 3, "want one ROLLOUT, got 0 arguments"},
		{"two rollouts", []string{"wait", "a", "b"}, 3, "want one ROLLOUT, got 2 arguments"},
		{"bad interval", []string{"wait", "a", "--interval", "0s"}, 3, "--interval 0s: must be positive"},
		{"bad timeout", []string{"wait", "a", "--timeout", "soon"}, 3, `invalid value "soon" for flag -timeout`},
		{"bad server", []string{"wait", "a", "--server", "ftp://x"}, 3, `--server "ftp://x": want http://HOST:PORT`},
		{"ca for http", []string{"wait", "a", "--server", "http://x:1", "--ca-file", tokenFile}, 3, "--ca-file is for an https:// server"},
		{"unreachable", []string{"wait", "a", "--server", dead, "--interval", "5ms", "--timeout", "200ms"}, 3, "unreachable for the last poll after 200ms"},
		{"token needed", []string{"wait", "support-agent", "--server", protected, "--timeout", "30s"}, 3, "401 Unauthorized: this endpoint needs a bearer token"},
		{"token given", []string{"wait", "support-agent", "--server", protected, "--timeout", "30s", "--token-file", tokenFile}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q\nstdout:\n%s", code, stderr, tc.code, tc.stderr, stdout)
			}
		})
	}
}

// TestWaitFlagsAnywhere: flags before and after ROLLOUT, and from the
// environment (connection only).
func TestWaitFlagsAnywhere(t *testing.T) {
	url := serve(t, &script{states: []*detector.Status{st("v2", 2, 100, schemas.ActionPromote, "promote")}})
	t.Setenv("CANARYD_SERVER", url)
	t.Setenv("CANARYD_TIMEOUT", "garbage") // not read: only the connection flags have variables
	for _, args := range [][]string{
		{"wait", "--canary", "v2", "support-agent", "--interval", "1ms"},
		{"wait", "support-agent", "--canary=v2"},
		{"wait", "--", "support-agent"},
	} {
		if code, stdout, stderr := runCLI(t, args...); code != 0 || !strings.Contains(stdout, "promoted") {
			t.Errorf("canaryd %q: exit %d, stdout %q, stderr %q; want 0 and promoted", args, code, stdout, stderr)
		}
	}
}

// TestWaiterDeploymentID: with --deployment-id, only a status carrying that
// deployment id ends the wait (read from the status JSON's deployment_id,
// which a newer server adds to detector.Status).
func TestWaiterDeploymentID(t *testing.T) {
	w := &waiter{rollout: "r", deployment: "d2"}
	decode := func(js string) *rolloutStatus {
		var s rolloutStatus
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	steps := []struct {
		js   string
		done bool
		code int
	}{
		{`{"rollout":"r","canary":"v2","deployment_id":"d1","final":"promote","step":2,"steps":2,"weight":100}`, false, 0},
		{`{"rollout":"r","canary":"v3","deployment_id":"d2","step":0,"steps":2,"weight":5,"phase":"awaiting approval"}`, false, 0},
		{`{"rollout":"r","canary":"v3","deployment_id":"d2","step":1,"steps":2,"weight":0,"final":"rollback"}`, true, 1},
	}
	for i, s := range steps {
		lines, code, done := w.observe(decode(s.js), nil)
		if done != s.done || code != s.code {
			t.Errorf("poll %d: done %v, code %d; want %v, %d (lines %q)", i, done, code, s.done, s.code, lines)
		}
		if i == 1 && (len(lines) != 1 || !strings.Contains(lines[0], "r v3 (deployment d2): awaiting approval, step 1/2, weight 5%")) {
			t.Errorf("poll 1 printed %q; want the phase the server reports", lines)
		}
	}
}

// TestWaitInterrupted: a cancelled context (SIGINT) ends the wait with 3.
func TestWaitInterrupted(t *testing.T) {
	url := serve(t, &script{states: []*detector.Status{st("v2", 0, 5, detector.ActionContinue, "")}})
	ctx, cancel := context.WithCancel(t.Context())
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	pr := &pollWatch{Buffer: &out, seen: make(chan struct{}), want: "weight 5%"}
	go func() {
		done <- run(ctx, []string{"wait", "support-agent", "--server", url, "--interval", "1ms"}, pr, &errb)
	}()
	<-pr.seen // the wait is polling
	cancel()
	if code := <-done; code != 3 || !strings.Contains(errb.String(), "interrupted") {
		t.Errorf("exit %d, stderr %q; want 3 and interrupted", code, errb.String())
	}
}

// pollWatch is a stdout that closes seen once want was written.
type pollWatch struct {
	*bytes.Buffer
	mu   sync.Mutex
	want string
	seen chan struct{}
	once sync.Once
}

func (p *pollWatch) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.Buffer.Write(b)
	if strings.Contains(p.Buffer.String(), p.want) {
		p.once.Do(func() { close(p.seen) })
	}
	return n, err
}

// TestStatus prints the rollouts as a table and as the API's JSON.
func TestStatus(t *testing.T) {
	a := st("v2", 1, 25, schemas.ActionSetWeight, "")
	a.Verdict.Reason = "step 1 passed:\tcanary errors 1.0% vs 1.1%\n" + strings.Repeat("x", 200)
	url := serve(t, &script{states: []*detector.Status{a}})
	code, stdout, stderr := runCLI(t, "status", "--server", url)
	if code != 0 {
		t.Fatalf("status: exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("status printed %d lines; want a header and one rollout:\n%s", len(lines), stdout)
	}
	for _, want := range []string{"ROLLOUT", "RELEASE", "PHASE", "STEP", "WEIGHT", "VERDICT", "REASON"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header %q has no %s", lines[0], want)
		}
	}
	fields := strings.Fields(lines[1])
	if got, want := strings.Join(fields[:8], " "), "support-agent v1 → v2 running 2/3 25% set_weight"; got != want {
		t.Errorf("row %q; want it to start with %q", lines[1], want)
	}
	if !strings.Contains(lines[1], "step 1 passed: canary errors 1.0% vs 1.1% xxx") || !strings.HasSuffix(lines[1], "x…") {
		t.Errorf("row %q: want the reason on one line, cut with …", lines[1])
	}

	// One rollout: its whole reason and the evidence table.
	a.Verdict.Tests = []detector.TestEvidence{{Name: "error_rate", Role: "rollback", Segment: "tool search", Canary: 0.11, Baseline: 0.01,
		NCanary: 88, OddsRatio: 13.5, Lower: 1.65, Upper: detector.Num(math.Inf(1)), EValue: 393, Threshold: 62.5, Passed: true}}
	code, stdout, _ = runCLI(t, "status", "support-agent", "--server", url)
	if code != 0 || !strings.Contains(stdout, strings.Repeat("x", 200)) || !strings.Contains(stdout, "SEGMENT") {
		t.Errorf("status ROLLOUT: exit %d:\n%s\nwant the whole reason and an evidence table", code, stdout)
	}
	if row := "error_rate  rollback  tool search  0.11    0.01      88        13.5  1.65–∞  393      62.5       FIRED"; !strings.Contains(stdout, row) {
		t.Errorf("status ROLLOUT:\n%s\nwant the row %q", stdout, row)
	}
	if strings.Contains(stdout, "ROUTER") {
		t.Errorf("status ROLLOUT without acks:\n%s\nwant no routers table", stdout)
	}
	// With the routers' acks: a table of them.
	since := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	a.Routers = []schemas.RouterAck{
		{Router: "gw-1", Weight: 25, Action: schemas.ActionSetWeight, Seq: 2, LatestSeq: 2, Since: since},
		{Router: "gw-2", Weight: 5, Action: schemas.ActionSetWeight, Seq: 1, LatestSeq: 2, Since: since, Lagging: true},
	}
	code, stdout, _ = runCLI(t, "status", "support-agent", "--server", url)
	for _, row := range []string{"ROUTER  WEIGHT  ACTION      SEQ  SINCE                 STATE",
		"gw-1    25%     set_weight  2/2  2026-12-03T16:00:00Z  ok", "gw-2    5%      set_weight  1/2  2026-12-03T16:00:00Z  LAGGING"} {
		if code != 0 || !strings.Contains(stdout, row) {
			t.Errorf("status ROLLOUT with acks: exit %d:\n%s\nwant the row %q", code, stdout, row)
		}
	}

	code, stdout, _ = runCLI(t, "status", "support-agent", "--json", "--server", url)
	var got detector.Status
	if err := json.Unmarshal([]byte(stdout), &got); code != 0 || err != nil || got.Canary != "v2" || got.Verdict.Reason != a.Verdict.Reason {
		t.Errorf("status --json: exit %d, %v, %+v; want the rollout's JSON", code, err, got)
	}

	code, _, stderr = runCLI(t, "status", "nope", "--server", url)
	if code != 1 || !strings.Contains(stderr, `404 Not Found: no rollout "nope"`) {
		t.Errorf("status of an unknown rollout: exit %d, stderr %q; want 1 and the server's 404", code, stderr)
	}
	code, stdout, _ = runCLI(t, "status", "--server", serve(t, &script{states: []*detector.Status{nil}}))
	if code != 0 || !strings.Contains(stdout, "no rollouts at http://") {
		t.Errorf("status without rollouts: exit %d, stdout %q", code, stdout)
	}
}

// TestStatusHTTPS: --ca-file trusts the server's certificate; without it
// the system roots refuse it.
func TestStatusHTTPS(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeSelfSigned(t, cert, key)
	url := serve(t, &script{states: []*detector.Status{st("v2", 0, 5, detector.ActionContinue, "")}}, sink.TLSFiles(cert, key))
	url = strings.Replace(url, "http://", "https://", 1)
	if code, stdout, stderr := runCLI(t, "status", "--server", url, "--ca-file", cert); code != 0 || !strings.Contains(stdout, "support-agent") {
		t.Errorf("status over HTTPS with --ca-file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, _, stderr := runCLI(t, "status", "--server", url); code != 1 || !strings.Contains(stderr, "certificate") {
		t.Errorf("status over HTTPS with the system roots: exit %d, stderr %q; want a certificate error", code, stderr)
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "canaryd-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	err = errors.Join(
		os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600),
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	if err != nil {
		t.Fatal(err)
	}
}
