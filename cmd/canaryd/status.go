package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/inferensys/canaryd/detector"
)

const statusUsage = `canaryd status — rollouts as the server sees them

Usage:
  canaryd status [flags] [ROLLOUT]

Prints each rollout's release (baseline → canary), phase, step, canary
weight and last verdict with its reason, read from a running canaryd's HTTP
API; with ROLLOUT, only that rollout, its whole reason, and the evidence of
its last verdict: each test with the segment it describes, canary and
baseline values, odds ratio and bounds, e-value against its threshold. --json prints the API's JSON as it is
(GET /v1/rollouts or /v1/rollouts/ROLLOUT; see api/openapi.yaml).

Flags:
`

// reasonWidth is how much of a verdict's reason the table shows (--json
// has all of it).
const reasonWidth = 100

// statusCmd is `canaryd status`.
func statusCmd(ctx context.Context, args []string, lookup func(string) (string, bool), stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cf := addClientFlags(fs, lookup)
	asJSON := fs.Bool("json", false, "print the API's JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, statusUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return err
		}
		return fmt.Errorf("status: %w (see canaryd status --help)", err)
	}
	if len(pos) > 1 {
		return fmt.Errorf("status: one rollout at most, got %q (see canaryd status --help)", pos)
	}
	c, err := cf.client()
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	var list []rolloutStatus
	var body []byte
	if len(pos) == 1 {
		var st rolloutStatus
		st, body, err = c.rollout(ctx, pos[0])
		list = []rolloutStatus{st}
	} else {
		list, body, err = c.rollouts(ctx)
	}
	if err != nil {
		return fmt.Errorf("status: %s: %w", c.base, err)
	}
	if *asJSON {
		var buf bytes.Buffer
		if err := json.Indent(&buf, body, "", "  "); err != nil {
			return fmt.Errorf("status: %w", err)
		}
		buf.WriteByte('\n')
		_, err := stdout.Write(buf.Bytes())
		return err
	}
	if len(list) == 0 {
		fmt.Fprintf(stdout, "no rollouts at %s\n", c.base)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLLOUT\tRELEASE\tPHASE\tSTEP\tWEIGHT\tVERDICT\tREASON")
	for i := range list {
		s := &list[i]
		action := string(s.Verdict.Action)
		if action == "" {
			action = "-"
		}
		weight := fmt.Sprintf("%d%%", s.Weight)
		if s.Mode == detector.ModeJudge {
			// Judge mode: who set the weight, and the gate a controller reads.
			weight += " (" + s.WeightSource + ")"
			action = s.Gate
		}
		fmt.Fprintf(tw, "%s\t%s → %s\t%s\t%s\t%s\t%s\t%s\n", s.Rollout, s.Baseline, s.release(), s.phase(), s.stepText(), weight, action, cut(oneLine(s.Verdict.Reason), reasonWidth))
	}
	if err := tw.Flush(); err != nil || len(pos) == 0 {
		return err
	}
	if err := evidenceTable(stdout, &list[0].Status); err != nil {
		return err
	}
	return routersTable(stdout, &list[0].Status)
}

// routersTable prints what the routers' acknowledgements say (canaryd run
// with --acks-topic): each router's weight, the last command it applied
// out of the rollout's latest, since when, and whether it is late.
func routersTable(w io.Writer, st *detector.Status) error {
	if len(st.Routers) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTER\tWEIGHT\tACTION\tSEQ\tSINCE\tSTATE")
	for _, r := range st.Routers {
		seq := fmt.Sprint(r.Seq)
		if r.LatestSeq > 0 {
			seq += fmt.Sprintf("/%d", r.LatestSeq)
		}
		state := "ok"
		if r.Lagging {
			state = "LAGGING"
		}
		fmt.Fprintf(tw, "%s\t%d%%\t%s\t%s\t%s\t%s\n", r.Router, r.Weight, r.Action, seq, r.Since.UTC().Format(time.RFC3339), state)
	}
	return tw.Flush()
}

// evidenceTable prints one rollout's whole reason and its last verdict's
// tests.
func evidenceTable(w io.Writer, st *detector.Status) error {
	fmt.Fprintf(w, "\n%s\n", oneLine(st.Verdict.Reason))
	if len(st.Verdict.Tests) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TEST\tROLE\tSEGMENT\tCANARY\tBASELINE\tN CANARY\tODDS\tBOUNDS\tE-VALUE\tTHRESHOLD\tSTATE")
	num := func(n detector.Num) string {
		f := float64(n)
		if math.IsNaN(f) {
			return "-"
		}
		if math.IsInf(f, 1) {
			return "∞"
		}
		return fmt.Sprintf("%.3g", f)
	}
	for _, t := range st.Verdict.Tests {
		state := "quiet"
		switch {
		case t.Passed && t.Role == "promote":
			state = "shown"
		case t.Passed:
			state = "FIRED"
		case t.Role == "promote":
			state = "not yet"
		}
		seg := t.Segment
		if seg == "" {
			seg = "-"
		}
		bounds := "-"
		if !math.IsNaN(float64(t.Lower)) {
			up := num(t.Upper)
			if up == "-" { // the JSON's null: no upper bound
				up = "∞"
			}
			bounds = num(t.Lower) + "–" + up
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, seg, num(t.Canary), num(t.Baseline), t.NCanary,
			num(t.OddsRatio), bounds, num(t.EValue), num(t.Threshold), state)
	}
	return tw.Flush()
}

// oneLine replaces line breaks and tabs (which would break the table) by
// spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}

// cut shortens s to n runes, marking the cut.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
