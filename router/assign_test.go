package router

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/inferensys/canaryd/schemas"
)

func testState(a schemas.Action, weight int, cohort *schemas.Cohort) State {
	return State{Rollout: "support-agent", Baseline: "v42", Canary: "v43", Action: a, Weight: weight, Cohort: cohort, Seq: 1}
}

// TestAssignMonotone checks the exact property routers rely on: for any key,
// the weights that put it on the canary are an upper interval of 0..100, so
// the canary set at w is a subset of the set at every w' > w and a key never
// flips back while the weight rises. The keys are random on purpose: the
// property holds for every key, so no draw can fail it by luck.
func TestAssignMonotone(t *testing.T) {
	internal := &schemas.Cohort{Attribute: "user_tier", Values: []string{"internal"}}
	in, out := map[string]string{"user_tier": "internal"}, map[string]string{"user_tier": "external"}
	for range 2000 {
		key := fmt.Sprintf("sess-%x", rand.Uint64())
		first := -1 // the first weight at which key is on the canary
		for w := 0; w <= 100; w++ {
			s := testState(schemas.ActionSetWeight, w, nil)
			canary := s.Assign(key, nil) == "v43"
			switch {
			case canary && first < 0:
				first = w
			case !canary && first >= 0:
				t.Fatalf("key %q: canary at weight %d, baseline at %d", key, first, w)
			}
			// In the cohort: the same as without one; outside it: never.
			sc := testState(schemas.ActionSetWeight, w, internal)
			if got := sc.Assign(key, in) == "v43"; got != canary {
				t.Fatalf("key %q weight %d: in the cohort canary=%v; without a cohort %v", key, w, got, canary)
			}
			if sc.Assign(key, out) != "v42" || sc.Assign(key, nil) != "v42" {
				t.Fatalf("key %q weight %d: outside the cohort on the canary", key, w)
			}
			// hold keeps the weight it carries.
			if sh := testState(schemas.ActionHold, w, nil); (sh.Assign(key, nil) == "v43") != canary {
				t.Fatalf("key %q: hold at weight %d assigns differently from set_weight", key, w)
			}
		}
		if b := Bucket("support-agent", key); first != b/100+1 && !(first == -1 && b >= 9900) {
			t.Fatalf("key %q bucket %d: first on the canary at weight %d; want %d", key, b, first, b/100+1)
		}
		// promote: everyone on the canary, rollback: everyone on the baseline,
		// whatever weight and cohort they carry.
		for _, w := range []int{0, 50, 100} {
			if p := testState(schemas.ActionPromote, w, internal); p.Assign(key, nil) != "v43" {
				t.Fatalf("promote: key %q not on the canary", key)
			}
			if r := testState(schemas.ActionRollback, w, nil); r.Assign(key, in) != "v42" {
				t.Fatalf("rollback: key %q not on the baseline", key)
			}
		}
	}
}

// TestAssignSplit checks that the canary gets its weight of 100,000 keys,
// within ±1 point, at several weights, with and without a cohort. The keys
// are fixed ("key-0" … "key-99999"), so the test is deterministic. Were they
// random, the canary share at weight w would be binomial with a standard
// deviation of at most 0.16 points, and ±1 point is more than 6.3 of them:
// the chance of failing by luck would be below 3e-10 per weight.
func TestAssignSplit(t *testing.T) {
	const n = 100_000
	buckets := make([]int, n)
	tiers := make([]map[string]string, n)
	for i := range buckets {
		buckets[i] = Bucket("support-agent", "key-"+strconv.Itoa(i))
		tier := "external"
		if i%4 == 0 {
			tier = "internal" // a quarter of the keys
		}
		tiers[i] = map[string]string{"user_tier": tier}
	}
	internal := &schemas.Cohort{Attribute: "user_tier", Values: []string{"internal"}}
	for _, w := range []int{1, 5, 10, 25, 50, 75, 90, 99} {
		s := testState(schemas.ActionSetWeight, w, nil)
		sc := testState(schemas.ActionSetWeight, w, internal)
		var canary, eligible, canaryCohort int
		for i := range buckets {
			key := "key-" + strconv.Itoa(i)
			if s.Assign(key, nil) == "v43" {
				canary++
			}
			if tiers[i]["user_tier"] == "internal" {
				eligible++
			}
			if sc.Assign(key, tiers[i]) == "v43" {
				if tiers[i]["user_tier"] != "internal" {
					t.Fatalf("weight %d: key %d outside the cohort on the canary", w, i)
				}
				canaryCohort++
			}
		}
		share := 100 * float64(canary) / n
		shareCohort := 100 * float64(canaryCohort) / float64(eligible)
		t.Logf("weight %2d: canary %.2f%% of %d keys; %.2f%% of the %d in the cohort", w, share, n, shareCohort, eligible)
		if share < float64(w)-1 || share > float64(w)+1 {
			t.Errorf("weight %d: canary share %.2f%% of %d keys; want %d ± 1", w, share, n, w)
		}
		// 25,000 eligible keys: sd ≤ 0.32 points, 2 points > 6.3 sd.
		if shareCohort < float64(w)-2 || shareCohort > float64(w)+2 {
			t.Errorf("weight %d: canary share in the cohort %.2f%% of %d keys; want %d ± 2", w, shareCohort, eligible, w)
		}
	}
}

func TestAssignTable(t *testing.T) {
	tab := NewTable(nil)
	if got := tab.Assign("support-agent", "k", nil); got != "" {
		t.Fatalf("Assign before any command = %q; want \"\"", got)
	}
	c := vecCommand("support-agent", 1, schemas.ActionPromote, 3, 100)
	if _, err := tab.Apply([]byte(c.Rollout), []byte(encode(t, c, "")), vectorTime); err != nil {
		t.Fatal(err)
	}
	if got := tab.Assign("support-agent", "k", nil); got != "v43" {
		t.Fatalf("Assign after promote = %q; want v43", got)
	}
	if got := tab.Assign("other", "k", nil); got != "" {
		t.Fatalf("Assign of another rollout = %q; want \"\"", got)
	}
}

func BenchmarkAssign(b *testing.B) {
	s := testState(schemas.ActionSetWeight, 25, &schemas.Cohort{Attribute: "user_tier", Values: []string{"internal"}})
	attrs := map[string]string{"user_tier": "internal"}
	b.ReportAllocs()
	for b.Loop() {
		s.Assign("sess-8f14e45f-2f1c-4b8e-9d4a-1c2b3d4e5f60", attrs)
	}
}

// BenchmarkTableApply decodes, verifies and applies a signed command (a
// fresh seq each time): the cost per control record, off any request path.
func BenchmarkTableApply(b *testing.B) {
	tab := NewTable([]byte("secret"))
	values := make([][]byte, 1024)
	for i := range values {
		values[i] = []byte(encode(b, vecCommand("support-agent", uint64(i+1), schemas.ActionSetWeight, i, i%101), "secret"))
	}
	key := []byte("support-agent")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%len(values) == 0 {
			tab = NewTable([]byte("secret"))
		}
		if _, err := tab.Apply(key, values[i%len(values)], vectorTime); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
