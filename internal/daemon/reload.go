package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/stream"
)

// maxPrevious bounds the earlier releases kept per rollout for its status.
const maxPrevious = 10

// Reload asks the spec watcher to re-read Config.SpecsPath now (SIGHUP),
// whether or not the files changed. It never blocks.
func (d *Daemon) Reload() {
	select {
	case d.reloadReq <- struct{}{}:
	default:
	}
}

// watchSpecs polls Config.SpecsPath every SpecsPoll and on Reload, and
// applies the specs when the files' contents changed. It is Daemon.run's
// goroutine; it stops with ctx. Reading the files happens outside every lock.
func (d *Daemon) watchSpecs(ctx context.Context) {
	tick := time.NewTicker(d.cfg.SpecsPoll)
	defer tick.Stop()
	last, _ := specsFingerprint(d.cfg.SpecsPath)
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-d.reloadReq:
			force = true
		}
		d.reloadOTLPRules()
		fp, err := specsFingerprint(d.cfg.SpecsPath)
		if err == nil && fp == last && !force {
			continue
		}
		last = fp
		d.reloadSpecs()
	}
}

// reloadOTLPRules reads the OTLP rules file again (when the rules came from
// one) and puts it in force if it is valid and says something new; an
// invalid file keeps the rules in force and is reported once per error.
func (d *Daemon) reloadOTLPRules() {
	ref := d.cfg.OTLPRules
	if ref == nil {
		return
	}
	before := ref.Load().String()
	r, err := ref.Reload()
	switch {
	case errors.Is(err, stream.ErrRulesNoFile):
	case err != nil:
		if msg := err.Error(); msg != d.rulesErr {
			d.rulesErr = msg
			d.cfg.Metrics.GetOrCreateCounter(`canaryd_otlp_rules_reloads_total{result="invalid"}`).Inc()
			d.cfg.Logger.Error("otlp rules not reloaded: the rules in force stay", "err", err)
		}
	default:
		d.rulesErr = ""
		if s := r.String(); s != before {
			d.cfg.Metrics.GetOrCreateCounter(`canaryd_otlp_rules_reloads_total{result="ok"}`).Inc()
			d.cfg.Logger.Info("otlp rules reloaded", "rules", s)
		}
	}
}

// reloadSpecs loads and applies the specs, or reports why it cannot: the
// last valid specs stay in force.
func (d *Daemon) reloadSpecs() {
	ss, err := detector.LoadSpecs(d.cfg.SpecsPath)
	ms := d.cfg.Metrics
	if err != nil {
		ms.GetOrCreateCounter(`canaryd_spec_reloads_total{result="invalid"}`).Inc()
		d.specsValid.Store(false)
		d.mu.Lock()
		d.fileErr = err.Error()
		d.mu.Unlock()
		d.cfg.Logger.Error("spec reload refused: the last valid specs stay in force", "path", d.cfg.SpecsPath, "err", err)
		return
	}
	d.specsValid.Store(true)
	refused := d.applySpecs(ss)
	result := "ok"
	if refused > 0 {
		result = "partly_refused"
	}
	ms.GetOrCreateCounter(`canaryd_spec_reloads_total{result="` + result + `"}`).Inc()
}

// applySpecs puts a reloaded set of specs in force, under d.mu, between two
// windows of any rollout (onClosed takes d.mu too): a new rollout gets a
// judge; a new baseline or canary version of a known rollout starts a new
// release (the previous one ends as superseded); an edit of a running
// release applies to what is not decided yet (detector.Judge.Edit) or is
// refused with its reason; a rollout no longer in the specs ends as
// removed. Commands already decided stay in the outbox. It returns how many
// edits were refused.
func (d *Daemon) applySpecs(ss []detector.Spec) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fileErr = ""
	refused := 0
	now := time.Now().UTC()
	keep := map[string]bool{}
	for _, s := range ss {
		keep[s.Rollout] = true
		j := d.judges[s.Rollout]
		if old, ok := d.fileSpecs[s.Rollout]; ok && j != nil && detector.SameSpec(old, s) {
			continue // unchanged in the files (a release started over HTTP stays)
		}
		d.fileSpecs[s.Rollout] = s
		if s.Auto() {
			d.applyAuto(s, j)
			continue
		}
		delete(d.autoSpecs, s.Rollout) // a spec naming its canary replaces a template
		switch {
		case j == nil:
			d.judges[s.Rollout] = d.newJudge(s)
			d.cfg.Logger.Info("spec reload: rollout added", "rollout", s.Rollout, "baseline", s.Baseline, "canary", s.Canary)
		case j.Spec().Baseline != s.Baseline || j.Spec().Canary != s.Canary:
			d.endRelease(j, "superseded", fmt.Sprintf("superseded by %s → %s", s.Baseline, s.Canary), now)
			d.judges[s.Rollout] = d.newJudge(s)
			delete(d.specErrs, s.Rollout)
			d.cfg.Logger.Info("spec reload: new release", "rollout", s.Rollout, "baseline", s.Baseline, "canary", s.Canary,
				"previous_canary", j.Spec().Canary, "previous_final", j.Final())
		default:
			if err := j.Edit(s); err != nil {
				refused++
				d.specErrs[s.Rollout] = "edit not applied: " + err.Error()
				d.cfg.Metrics.GetOrCreateCounter(`canaryd_spec_edits_refused_total`).Inc()
				d.cfg.Logger.Error("spec reload: edit refused; the rollout goes on with its spec", "rollout", s.Rollout, "err", err)
				continue
			}
			delete(d.specErrs, s.Rollout)
			delete(d.saved, s.Rollout) // checkpoint the judge under its new spec
		}
	}
	for id := range d.autoSpecs {
		if !keep[id] {
			delete(d.autoSpecs, id)
		}
	}
	for id, j := range d.judges {
		if !keep[id] {
			d.endRelease(j, "removed", "removed from the specs", now)
			delete(d.judges, id)
			delete(d.fileSpecs, id)
			delete(d.specErrs, id)
			d.cfg.Logger.Info("spec reload: rollout removed", "rollout", id)
		}
	}
	return refused
}

