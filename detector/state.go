package detector

import (
	"bytes"
	"crypto/sha256"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// StateVersion is the version of MarshalState's encoding. States of versions
// oldestStateVersion to StateVersion are restored; a state of another
// version, or of another spec, is not (that judge starts afresh). A fixture
// of each version is kept under testdata/ (TestJudgeStateFixtures).
// (A state written when ERise started a component every 16 units of
// information restores as it is: when the components not yet started will
// start is a function of the counts, fixed before their data, whatever it is.)
//
// Version 2: Wall and StepWall, the wall clock of the newest window and of
// the step's start. A version 1 state restores with both 0: the current
// step's minimum duration is then held in event time only, the next step's
// in both.
//
// Version 3: the per-segment halves of the rollback tests (SegErr,
// SegLat; segments.go). A version 1 or 2 state restores with them empty:
// they start at the restore.
//
// Version 4: SRMUnits, what the SRM check counts (sessions first seen,
// session summaries or requests; sticky), and aggregates in window.Agg's
// encoding version 3 (NewSessions). A version 1 to 3 state restores its
// units as session summaries when SRMSessions is set, else requests when
// the check counted any. Also SegTotal, the per-segment totals of the
// status (Segments), and the change-point components' starts and the totals
// before them (Onset): a version 1 to 3 state restores with per-segment
// totals that count from the restore, and components whose onset is unknown
// (evidence from them keeps the whole release's bounds).
const StateVersion = 4

// oldestStateVersion is the oldest state version UnmarshalState reads.
const oldestStateVersion = 1

// ErrStateMismatch: the state was written for another spec or version.
var ErrStateMismatch = errors.New("judge state does not match")

// judgeState mirrors every field of Judge that observing windows changes,
// with exported fields for gob. A field added to Judge or to one of its
// tests must be added here too: TestJudgeStateRoundTrip fails otherwise
// (it compares verdicts after a restore with an uninterrupted judge's).
type judgeState struct {
	Version   int
	SpecHash  [32]byte
	Step      int
	StepStart int64
	StepWall  int64 // from version 2
	Final     string
	Now       int64
	Wall      int64 // from version 2
	Windows   int

	RbErr, StepErr, Incidents condState
	SegErr                    segMixState    // absent in older states: the segment tests start afresh
	SegLat                    []segMixState  // j.lat order
	Rates                     [][2]condState // j.rates order (fixed by the spec)
	Lat                       [][2]condState
	Means                     [][2]meanState
	ToolMix, ErrMix, Bigrams  catState
	SRM                       SRM
	SRMSessions               bool   // up to version 3: the SRM check counted session summaries
	SRMUnits                  string // from version 4: what the SRM check counts (srmUnits*)
	SloErr, SloLat            Bernoulli

	BaseLat                []segAgg
	Total, Phase, Sessions map[string]*window.Agg
	PhaseSess              map[string]*window.Agg // absent in older states: the step's sessions count from the restore
	SegTotal               map[string]*window.Agg // absent in older states: the per-segment status counts from the restore
	ErrorTypes             []string
	BigramNames            []string
	Last                   []byte // JSON of the last Verdict (NaN-safe)
	Seen                   map[string]int64

	// Operator controls (controls.go); absent (zero) in older states.
	Paused   bool
	Approved int // 1 + the step approved, 0 none
	Attempt  int
	Audit    []OpRecord

	// Judge mode (judgemode.go); absent (zero) in older states, which
	// were all of drive mode.
	Declared  int // 1 + the declared weight, 0 none
	WSource   string
	Passed    int // 1 + the step whose gate opened, 0 none
	PassedWhy string
	// Acknowledgements (applied.go); absent (zero) in older states.
	ExpectAcks  bool
	AppliedStep int // 1 + the step routers acknowledged, 0 none
}

type condState struct {
	LogL           []float64
	Strata         int
	NB, XB, NC, XC uint64
	Rise           riseState // change-point components (conditional.go)
}

type meanState struct {
	Margin, S, T, NB, NC, SumB, SumC, SqB, SqC, Dir float64
}

type catState struct {
	Order  []string
	Cats   []condState
	NB, NC uint64 // 0 in older states
}

type segAgg struct {
	Kind uint8
	Name string
	Agg  *window.Agg
}

func (c *Conditional) state() condState {
	return condState{LogL: c.logL[:], Strata: c.strata, NB: c.NB, XB: c.XB, NC: c.NC, XC: c.XC, Rise: c.riseState()}
}

func (c *Conditional) setState(s condState) error {
	if len(s.LogL) != gridLen {
		return fmt.Errorf("%w: grid of %d points, want %d", ErrStateMismatch, len(s.LogL), gridLen)
	}
	copy(c.logL[:], s.LogL)
	c.strata, c.NB, c.XB, c.NC, c.XC = s.Strata, s.NB, s.XB, s.NC, s.XC
	return c.setRiseState(s.Rise)
}

func (m *MeanTest) state() meanState {
	return meanState{m.Margin, m.S, m.T, m.NB, m.NC, m.SumB, m.SumC, m.SqB, m.SqC, m.dir}
}

func (m *MeanTest) setState(s meanState) {
	*m = MeanTest{Margin: s.Margin, S: s.S, T: s.T, NB: s.NB, NC: s.NC, SumB: s.SumB, SumC: s.SumC, SqB: s.SqB, SqC: s.SqC, dir: s.Dir}
}

func (c *Categorical) state() catState {
	s := catState{Order: c.order, NB: c.NB, NC: c.NC}
	for _, n := range c.order {
		s.Cats = append(s.Cats, c.cats[n].state())
	}
	return s
}

func (c *Categorical) setState(s catState) error {
	if len(s.Order) != len(s.Cats) {
		return fmt.Errorf("%w: categorical with %d names and %d tests", ErrStateMismatch, len(s.Order), len(s.Cats))
	}
	*c = Categorical{NB: s.NB, NC: s.NC}
	if len(s.Order) == 0 {
		return nil
	}
	c.cats = make(map[string]*Conditional, len(s.Order))
	c.order = s.Order
	for i, n := range s.Order {
		t := &Conditional{}
		if err := t.setState(s.Cats[i]); err != nil {
			return err
		}
		c.cats[n] = t
		if s.NB == 0 { // an older state: the first category's totals stand in
			c.NB, c.NC = max(c.NB, t.NB), max(c.NC, t.NC)
		}
	}
	return nil
}

// specHash identifies a spec: state is restored only into the spec it was
// gathered under (steps, margins and alpha shape every test).
func specHash(s Spec) [32]byte {
	s.File, s.Line = "", 0 // where it was read from is not what it says
	b, err := json.Marshal(s)
	if err != nil {
		panic("BUG: spec does not marshal: " + err.Error())
	}
	return sha256.Sum256(b)
}

// MarshalState encodes the judge's whole sequential state: restoring it with
// UnmarshalState into a judge of the same spec, then observing the same
// windows, yields the same verdicts and commands as a judge that never
// stopped.
func (j *Judge) MarshalState() ([]byte, error) {
	last, err := json.Marshal(j.last)
	if err != nil {
		return nil, err
	}
	st := judgeState{
		Version: StateVersion, SpecHash: j.specHash, Step: j.step, StepStart: j.stepStart, StepWall: j.stepWall, Final: string(j.final),
		Now: j.now, Wall: j.wall, Windows: j.windows,
		RbErr: j.rbErr.state(), StepErr: j.stepErr.state(), Incidents: j.incidents.state(), SegErr: j.segErr.state(),
		ToolMix: j.toolMix.state(), ErrMix: j.errMix.state(), Bigrams: j.bigrams.state(),
		SRM: j.srm, SRMSessions: j.srmUnits == srmUnitsSummaries, SRMUnits: j.srmUnits, SloErr: j.sloErr, SloLat: j.sloLat,
		Total: j.total, Phase: j.phase, Sessions: j.sessions, PhaseSess: j.phaseSess, SegTotal: j.segTotal, ErrorTypes: j.errorTypes, BigramNames: j.bigramNames,
		Last: last, Seen: j.seen,
		Paused: j.paused, Approved: j.approved + 1, Attempt: j.attempt, Audit: j.audit,
		Declared: j.declared + 1, WSource: j.wsource, Passed: j.passed + 1, PassedWhy: j.passedWhy,
		ExpectAcks: j.expectAcks, AppliedStep: j.appliedStep + 1,
	}
	for _, r := range j.rates {
		st.Rates = append(st.Rates, [2]condState{r.rb.state(), r.ni.state()})
	}
	for _, q := range j.lat {
		st.Lat = append(st.Lat, [2]condState{q.rb.state(), q.ni.state()})
		st.SegLat = append(st.SegLat, q.seg.state())
	}
	for _, m := range j.means {
		st.Means = append(st.Means, [2]meanState{m.rb.state(), m.ni.state()})
	}
	for seg, a := range j.baseLat {
		st.BaseLat = append(st.BaseLat, segAgg{Kind: uint8(seg.Kind), Name: seg.Name, Agg: a})
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&st); err != nil {
		return nil, fmt.Errorf("encode judge state: %w", err)
	}
	return buf.Bytes(), nil
}

// UnmarshalState replaces the judge's state with one MarshalState wrote. It
// fails, leaving the judge unchanged, when the state does not decode or was
// written for another spec (ErrStateMismatch).
func (j *Judge) UnmarshalState(b []byte) error {
	var st judgeState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return fmt.Errorf("decode judge state: %w", err)
	}
	if st.Version < oldestStateVersion || st.Version > StateVersion {
		return fmt.Errorf("%w: version %d, this canaryd reads %d to %d", ErrStateMismatch, st.Version, oldestStateVersion, StateVersion)
	}
	if st.SpecHash != j.specHash {
		return fmt.Errorf("%w: the spec of rollout %s changed since the state was saved", ErrStateMismatch, j.spec.Rollout)
	}
	if len(st.Rates) != len(j.rates) || len(st.Lat) != len(j.lat) || len(st.Means) != len(j.means) {
		return fmt.Errorf("%w: test counts differ", ErrStateMismatch)
	}
	n := NewJudge(j.spec) // fill a fresh judge: j stays as it was on error
	n.step, n.stepStart, n.final, n.now, n.windows = st.Step, st.StepStart, schemas.Action(st.Final), st.Now, st.Windows
	n.stepWall, n.wall = st.StepWall, st.Wall // 0 in a version 1 state
	n.paused, n.approved, n.attempt, n.audit = st.Paused, st.Approved-1, st.Attempt, st.Audit
	n.declared, n.wsource, n.passed, n.passedWhy = st.Declared-1, st.WSource, st.Passed-1, st.PassedWhy
	n.expectAcks, n.appliedStep = st.ExpectAcks, st.AppliedStep-1
	errs := []error{n.rbErr.setState(st.RbErr), n.stepErr.setState(st.StepErr), n.incidents.setState(st.Incidents),
		n.toolMix.setState(st.ToolMix), n.errMix.setState(st.ErrMix), n.bigrams.setState(st.Bigrams)}
	for i, r := range n.rates {
		errs = append(errs, r.rb.setState(st.Rates[i][0]), r.ni.setState(st.Rates[i][1]))
	}
	errs = append(errs, n.segErr.setState(st.SegErr))
	for i, q := range n.lat {
		errs = append(errs, q.rb.setState(st.Lat[i][0]), q.ni.setState(st.Lat[i][1]))
		if i < len(st.SegLat) { // absent in older states: the segment tests start afresh
			errs = append(errs, q.seg.setState(st.SegLat[i]))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i, m := range n.means {
		m.rb.setState(st.Means[i][0])
		m.ni.setState(st.Means[i][1])
	}
	n.srm, n.srmUnits, n.sloErr, n.sloLat = st.SRM, st.SRMUnits, st.SloErr, st.SloLat
	if st.Version < 4 {
		// Before version 4 the check counted session summaries in windows
		// that had one, requests in the others.
		switch {
		case st.SRMSessions:
			n.srmUnits = srmUnitsSummaries
		case st.SRM.XB+st.SRM.XC > 0:
			n.srmUnits = srmUnitsRequests
		}
	}
	for _, s := range st.BaseLat {
		n.baseLat[window.Segment{Kind: schemas.Kind(s.Kind), Name: s.Name}] = s.Agg
	}
	// gob decodes an empty map as nil; NewJudge's empty maps stay then.
	if st.Total != nil {
		n.total = st.Total
	}
	if st.SegTotal != nil {
		n.segTotal = st.SegTotal
	}
	if st.Phase != nil {
		n.phase = st.Phase
	}
	if st.Sessions != nil {
		n.sessions = st.Sessions
	}
	if st.PhaseSess != nil {
		n.phaseSess = st.PhaseSess
	}
	n.errorTypes, n.bigramNames = st.ErrorTypes, st.BigramNames
	if err := json.Unmarshal(st.Last, &n.last); err != nil {
		return fmt.Errorf("decode judge state: last verdict: %w", err)
	}
	if st.Seen != nil {
		n.seen = st.Seen
	}
	*j = *n
	return nil
}

// seenKey names the source partition of a closed window.
func seenKey(c window.Closed) string {
	return c.Source + "/" + strconv.Itoa(int(c.Partition))
}

// Observed returns how many windows the judge has observed: its state needs
// checkpointing when this moved since the last checkpoint.
func (j *Judge) Observed() int { return j.windows }

// Digest returns a fingerprint of a version's whole-rollout aggregates (the
// request and the session ones: counts, sums and latency sketches, bit for
// bit): two judges with equal digests judged exactly the same events. Error
// types and bigrams enter by name, not by the judge's numbering of them,
// which follows the order their first windows arrived in.
func (j *Judge) Digest(version string) string {
	h := sha256.New()
	for _, m := range []map[string]*window.Agg{j.total, j.sessions} {
		if a := m[version]; a != nil {
			b := *a
			b.ErrorTypes, b.Bigrams = nil, nil
			h.Write(b.AppendBinary(nil))
			for _, c := range []struct {
				names  []string
				counts []uint64
			}{{j.errorTypes, a.ErrorTypes}, {j.bigramNames, a.Bigrams}} {
				byName := make([]string, 0, len(c.counts))
				for i, n := range c.counts {
					if n > 0 && i < len(c.names) {
						byName = append(byName, c.names[i]+"="+strconv.FormatUint(n, 10))
					}
				}
				slices.Sort(byName)
				h.Write([]byte(strings.Join(byName, "\x00")))
				h.Write([]byte{1})
			}
		}
		h.Write([]byte{0})
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:12])
}

// SourceCount returns how many source partitions the judge has observed
// windows from.
func (j *Judge) SourceCount() int { return len(j.seen) }

// Sources returns the source partitions ("topic/partition") the judge has
// observed windows from, sorted.
func (j *Judge) Sources() []string {
	out := make([]string, 0, len(j.seen))
	for k := range j.seen {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// LastVerdictAt returns the event time of the latest verdict (for a final
// one: when the rollout ended).
func (j *Judge) LastVerdictAt() time.Time { return j.last.At }
