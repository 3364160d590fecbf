package route

import "testing"

// TestHAProxyWriteOrder checks, for every pair of weights before and after,
// that the state between the two writes gives the canary no more traffic
// than both the state before and the state after, and leaves a server
// taking traffic whenever the states before and after both had one.
func TestHAProxyWriteOrder(t *testing.T) {
	share := func(c, b int) float64 {
		if c+b == 0 {
			return 0
		}
		return float64(c) / float64(c+b)
	}
	for from := 0; from <= 100; from++ {
		for to := 0; to <= 100; to++ {
			canary := haproxyWrite{server: "c", from: from, to: to}
			baseline := haproxyWrite{server: "b", from: 100 - from, to: 100 - to}
			first, _ := haproxyWriteOrder(canary, baseline)
			c, b := canary.from, baseline.from
			if first.server == "c" {
				c = canary.to
			} else {
				b = baseline.to
			}
			if mid, before, after := share(c, b), share(from, 100-from), share(to, 100-to); mid > max(before, after) {
				t.Fatalf("%d→%d: between the writes the canary has %.3f of the traffic; before %.3f, after %.3f", from, to, mid, before, after)
			}
			if to < from && share(c, b) > share(from, 100-from) {
				t.Fatalf("%d→%d: canary share rises between the writes of a decrease", from, to)
			}
			if c+b == 0 {
				t.Fatalf("%d→%d: both servers at weight 0 between the writes (first %s)", from, to, first.server)
			}
			if to == 0 && from < 100 && first.server != "c" {
				t.Fatalf("%d→0: first write %s; want the canary's", from, first.server)
			}
		}
	}
}
