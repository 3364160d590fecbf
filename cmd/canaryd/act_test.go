package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
)

// TestActOnDaemon: the action subcommands against a real daemon (kfake):
// each applies and prints the rollout's new state, a refusal exits 1 with
// the server's reason, and no token is a refusal too.
func TestActOnDaemon(t *testing.T) {
	brokers := kafkatest.Fake(t)
	topic := kafkatest.Topic(t)
	const specs = "rollout: rel\nbaseline: v1\ncanary: v2\nsteps: [{weight: 20, approval: required}, {weight: 100}]\n"
	dir := t.TempDir()
	serverTokens, clientToken := filepath.Join(dir, "tokens"), filepath.Join(dir, "token")
	if err := os.WriteFile(serverTokens, []byte("release-bot act-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(clientToken, []byte("act-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := runTestDaemon(t, brokers, topic, specs, func(c *daemon.Config) { c.HTTPTokenFile = serverTokens })
	server := "http://" + d.HTTPAddr()
	for _, tc := range []struct {
		args   []string
		code   int
		output string // in stdout for 0, in stderr otherwise
	}{
		{[]string{"pause", "rel"}, 1, "401"}, // no token
		{[]string{"pause", "rel", "--token-file", clientToken, "--reason", "freeze"}, 0, "pause rel by release-bot"},
		{[]string{"pause", "rel", "--token-file", clientToken}, 1, "409"},
		{[]string{"resume", "rel", "--token-file", clientToken, "--by", "alice"}, 0, "resume rel by alice"},
		{[]string{"approve", "rel", "--token-file", clientToken}, 1, "409"}, // not started: no gate waits
		{[]string{"start", "rel", "--token-file", clientToken, "--canary", "v1"}, 1, "400"},
		{[]string{"start", "rel", "--token-file", clientToken, "--canary", "v3", "--deployment-id", "d-1"}, 0, "start rel by release-bot: v3"},
		{[]string{"abort", "ghost", "--token-file", clientToken}, 1, "404"},
		{[]string{"abort", "rel", "--token-file", clientToken, "--canary", "v2"}, 1, "409"}, // v3 is judged now
		{[]string{"abort", "rel", "--token-file", clientToken, "--reason", "bad"}, 0, "abort rel by release-bot"},
		{[]string{"retry", "rel", "--token-file", clientToken}, 0, "retry rel"},
	} {
		args := append(tc.args, "--server", server)
		code, stdout, stderr := runCLI(t, args...)
		out := stdout
		if tc.code != 0 {
			out = stderr
		}
		if code != tc.code || !strings.Contains(out, tc.output) {
			t.Errorf("canaryd %s: exit %d, stdout %q, stderr %q; want %d and %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.output)
		}
	}
	st, _ := d.Status("rel")
	if st.Canary != "v3" || st.Attempt != 1 || len(st.Audit) < 3 {
		t.Errorf("status after the actions: canary %s attempt %d audit %+v", st.Canary, st.Attempt, st.Audit)
	}
}
