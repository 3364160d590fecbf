package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateOTLPRules: validate checks an OTLP rules file, alone or with
// a model table and specs, and refuses a bad one with its line and field.
func TestValidateOTLPRules(t *testing.T) {
	var out bytes.Buffer
	if err := validateCmd([]string{"--otlp-rules", "../../deploy/otlp-rules.yaml"}, &out); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if want := "../../deploy/otlp-rules.yaml: rollout: service.name (resource), gen_ai.agent.name (any); version: service.version (resource)"; !strings.HasPrefix(out.String(), want) || !strings.HasSuffix(out.String(), ": ok\n") {
		t.Fatalf("validate output %q; want %q… ok", out.String(), want)
	}
	out.Reset()
	if err := validateCmd([]string{"--models=../../deploy/models.yaml", "--otlp-rules=../../deploy/otlp-rules.yaml", "../../deploy/rollouts"}, &out); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if s := out.String(); !strings.Contains(s, "models.yaml: ") || !strings.Contains(s, "otlp-rules.yaml: rollout: ") || !strings.Contains(s, "support-agent") {
		t.Fatalf("validate output %q", s)
	}
	f := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(f, []byte("version:\n  keys:\n    - key: service.version\n      from: pod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := validateCmd([]string{"--otlp-rules", f}, &out); err == nil || !strings.Contains(err.Error(), `rules.yaml:4: version.keys.0.from: "pod": want resource, span or any`) {
		t.Fatalf("validate of a bad rules file: %v", err)
	}
	if err := validateCmd([]string{"--otlp-rules"}, &out); err == nil || !strings.Contains(err.Error(), "--otlp-rules needs a file") {
		t.Fatalf("validate --otlp-rules without a file: %v", err)
	}
	// canaryd run refuses it at start, before it touches Kafka; so does
	// CANARYD_OTLP_RULES.
	err := runCmd(t.Context(), []string{"--brokers", "127.0.0.1:1", "--specs", "../../deploy/rollouts", "--http", "", "--otlp-rules", f}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "rules.yaml:4: version.keys.0.from") {
		t.Fatalf("run with a bad rules file: %v", err)
	}
	t.Setenv("CANARYD_OTLP_RULES", f)
	err = runCmd(t.Context(), []string{"--brokers", "127.0.0.1:1", "--specs", "../../deploy/rollouts", "--http", ""}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "rules.yaml:4: version.keys.0.from") {
		t.Fatalf("run with a bad CANARYD_OTLP_RULES: %v", err)
	}
}

// TestRunOTLPRulesFlag: --otlp-rules is parsed into the daemon's config.
func TestRunOTLPRulesFlag(t *testing.T) {
	r, _, err := parseRun([]string{"--otlp-rules", "x.yaml"}, nil, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil || r.otlpRulesFile != "x.yaml" {
		t.Fatalf("parseRun: %+v, %v", r, err)
	}
}
