package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
)

// pageSpecs: loopSpecs, with a smaller alpha for the bad rollout, so that
// its rollback takes long enough (about 10 s of events) to plot.
const pageSpecs = `
rollout: good
baseline: v1
canary: v2
alpha: 0.00002
steps:
  - {weight: 20, min_duration: 3s, min_canary_events: 300}
  - {weight: 50, min_duration: 3s, min_canary_events: 300}
  - {weight: 100}
metrics: {error_rate: {margin: 2.0}}
---
rollout: bad
baseline: v1
canary: v2
alpha: 0.0005
steps:
  - {weight: 20, min_duration: 3s, min_canary_events: 300}
  - {weight: 50, min_duration: 3s, min_canary_events: 300}
  - {weight: 100}
metrics: {error_rate: {margin: 2.0}}
`

// pageState is what statusPageScript reads from the status page's DOM.
type pageState struct {
	Polls     int      `json:"polls"`
	Rows      []string `json:"rows"`      // rollouts in the list
	BadFinal  string   `json:"bad_final"` // the final badge in bad's row
	Action    string   `json:"action"`    // the detail's last decision
	Reason    string   `json:"reason"`
	Source    string   `json:"source"` // where the plotted history came from: server or page
	EPlots    int      `json:"eplots"`
	Fired     []string `json:"fired"`      // e-value plots of tests that fired
	MaxPoints int      `json:"max_points"` // most points in one e-value plot
	Circles   int      `json:"circles"`    // circles in the e-value plots
	Markers   []string `json:"markers"`    // decision markers on the step timeline
	Decisions []string `json:"decisions"`  // the decisions' list (action: reason)
	ArmPoints int      `json:"arm_points"` // points in the canary-vs-baseline plots
	ArmRows   int      `json:"arm_rows"`
	TestRows  int      `json:"test_rows"`
	Segments  []string `json:"segments"` // rows of the per-segment table
	Flagged   []string `json:"flagged"`  // those marked as named by a fired rollback test
}

const statusPageScript = `
const q = (s) => [...document.querySelectorAll(s)];
const r = document.getElementById('d-reason');
const plots = q('#evalues svg.eplot');
const badRow = document.querySelector('#rollout-rows tr[data-rollout="bad"]');
const fin = badRow && badRow.querySelector('[class*="final-"]');
return {
  polls: +(document.body.dataset.polls || 0),
  rows: q('#rollout-rows tr[data-rollout]').map((e) => e.dataset.rollout),
  bad_final: fin ? fin.textContent : '',
  action: r ? r.dataset.action || '' : '',
  reason: r ? r.textContent : '',
  source: document.getElementById('detail').dataset.historySource || '',
  eplots: plots.length,
  fired: plots.filter((p) => p.dataset.fired === 'true').map((p) => p.dataset.test),
  max_points: Math.max(0, ...plots.map((p) => +p.dataset.points)),
  circles: q('#evalues svg.eplot circle').length,
  markers: q('#timeline circle.marker').map((c) => c.dataset.action),
  decisions: q('#decisions li[data-action]').map((li) => li.dataset.action + ': ' + li.textContent),
  arm_points: q('#arm-plots svg.armplot').reduce((n, p) => n + +p.dataset.points, 0),
  arm_rows: q('#arms tbody tr').length,
  test_rows: q('#tests tbody tr[data-test]').length,
  segments: q('#segments tbody tr[data-segment]').map((e) => e.dataset.segment),
  flagged: q('#segments tbody tr.regressed').map((e) => e.dataset.segment),
};`

// layoutScript finds what overflows the viewport: the document wider than
// the window, or an element reaching past its edges outside a scrolling
// container (wide tables scroll inside their box on a phone, by design).
const layoutScript = `
const vw = window.innerWidth;
const bad = [];
for (const e of document.body.querySelectorAll('*')) {
  let p = e.parentElement, inScroll = false;
  for (; p && p !== document.body; p = p.parentElement) {
    if (getComputedStyle(p).overflowX !== 'visible') { inScroll = true; break; }
  }
  if (inScroll) continue;
  const b = e.getBoundingClientRect();
  if (b.width === 0 && b.height === 0) continue;
  if (b.right > vw + 1 || b.left < -1) {
    bad.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && e.className.baseVal === undefined ? '.' + e.className : '') +
      ' ' + Math.round(b.left) + '..' + Math.round(b.right));
  }
}
return {inner_width: vw, scroll_width: document.documentElement.scrollWidth, overflowing: bad.slice(0, 20)};`

type layout struct {
	InnerWidth  int      `json:"inner_width"`
	ScrollWidth int      `json:"scroll_width"`
	Overflowing []string `json:"overflowing"`
}

