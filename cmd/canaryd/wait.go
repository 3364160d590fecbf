package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

const waitUsage = `canaryd wait — wait for a rollout's verdict, as a pipeline step

Usage:
  canaryd wait ROLLOUT [--canary V] [--deployment-id D] [--timeout T] [flags]

Polls the rollout on a running canaryd's HTTP API every --interval, prints a
line whenever its release, phase, step, weight or verdict changes, and exits
with the verdict:

  0  promoted
  1  rolled back
  2  held, or no verdict within --timeout (also: the rollout stayed unknown
     to the server, or the release was superseded before its verdict)
  3  usage error, the server refused the request (e.g. a token is needed),
     or the server stayed unreachable until --timeout

With --canary or --deployment-id, only the verdict of that release counts:
the final verdict of an earlier release of the same rollout does not end the
wait. Without them, the rollout's current release counts, whichever it is.

Flags:
`

// Exit codes of canaryd wait.
const (
	exitPromoted      = 0
	exitRolledBack    = 1
	exitHeldOrTimeout = 2
	exitWaitError     = 3
)

// waitCmd is `canaryd wait`; it returns the exit code.
func waitCmd(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cf := addClientFlags(fs, lookup)
	w := &waiter{}
	timeout, interval := defaultWaitTimeout, defaultWaitPoll
	fs.StringVar(&w.canary, "canary", "", "wait for the verdict of this canary version")
	fs.StringVar(&w.deployment, "deployment-id", "", "wait for the verdict of this deployment id (needs a server whose status carries deployment_id)")
	fs.Var((*durationValue)(&timeout), "timeout", "give up after this long, exit 2 (0: never)")
	fs.Var((*durationValue)(&interval), "interval", "time between polls")
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, waitUsage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return 0
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "canaryd wait: "+format+" (see canaryd wait --help)\n", a...)
		return exitWaitError
	}
	switch {
	case err != nil:
		return usage("%v", err)
	case len(pos) != 1:
		return usage("want one ROLLOUT, got %d arguments", len(pos))
	case interval <= 0:
		return usage("--interval %v: must be positive", interval)
	case timeout < 0:
		return usage("--timeout %v: must not be negative", timeout)
	}
	w.rollout = pos[0]
	c, err := cf.client()
	if err != nil {
		return usage("%v", err)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	fmt.Fprintf(stdout, "waiting for %s at %s\n", w.target(), c.base)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		st, _, err := c.rollout(ctx, w.rollout)
		if ctx.Err() == nil || err == nil {
			lines, code, done := w.observe(&st, err)
			for _, l := range lines {
				fmt.Fprintln(stdout, l)
			}
			if done {
				if code == exitWaitError {
					fmt.Fprintln(stderr, "canaryd wait:", w.last)
				}
				return code
			}
		}
		select {
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			code, msg := w.timedOut(timeout, c.base)
			fmt.Fprintln(stderr, "canaryd wait:", msg)
			return code
		}
		fmt.Fprintf(stderr, "canaryd wait: interrupted: %s\n", w.last)
		return exitWaitError
	}
}

// waiter decides a wait from what each poll returned: observe takes one
// poll, timedOut the end of the time. It does no I/O.
type waiter struct {
	rollout, canary, deployment string

	seen    bool   // a status of the awaited release was seen
	shown   string // what the last line shown was about (to print changes only)
	problem int    // what the last poll found: 0 a status, else pollUnknown, pollUnreachable
	last    string // the last thing learnt, for the message at the end
	lastErr string // the last error printed (to print each once)
	// noDeploymentID: the last status did not carry a deployment id (an
	// older server), so --deployment-id cannot match.
	noDeploymentID bool
}

const (
	pollStatus = iota
	pollUnknown
	pollUnreachable
)

// target names what is awaited.
func (w *waiter) target() string {
	t := w.rollout
	if w.canary != "" {
		t += " canary " + w.canary
	}
	if w.deployment != "" {
		t += " deployment " + w.deployment
	}
	return t
}

// matches tells whether st is of the awaited release.
func (w *waiter) matches(st *rolloutStatus) bool {
	return (w.canary == "" || st.Canary == w.canary) && (w.deployment == "" || st.DeploymentID == w.deployment)
}

