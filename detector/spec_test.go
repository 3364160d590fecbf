package detector

import (
	"errors"
	"fmt"
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
  - {weight: 5, min_duration: 30s, min_canary_events: 500, cohort: {attribute: user_tier, values: [internal]}}
  - {weight: 50, cohort: {attribute: user_tier, values: [internal]}}
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
	if c := s.Steps[0].Cohort; c == nil || c.Attribute != "user_tier" || len(c.Values) != 1 || c.Values[0] != "internal" || s.Steps[1].Cohort == nil || s.Steps[2].Cohort != nil {
		t.Fatalf("cohorts %v, %v; want user_tier [internal] on steps 0 and 1 only", c, s.Steps[2].Cohort)
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
		{"cohort without values", "rollout: r\nbaseline: a\ncanary: b\nsteps:\n  - weight: 5\n    cohort:\n      attribute: user_tier\n  - weight: 100\n", "bad.yaml:7: steps.0.cohort.values: cohort \"user_tier\" needs non-empty values"},
		{"cohort without attribute", "rollout: r\nbaseline: a\ncanary: b\nsteps:\n  - weight: 5\n    cohort: {values: [internal]}\n", "bad.yaml:6: steps.0.cohort.attribute: cohort without attribute"},
		{"weights decrease within a cohort", "rollout: r\nbaseline: a\ncanary: b\nsteps:\n  - {weight: 50, cohort: {attribute: t, values: [x]}}\n  - {weight: 20, cohort: {attribute: t, values: [x]}}\n", "bad.yaml:6: steps.1.weight: weight 20 does not increase"},
		{"cohort in judge mode", "rollout: r\nbaseline: a\ncanary: b\nmode: judge\nsteps:\n  - weight: 5\n    cohort: {attribute: t, values: [x]}\n", "bad.yaml:7: steps.0.cohort: a cohort in mode: judge"},
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

// TestExplicitZeroRefused: alpha and margins given as 0 (or out of range)
// are refused with file:line; only absent ones take the default.
func TestExplicitZeroRefused(t *testing.T) {
	const head = "rollout: r\nbaseline: a\ncanary: b\nsteps: [{weight: 5}]\n"
	for _, tc := range []struct {
		name, src, want string
	}{
		{"alpha 0", head + "alpha: 0\n", "bad.yaml:5: alpha: 0 is outside (0, 0.5)"},
		{"alpha 0.0", head + "alpha: 0.0\n", "bad.yaml:5: alpha: 0 is outside (0, 0.5)"},
		{"alpha negative", head + "alpha: -0.01\n", "bad.yaml:5: alpha: -0.01 is outside (0, 0.5)"},
		{"alpha 1", head + "alpha: 1\n", "bad.yaml:5: alpha: 1 is outside (0, 0.5)"},
		{"error_rate margin 0", head + "metrics:\n  error_rate: {margin: 0}\n", "bad.yaml:6: metrics.error_rate.margin: odds-ratio margin 0 must be in (1, 20)"},
		{"latency margin 0", head + "metrics:\n  latency_p95:\n    margin: 0\n", "bad.yaml:7: metrics.latency_p95.margin: relative margin 0 must be in (0, 10)"},
		{"cost margin 0", head + "metrics:\n  cost: {margin: 0}\n", "bad.yaml:6: metrics.cost.margin: relative margin 0 must be in (0, 10)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSpecs("bad.yaml", []byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v; want one containing %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name, src string
		alpha     float64
	}{
		{"absent", head, DefaultAlpha},
		{"null", head + "alpha: ~\n", DefaultAlpha},
		{"given", head + "alpha: 0.01\n", 0.01},
	} {
		ss, err := ParseSpecs("ok.yaml", []byte(tc.src))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := ss[0].Alpha; got != tc.alpha {
			t.Errorf("%s: alpha %g; want %g", tc.name, got, tc.alpha)
		}
		if got := ss[0].Metrics.ErrorRate.Margin; got != DefaultErrorRateMargin {
			t.Errorf("%s: error_rate margin %g; want the default %g", tc.name, got, DefaultErrorRateMargin)
		}
	}
	// A margin shared through an alias is read, not replaced by the default.
	ss, err := ParseSpecs("ok.yaml", []byte(head+"metrics:\n  error_rate: &m {margin: 3}\n  session_failure: *m\n"))
	if err != nil {
		t.Fatalf("aliased margin: %v", err)
	}
	if got := ss[0].Metrics.SessionFailure.Margin; got != 3 {
		t.Errorf("aliased margin %g; want 3", got)
	}
}

const okSpec = "rollout: %s\nbaseline: a\ncanary: b\nsteps: [{weight: 5}]\n"

func writeSpec(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoadSpecsDirSkipsEditorAndHiddenFiles: hidden files, editor lock,
// swap, auto-save and backup files in a spec directory are skipped, not
// errors and not specs.
func TestLoadSpecsDirSkipsEditorAndHiddenFiles(t *testing.T) {
	dir := t.TempDir()
	writeSpec(t, filepath.Join(dir, "a.yaml"), fmt.Sprintf(okSpec, "a"))
	const broken = "rollout: [\n"
	for _, name := range []string{".hidden.yaml", "a.yaml~", ".a.yaml.swp", "#a.yaml#", "notes.txt"} {
		writeSpec(t, filepath.Join(dir, name), broken)
	}
	// Emacs's lock file: a dangling symlink named .#a.yaml.
	if err := os.Symlink("user@host.1234:1700000000", filepath.Join(dir, ".#a.yaml")); err != nil {
		t.Fatal(err)
	}
	ss, err := LoadSpecs(dir)
	if err != nil {
		t.Fatalf("LoadSpecs: %v; want the editor's and hidden files skipped", err)
	}
	if len(ss) != 1 || ss[0].Rollout != "a" || ss[0].File != filepath.Join(dir, "a.yaml") {
		t.Fatalf("got %d specs %+v; want rollout a from a.yaml", len(ss), ss)
	}
	// A dangling symlink with a spec's name is an error, naming it.
	if err := os.Symlink("gone.yaml", filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSpecs(dir); err == nil || !strings.Contains(err.Error(), "b.yaml") {
		t.Fatalf("dangling b.yaml: got %v; want an error naming it", err)
	}
}

// TestLoadSpecsConfigMapVolume: a directory shaped as Kubernetes mounts a
// ConfigMap — name.yaml -> ..data/name.yaml, ..data -> ..<timestamp>/ —
// yields each spec exactly once, named by its visible file.
func TestLoadSpecsConfigMapVolume(t *testing.T) {
	dir := t.TempDir()
	ts := "..2026_12_03_10_00_00.123456789"
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"a", "b"} {
		writeSpec(t, filepath.Join(dir, ts, r+".yaml"), fmt.Sprintf(okSpec, r))
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"a", "b"} {
		if err := os.Symlink(filepath.Join("..data", r+".yaml"), filepath.Join(dir, r+".yaml")); err != nil {
			t.Fatal(err)
		}
	}
	ss, err := LoadSpecs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range ss {
		got = append(got, s.Rollout+"@"+filepath.Base(s.File))
	}
	if want := "a@a.yaml,b@b.yaml"; strings.Join(got, ",") != want {
		t.Fatalf("specs %v; want %s", got, want)
	}
}