// TestStatusPageInChromium loads the status page in headless Chromium
// before a simulated fleet starts (kfake): a good canary and a bad one
// (errors ×3, tools 20% slower). Without reloading, the page must follow
// the bad rollout to its rollback and show it: the reason in the detail and
// the decisions' list as the API gives it, the fired test's e-value plot
// with points, the rollback marker on the step timeline, the arms' table
// and plots. Then it checks the layout at 1280 and 390 pixels wide and
// saves a screenshot of each, and follows a click to the good rollout (in CANARYD_SCREENSHOTS when set, else in
// $TMPDIR/canaryd-status-page; the test logs where).
func TestStatusPageInChromium(t *testing.T) {
	t.Parallel()
	browser, driver := chromiumPaths(t)
	start := time.Now()
	brokers := kafkatest.Brokers(t, kafkatest.KindFake)
	tp := newTopics(t)
	d := startDaemon(t, brokers, tp, pageSpecs, metrics.NewSet())
	page := "http://" + d.HTTPAddr() + "/#rollout=bad"

	wd := startChromedriver(t, driver)
	s := wd.session(t, browser, 1280, 900)
	s.navigate(t, page)
	before := waitPage(t, s, 30*time.Second, "the first poll", statusPageScript, func(p *pageState) bool { return p.Polls >= 1 })
	if before.Action == "rollback" {
		t.Fatalf("the page shows a rollback before any event: %+v", before)
	}
	if !slices.Equal(before.Rows, []string{"bad", "good"}) {
		t.Errorf("rollouts listed %q; want [bad good]", before.Rows)
	}
	t.Logf("page loaded (%s after the start): %d polls, decision %q: %s", time.Since(start).Round(time.Millisecond), before.Polls, before.Action, before.Reason)

	good := loadtest.DefaultProfile()
	bad := loadtest.DefaultProfile()
	bad.ErrorRateMult = 3
	bad.ToolLatencyMult = 1.2
	fleet, err := loadtest.NewFleet(loadtest.FleetConfig{
		Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, Seed: 11,
		Rollouts: []loadtest.Rollout{
			{Name: "good", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: good, Rate: 300},
			{Name: "bad", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: bad, Rate: 300},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stopFleet := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = fleet.Run(ctx) })
	defer func() { stopFleet(); wg.Wait() }()

	// Live: the same page, never reloaded, follows the rollout to its end.
	var seen []string // decisions the page showed on the way, in order
	got := waitPage(t, s, 120*time.Second, "the rollback with its evidence", statusPageScript, func(p *pageState) bool {
		if len(seen) == 0 || seen[len(seen)-1] != p.Action {
			seen = append(seen, p.Action)
		}
		return p.Action == "rollback" && len(p.Fired) > 0 && p.MaxPoints >= 2 && slices.Contains(p.Markers, "rollback")
	})
	t.Logf("rollback shown %s after the start; the page showed %q on the way; %d polls", time.Since(start).Round(time.Millisecond), seen, got.Polls)
	if got.Polls <= before.Polls {
		t.Errorf("polls %d, then %d: the page did not update itself", before.Polls, got.Polls)
	}

	st, ok := d.Status("bad")
	if !ok || st.Final != "rollback" {
		t.Fatalf("the API's bad rollout: final %q; want rollback", st.Final)
	}
	if got.Reason != st.Verdict.Reason || !strings.HasPrefix(got.Reason, "rollback: ") {
		t.Errorf("the page's reason %q; want the API's %q", got.Reason, st.Verdict.Reason)
	}
	if !slices.ContainsFunc(got.Decisions, func(d string) bool {
		return strings.HasPrefix(d, "rollback: ") && strings.Contains(d, strings.TrimPrefix(st.Verdict.Reason, "rollback: "))
	}) {
		t.Errorf("the decisions' list %q has no rollback with its reason", got.Decisions)
	}
	var firedAPI []string
	for _, tc := range st.Verdict.Tests {
		if tc.Role == "rollback" && tc.Passed {
			firedAPI = append(firedAPI, tc.Name)
		}
	}
	slices.Sort(firedAPI)
	slices.Sort(got.Fired)
	if !slices.Equal(got.Fired, firedAPI) {
		t.Errorf("the page's fired tests %q; the API's %q", got.Fired, firedAPI)
	}
	if got.Source != "server" {
		t.Errorf("history from %q; want server (GET /v1/rollouts/{id}/history)", got.Source)
	}
	if got.EPlots < len(st.Verdict.Tests) || got.Circles == 0 || got.ArmPoints < 2 || got.ArmRows < 10 || got.TestRows != len(st.Verdict.Tests) {
		t.Errorf("e-value plots %d (tests %d), circles %d, arm plot points %d, arm rows %d, test rows %d",
			got.EPlots, len(st.Verdict.Tests), got.Circles, got.ArmPoints, got.ArmRows, got.TestRows)
	}
	// The per-segment table: the API's segments in its order, and the
	// segment a fired test names (if the evidence is a segment's) marked.
	var apiSegs, named []string
	for _, sg := range st.Segments {
		apiSegs = append(apiSegs, sg.Segment)
	}
	for _, tc := range st.Verdict.Tests {
		if tc.Role == "rollback" && tc.Passed && tc.Segment != "" && tc.Segment != "all" && !slices.Contains(named, tc.Segment) {
			named = append(named, tc.Segment)
		}
	}
	slices.Sort(named)
	slices.Sort(got.Flagged)
	if len(apiSegs) < 2 || !slices.Equal(got.Segments, apiSegs) || !slices.Equal(got.Flagged, named) {
		t.Errorf("the page's segments %q (marked %q); the API's %q (named by fired tests %q)", got.Segments, got.Flagged, apiSegs, named)
	}
	waitPage(t, s, 10*time.Second, "bad's row to show its final badge", statusPageScript, func(p *pageState) bool { return p.BadFinal == "rollback" })
	t.Logf("page: %d e-value plots (fired %q, up to %d points), timeline markers %q", got.EPlots, got.Fired, got.MaxPoints, got.Markers)

	// The screenshots outlive the test (artifacts to look at): one fixed
	// temporary directory, replaced by each run, unless CANARYD_SCREENSHOTS.
	dir := os.Getenv("CANARYD_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "canaryd-status-page")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, vp := range []struct {
		name          string
		width, height int
		mobile        bool
	}{{"status-page-1280.png", 1280, 900, false}, {"status-page-390.png", 390, 844, true}} {
		s.viewport(t, vp.width, vp.height, vp.mobile)
		// Drawn again at this width: a poll after the change.
		n := waitPage(t, s, 10*time.Second, "a poll at the new width", statusPageScript, func(*pageState) bool { return true }).Polls
		waitPage(t, s, 10*time.Second, "a poll at the new width", statusPageScript, func(p *pageState) bool { return p.Polls > n })
		var l layout
		if err := s.run(layoutScript, &l); err != nil {
			t.Fatal(err)
		}
		if l.InnerWidth != vp.width {
			t.Errorf("%d px: the window is %d px wide", vp.width, l.InnerWidth)
		}
		if l.ScrollWidth > l.InnerWidth || len(l.Overflowing) > 0 {
			t.Errorf("%d px: the page is %d px wide; overflowing: %q", vp.width, l.ScrollWidth, l.Overflowing)
		}
		file := filepath.Join(dir, vp.name)
		if err := os.WriteFile(file, s.screenshot(t), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d px: layout fits (document %d px); screenshot %s", vp.width, l.ScrollWidth, file)
	}
	// A click on the good rollout's row shows it, with its own timeline.
	s.viewport(t, 1280, 900, false)
	s.click(t, `#rollout-rows tr[data-rollout="good"] td:nth-child(3)`)
	const goodScript = `return {
  rollout: document.getElementById('detail').dataset.rollout,
  markers: [...document.querySelectorAll('#timeline circle.marker')].map((c) => c.dataset.action),
  hash: location.hash,
};`
	type goodState struct {
		Rollout, Hash string
		Markers       []string
	}
	gs := waitPage(t, s, 10*time.Second, "the good rollout after a click on its row", goodScript, func(g *goodState) bool {
		return g.Rollout == "good"
	})
	if len(gs.Markers) == 0 || gs.Markers[0] != "set_weight" || slices.Contains(gs.Markers, "rollback") || gs.Hash != "#rollout=good" {
		t.Errorf("good: timeline markers %q, location %q; want set_weight first and no rollback, #rollout=good", gs.Markers, gs.Hash)
	}

	// The layout check can fail: a block wider than the phone is found, one
	// inside a scrolling box is not.
	var l layout
	if err := s.run(`const add = (parent, id) => { const e = document.createElement('div'); e.id = id; e.style.width = '2000px'; e.textContent = 'x'; parent.append(e); };
add(document.querySelector('#detail .card'), 'too-wide');
add(document.querySelector('#detail .scroll'), 'scrolls');
`+layoutScript, &l); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(l.Overflowing, func(e string) bool { return strings.HasPrefix(e, "div#too-wide ") }) ||
		slices.ContainsFunc(l.Overflowing, func(e string) bool { return strings.HasPrefix(e, "div#scrolls ") }) {
		t.Errorf("with a 2000 px block added at 390 px: overflowing %q; want div#too-wide and not div#scrolls", l.Overflowing)
	}
	if errs, err := s.consoleErrors(); err != nil {
		t.Logf("browser log unavailable: %v", err)
	} else if len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}