// applyAuto puts a canary: auto template in force: the running release
// goes on under the template's other settings (as an edit), or ends as
// superseded when the baseline changed (the next new version starts the
// next release). Called with d.mu held.
func (d *Daemon) applyAuto(tpl detector.Spec, j *detector.Judge) {
	d.autoSpecs[tpl.Rollout] = tpl
	d.watchGate(tpl.Rollout)
	switch {
	case j == nil:
		d.cfg.Logger.Info("spec reload: canary: auto rollout", "rollout", tpl.Rollout, "baseline", tpl.Baseline)
	case j.Spec().Baseline != tpl.Baseline:
		d.endRelease(j, "superseded", "superseded: the baseline is now "+tpl.Baseline, time.Now().UTC())
		delete(d.judges, tpl.Rollout)
		delete(d.specErrs, tpl.Rollout)
	default:
		if err := j.Edit(tpl.Release(j.Spec().Canary)); err != nil {
			d.specErrs[tpl.Rollout] = "edit not applied: " + err.Error()
			d.cfg.Logger.Error("spec reload: edit refused; the release goes on with its spec", "rollout", tpl.Rollout, "err", err)
			return
		}
		delete(d.specErrs, tpl.Rollout)
	}
}

// newJudge returns the judge of a new release, its seq continuing after the
// rollout's commands on the control topic. Called with d.mu held.
func (d *Daemon) newJudge(s detector.Spec) *detector.Judge {
	j := detector.NewJudge(s)
	j.SetSeqBase(d.seqBase(s))
	if d.acks != nil && d.acks.hasRouters(s.Rollout) {
		j.ExpectAcks() // its routers acknowledge: each step waits for them
	}
	d.watchGate(s.Rollout)
	delete(d.saved, s.Rollout)
	return j
}

// endRelease records how a release ended for its rollout's status: its
// final verdict if it had one, else why the specs ended it. Called with
// d.mu held.
func (d *Daemon) endRelease(j *detector.Judge, why, reason string, at time.Time) {
	st := j.Status()
	r := detector.Release{Baseline: st.Baseline, Canary: st.Canary, Final: st.Final, Step: st.Step, Weight: st.Weight, Reason: st.Verdict.Reason, EndedAt: st.Verdict.At}
	if r.Final == "" {
		r.Final, r.Reason, r.EndedAt = why, reason, at
	}
	prev := append(d.previous[st.Rollout], r)
	if len(prev) > maxPrevious {
		prev = slices.Delete(prev, 0, len(prev)-maxPrevious)
	}
	d.previous[st.Rollout] = prev
}

// decorate adds what the daemon knows of a rollout beyond its judge: spec
// errors and earlier releases. Called with d.mu held.
func (d *Daemon) decorate(st *detector.Status) {
	st.Previous = d.previous[st.Rollout]
	if d.acks != nil {
		st.Routers = d.acks.routers(st.Rollout, time.Now()) // acks.mu after d.mu
	}
	switch {
	case d.fileErr != "":
		st.SpecError = "spec files invalid, the last valid specs stay in force: " + d.fileErr
	case d.specErrs[st.Rollout] != "":
		st.SpecError = d.specErrs[st.Rollout]
	}
}

// specsFingerprint hashes the contents of a spec file, or of every file in
// a spec directory (following symlinks: a ConfigMap volume swaps its
// ..data symlink, which changes what the files' symlinks read).
func specsFingerprint(path string) ([32]byte, error) {
	h := sha256.New()
	fi, err := os.Stat(path)
	if err != nil {
		return [32]byte{}, err
	}
	files := []string{path}
	if fi.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			return [32]byte{}, err
		}
		files = files[:0]
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	var errs []error
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.IsDir() {
			continue // dangling symlinks (editor locks), subdirectories
		}
		fh, err := os.Open(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(h, "%s\x00", filepath.Base(f))
		_, err = io.Copy(h, fh)
		fh.Close()
		errs = append(errs, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, errors.Join(errs...)
}
