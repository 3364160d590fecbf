package detector

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func nilNode() *yaml.Node { return &yaml.Node{} }

func TestParseSpecs(t *testing.T) {
	src := `
rollout: support-agent
baseline: v1.4.0
canary: v1.5.0
alpha: 0.01
steps:
  - {weight: 5, min_duration: 30s, min_canary_events: 500}
  - {weight: 25, min_duration: 1m}
  - {weight: 100}
metrics:
  error_rate: {margin: 1.3}
slo: {max_error_rate: 0.05, max_p95_ms: 4000}
---
rollout: other
baseline: a
canary: b
steps: [{weight: 10, min_duration: 20}]
`
	specs, err := ParseSpecs("x.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 {
		t.Fatalf("got %d specs; want 2", len(specs))
	}
	s := specs[0]
	if s.Alpha != 0.01 || s.Metrics.ErrorRate.Margin != 1.3 || s.Metrics.Latency.Margin != DefaultLatencyMargin {
		t.Fatalf("spec %+v: alpha or margins wrong", s)
	}
	if time.Duration(s.Steps[0].MinDuration) != 30*time.Second || s.Steps[0].MinCanaryEvents != 500 {
		t.Fatalf("step 0 = %+v", s.Steps[0])
	}
	if time.Duration(specs[1].Steps[0].MinDuration) != 20*time.Second {
		t.Fatalf("numeric seconds: got %v", time.Duration(specs[1].Steps[0].MinDuration))
	}
	if specs[1].Alpha != DefaultAlpha {
		t.Fatalf("default alpha %v", specs[1].Alpha)
	}
}

func TestBadSpecs(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"missing canary", "rollout: r\nbaseline: a\nsteps: [{weight: 5}]\n", "bad.yaml:1: canary: required"},
		{"weight range", "rollout: r\nbaseline: a\ncanary: b\nsteps:\n  - weight: 5\n  - weight: 150\n", "bad.yaml:6: steps.1.weight: weight 150 is outside 1..100"},
		{"weights decrease", "rollout: r\nbaseline: a\ncanary: b\nsteps:\n  - weight: 50\n  - weight: 25\n", "bad.yaml:6: steps.1.weight: weight 25 does not increase"},
		{"alpha weight name", "rollout: r\nbaseline: a\ncanary: b\nsteps: [{weight: 5}]\nalpha_weights:\n  error_rate: 10\n  errors: 2\n", "bad.yaml:7: alpha_weights.errors: \"errors\" is not a rollback test; known: context_use, cost,"},
		{"alpha weight value", "rollout: r\nbaseline: a\ncanary: b\nsteps: [{weight: 5}]\nalpha_weights: {error_rate: -1}\n", "bad.yaml:5: alpha_weights.error_rate: weight -1 must be a positive number"},
		{"bad duration", "rollout: r\nbaseline: a\ncanary: b\nsteps:\n  - weight: 5\n    min_duration: soon\n", `"soon" is not a duration`},
		{"unknown field", "rollout: r\nbaseline: a\ncanary: b\nstep: []\n", "field step not found"},
		{"alpha", "rollout: r\nbaseline: a\ncanary: b\nalpha: 2\nsteps: [{weight: 5}]\n", "bad.yaml:4: alpha: 2 is outside (0, 0.5)"},
		{"margin", "rollout: r\nbaseline: a\ncanary: b\nsteps: [{weight: 5}]\nmetrics:\n  error_rate:\n    margin: 0.5\n", "bad.yaml:7: metrics.error_rate.margin"},
		{"same versions", "rollout: r\nbaseline: a\ncanary: a\nsteps: [{weight: 5}]\n", "canary and baseline are both"},
		{"not yaml", "rollout: [\n", "bad.yaml"},
		{"empty", "", "no rollout spec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSpecs("bad.yaml", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v; want *SpecError", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q; want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadSpecsDirDuplicate(t *testing.T) {
	dir := t.TempDir()
	spec := "rollout: r\nbaseline: a\ncanary: b\nsteps: [{weight: 5}]\n"
	for _, f := range []string{"a.yaml", "b.yml"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(spec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := LoadSpecs(dir)
	if err == nil || !strings.Contains(err.Error(), "already declared") || !strings.Contains(err.Error(), "b.yml") {
		t.Fatalf("LoadSpecs duplicate: %v; want an error naming b.yml", err)
	}
	if _, err := LoadSpecs(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatalf("LoadSpecs file: %v", err)
	}
}
