package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	var out bytes.Buffer
	if err := validateCmd([]string{"../../deploy/rollouts"}, &out); err != nil {
		t.Fatalf("validate deploy/rollouts: %v", err)
	}
	if !strings.Contains(out.String(), "support-agent") || !strings.Contains(out.String(), ": ok") {
		t.Fatalf("validate output %q", out.String())
	}
}

// TestBadSpecRefusedAtStart: canaryd run refuses a bad spec before it
// touches Kafka, naming the file, the line and the field.
func TestBadSpecRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "bad.yaml")
	spec := "rollout: r\nbaseline: v1\ncanary: v2\nsteps:\n  - weight: 5\n  - weight: 500\n"
	if err := os.WriteFile(f, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	err := runCmd(t.Context(), []string{"--brokers", "127.0.0.1:1", "--specs", f, "--http", ""}, io.Discard)
	if err == nil {
		t.Fatal("run with a bad spec: no error")
	}
	for _, want := range []string{"bad.yaml:6", "steps.1.weight", "500 is outside 1..100"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := validateCmd([]string{f}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "steps.1.weight") {
		t.Errorf("validate: %v", err)
	}
}

func TestRunNeedsBrokersAndSpecs(t *testing.T) {
	t.Setenv("CANARYD_BROKERS", "")
	t.Setenv("CANARYD_SPECS", "")
	if err := runCmd(t.Context(), nil, io.Discard); err == nil || !strings.Contains(err.Error(), "--brokers") {
		t.Fatalf("run without brokers: %v", err)
	}
}

// TestValidateModels: validate checks a model table too, and refuses a bad
// one with its line.
func TestValidateModels(t *testing.T) {
	var out bytes.Buffer
	if err := validateCmd([]string{"--models", "../../deploy/models.yaml", "../../deploy/rollouts"}, &out); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if !strings.Contains(out.String(), "models.yaml: ") || !strings.Contains(out.String(), "support-agent") {
		t.Fatalf("validate output %q", out.String())
	}
	f := filepath.Join(t.TempDir(), "models.yaml")
	if err := os.WriteFile(f, []byte("models:\n  - name: x\n    context_limit: -5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := validateCmd([]string{"--models=" + f}, &out); err == nil || !strings.Contains(err.Error(), "models.yaml:3: models.0.context_limit") {
		t.Fatalf("validate of a bad model table: %v", err)
	}
}

func TestValidateRoutes(t *testing.T) {
	var out bytes.Buffer
	if err := validateCmd([]string{"--routes", "../../deploy/router/routes.yaml"}, &out); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if !strings.Contains(out.String(), "routes.yaml: 5 routes: ") {
		t.Fatalf("validate output %q", out.String())
	}
	f := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(f, []byte("haproxy: {address: /run/haproxy.sock}\nroutes:\n  - rollout: r\n    haproxy: {backend: b, baseline_server: s1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := validateCmd([]string{"--routes=" + f}, &out); err == nil || !strings.Contains(err.Error(), "routes.yaml:4: route of \"r\": ") || !strings.Contains(err.Error(), "canary_server") {
		t.Fatalf("validate of a bad routes file: %v", err)
	}
}
