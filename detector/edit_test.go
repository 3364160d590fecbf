package detector

import (
	"strings"
	"testing"
	"time"
)

func TestEdit(t *testing.T) {
	base := func() Spec {
		ss, err := ParseSpecs("e.yaml", []byte(`
rollout: r
baseline: v1
canary: v2
alpha: 0.05
steps:
  - {weight: 10, min_duration: 1m}
  - {weight: 50, min_duration: 1m}
  - {weight: 100}
`))
		if err != nil {
			t.Fatal(err)
		}
		return ss[0]
	}
	for _, tc := range []struct {
		name string
		step int // the judge's current step
		edit func(*Spec)
		err  string // "" when the edit applies
	}{
		{"later step weight", 0, func(s *Spec) { s.Steps[1].Weight = 25 }, ""},
		{"add a step", 0, func(s *Spec) { s.Steps = append(s.Steps[:2:2], Step{Weight: 75}, s.Steps[2]) }, ""},
		{"current step duration", 1, func(s *Spec) { s.Steps[1].MinDuration = Duration(5 * time.Minute) }, ""},
		{"deployment id", 1, func(s *Spec) { s.DeploymentID, s.Commit = "d-7", "abc" }, ""},
		{"alpha", 0, func(s *Spec) { s.Alpha = 0.01 }, "cannot change alpha"},
		{"units", 0, func(s *Spec) { s.Units = UnitsSessions }, "cannot change units"},
		{"current step weight", 1, func(s *Spec) { s.Steps[1].Weight = 60 }, "weight of the current step 2"},
		{"passed step", 1, func(s *Spec) { s.Steps[0].MinDuration = Duration(time.Hour) }, "step 1: it is passed"},
		{"too few steps", 2, func(s *Spec) { s.Steps = s.Steps[:1] }, "already at step 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := NewJudge(base())
			j.step = tc.step
			s := base()
			tc.edit(&s)
			before := j.Spec()
			err := j.Edit(s)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Edit: %v; want it applied", err)
			case tc.err == "" && j.specHash != specHash(s):
				t.Fatal("Edit applied, but the judge's spec hash is not the new spec's")
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Edit: %v; want an error containing %q", err, tc.err)
			case tc.err != "" && specHash(j.Spec()) != specHash(before):
				t.Fatal("a refused edit changed the judge's spec")
			}
		})
	}
}