// progress is one line describing st.
func progress(st *rolloutStatus) string {
	line := fmt.Sprintf("%s %s: %s, step %s, weight %d%%", st.Rollout, st.release(), st.phase(), st.stepText(), st.Weight)
	if st.Verdict.Action != "" {
		line += ", " + string(st.Verdict.Action)
		if st.Verdict.Reason != "" {
			line += ": " + cut(oneLine(st.Verdict.Reason), 200)
		}
	}
	return line
}

// observe takes the outcome of one poll and returns the lines to print
// and, when the wait is over, its exit code.
func (w *waiter) observe(st *rolloutStatus, err error) (lines []string, code int, done bool) {
	var ae *apiError
	switch {
	case errors.As(err, &ae) && ae.code == http.StatusNotFound:
		w.problem = pollUnknown
		w.last = fmt.Sprintf("rollout %s unknown to the server (%s)", w.rollout, ae.msg)
		if w.lastErr != w.last {
			w.lastErr = w.last
			lines = append(lines, w.last+"; waiting for it to appear")
		}
		return lines, 0, false
	case errors.As(err, &ae) && (ae.code == http.StatusUnauthorized || ae.code == http.StatusForbidden):
		w.last = fmt.Sprintf("the server refused to show rollout %s: %v (a server run with --http-protect-reads needs --token-file)", w.rollout, ae)
		return nil, exitWaitError, true
	case err != nil:
		w.problem = pollUnreachable
		w.last = err.Error()
		if w.lastErr != w.last {
			w.lastErr = w.last
			lines = append(lines, "cannot read rollout "+w.rollout+": "+w.last+"; retrying")
		}
		return lines, 0, false
	}
	w.problem, w.lastErr = pollStatus, ""
	if !w.matches(st) {
		line := fmt.Sprintf("%s is at %s (%s)", st.Rollout, st.release(), st.phase())
		if w.seen {
			w.last = fmt.Sprintf("release %s was superseded by %s before its verdict", w.target(), st.release())
			return []string{line, w.last}, exitHeldOrTimeout, true
		}
		w.noDeploymentID = w.deployment != "" && st.DeploymentID == ""
		w.last = line + "; waiting for " + w.target()
		if w.shown != w.last {
			w.shown = w.last
			lines = append(lines, w.last)
		}
		return lines, 0, false
	}
	w.seen = true
	// A line when the release, phase, step, weight, action or final
	// changes; not for each new reason (its numbers change every window).
	if key := fmt.Sprint(st.release(), st.phase(), st.Step, st.Weight, st.Verdict.Action, st.Final); key != w.shown {
		w.shown = key
		lines = append(lines, progress(st))
	}
	w.last = fmt.Sprintf("%s %s: %s at step %s, weight %d%%", st.Rollout, st.release(), st.phase(), st.stepText(), st.Weight)
	switch st.Final {
	case "":
		return lines, 0, false
	case "promote":
		return append(lines, fmt.Sprintf("%s %s promoted", st.Rollout, st.release())), exitPromoted, true
	case "rollback":
		return append(lines, fmt.Sprintf("%s %s rolled back", st.Rollout, st.release())), exitRolledBack, true
	case "hold":
		return append(lines, fmt.Sprintf("%s %s held: %s", st.Rollout, st.release(), oneLine(st.Verdict.Reason))), exitHeldOrTimeout, true
	}
	return append(lines, fmt.Sprintf("%s %s ended: %s", st.Rollout, st.release(), st.Final)), exitHeldOrTimeout, true
}

// timedOut returns the exit code and message when the time is up.
func (w *waiter) timedOut(timeout time.Duration, server string) (int, string) {
	switch w.problem {
	case pollUnreachable:
		return exitWaitError, fmt.Sprintf("server %s unreachable for the last poll after %v: %s", server, timeout, w.last)
	case pollUnknown:
		return exitHeldOrTimeout, fmt.Sprintf("timeout after %v: rollout %s is unknown to %s (is the rollout id right, and does a spec or an event name it?)", timeout, w.rollout, server)
	}
	if !w.seen {
		msg := fmt.Sprintf("timeout after %v: no status of %s yet: %s", timeout, w.target(), w.last)
		if w.noDeploymentID {
			msg += " (this server's status carries no deployment_id: wait with --canary instead)"
		}
		return exitHeldOrTimeout, msg
	}
	return exitHeldOrTimeout, fmt.Sprintf("timeout after %v without a verdict: %s", timeout, w.last)
}
