package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
)

// OTLP ingestion: what the OpenTelemetry Collector's Kafka exporter writes
// (ExportTraceServiceRequest / ExportLogsServiceRequest, in protobuf or
// OTLP/JSON) decoded straight into schemas.Event without building pdata
// objects. otlp.md beside this file is the mapping table and the reasons
// behind it; otlp_proto.go and otlp_json.go are the two wire formats, this
// file the config and the mapping they share.
//
// Metrics (on OTLPConfig.Metrics; signal is "spans" or "logs"):
//
//	canaryd_otlp_skipped_total{signal,reason}         spans/log records not emitted: a value out of range
//	canaryd_otlp_ignored_total{signal}                spans (GenAIOnly) / log records (not evaluation results) not mapped
//	canaryd_otlp_unattributed_total{signal,field}     events emitted under OTLPConfig.Unknown (field rollout|version)
//	canaryd_otlp_resolved_total{signal,field,rule}   events emitted, by the rule that resolved their rollout/version
//	                                                  (rule: the attribute key, "trace" for a trace join, "none"); otlprules.go
//	canaryd_otlp_trace_joins_total{result}            logs with OTLPConfig.Traces: evaluation records looked up by trace
//	                                                  (result joined|unknown_trace|no_trace_id)

// OTLP encodings, as the Collector's Kafka exporter names them in its
// `encoding` setting.
const (
	EncodingOTLPProto = "otlp_proto" // the exporter's default
	EncodingOTLPJSON  = "otlp_json"
)

// Limits of the OTLP decoders, beyond those of schemas.
const (
	// MaxOTLPRecordBytes: larger records are refused before parsing. The
	// Collector's Kafka exporter batches many spans into one record (its
	// producer default max_message_bytes is 1 MB), so the bound is larger
	// than schemas.MaxRecordBytes.
	MaxOTLPRecordBytes = 16 << 20
	// MaxOTLPEvents bounds the events one record may yield (they are held
	// until the whole record has parsed, so that a bad record emits nothing).
	MaxOTLPEvents = 1 << 16
	// maxOTLPRules bounds each rule list (presence is a bit in a uint64).
	maxOTLPRules = 64
	// maxRuleKeyBytes bounds an attribute key named in a rule.
	maxRuleKeyBytes = 255
	// maxOTLPDepth bounds nesting of skipped protobuf groups and JSON values.
	maxOTLPDepth = 100
)

// OTLPConfig configures OTLPTraces and OTLPLogs. The zero value decodes
// otlp_proto with the default rules.
type OTLPConfig struct {
	// Encoding is EncodingOTLPProto (default when empty) or EncodingOTLPJSON.
	Encoding string
	// Rules resolve each event's rollout and version (see OTLPRules and
	// otlp.md, "Rollout and version"); the decoders load them once per
	// record, so Store on the RulesRef changes them while the decoders run.
	// Give the same RulesRef to the spans and logs decoders. Default nil:
	// the rules of Rollout and Version below.
	Rules *RulesRef
	// Rollout and Version, when Rules is nil, are shorthands for rules that
	// look each key up in the span's (log record's) attributes, then in its
	// resource's (FromAny), first match wins. An empty list means the
	// field's default rules (DefaultOTLPRules). Not allowed with Rules.
	Rollout []string
	Version []string
	// Unknown is the rollout or version of an event whose rules all failed.
	// Default "unknown".
	Unknown string
	// GenAIOnly drops spans that carry no GenAI, OpenInference or OpenLLMetry
	// attribute (counted as ignored) instead of emitting them as kind other.
	// Default false.
	GenAIOnly bool
	// Traces, when set, joins evaluation results to the version they judge
	// through their trace: OTLPTraces puts the rollout and version of each
	// trace's spans in it, and OTLPLogs looks up, by the record's trace id,
	// the records whose version its rules cannot resolve (then rollout and
	// version both come from the trace). Give the same index to both, one per
	// process. An evaluation whose trace is not in it stays Unknown. Default
	// nil: no join.
	Traces *TraceIndex
	// TraceFirst (OTLPLogs with Traces) looks the trace up first, and applies
	// the rules only when the trace is unknown: for evaluators that run as a
	// service of their own, whose resource names the evaluator's version.
	// Default false.
	TraceFirst bool
	// Metrics receives the decoders' counters; nil means none.
	Metrics *metrics.Set
}

// DefaultOTLPConfig returns the default configuration: otlp_proto, the
// default rules (Rules, Rollout and Version nil), Unknown "unknown".
func DefaultOTLPConfig() OTLPConfig {
	return OTLPConfig{Encoding: EncodingOTLPProto, Unknown: "unknown"}
}

// withDefaults fills the empty fields of c from DefaultOTLPConfig.
func (c OTLPConfig) withDefaults() OTLPConfig {
	def := DefaultOTLPConfig()
	if c.Encoding == "" {
		c.Encoding = def.Encoding
	}
	if c.Unknown == "" {
		c.Unknown = def.Unknown
	}
	return c
}

// Validate reports whether c (with its defaults filled in) is usable: a
// known encoding, Rules or Rollout/Version but not both, rules that
// NewOTLPRules accepts (at most 64 keys per list, keys non-empty and at
// most 255 bytes), Unknown valid UTF-8 of at most schemas.MaxStringBytes.
func (c OTLPConfig) Validate() error {
	c = c.withDefaults()
	if c.Encoding != EncodingOTLPProto && c.Encoding != EncodingOTLPJSON {
		return fmt.Errorf("stream: OTLP encoding %q: want %s or %s", c.Encoding, EncodingOTLPProto, EncodingOTLPJSON)
	}
	if c.Rules != nil && len(c.Rollout)+len(c.Version) > 0 {
		return errors.New("stream: OTLP Rules and Rollout/Version given: set one")
	}
	if _, err := c.rules(); err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	if len(c.Unknown) > schemas.MaxStringBytes || !utf8.ValidString(c.Unknown) {
		return errors.New("stream: OTLP Unknown: longer than schemas.MaxStringBytes or not UTF-8")
	}
	return nil
}

// rules returns the RulesRef the decoders read: Rules, or a new one holding
// the rules of Rollout and Version.
func (c OTLPConfig) rules() (*RulesRef, error) {
	if c.Rules != nil {
		return c.Rules, nil
	}
	if len(c.Rollout)+len(c.Version) == 0 {
		return NewRulesRef(nil), nil
	}
	var fields [numFields]FieldRules
	for f, keys := range [numFields][]string{c.Rollout, c.Version} {
		for _, k := range keys {
			if slices.ContainsFunc(fields[f].Keys, func(rk RuleKey) bool { return rk.Key == k }) {
				continue // a key listed twice keeps its first place
			}
			fields[f].Keys = append(fields[f].Keys, RuleKey{Key: k})
		}
	}
	r, err := compileRules("", fields)
	if err != nil {
		return nil, err
	}
	return NewRulesRef(r), nil
}

// OTLPTraces returns the NewDecoder of OTLP trace records (one
// ExportTraceServiceRequest per Kafka record, as the Collector's Kafka
// exporter writes to its otlp_spans topic). Each span becomes one event;
// each gen_ai.evaluation.result span event one more, of kind eval. See
// otlp.md for the mapping. It panics if cfg.Validate fails: validate
// configuration from flags or files with it first.
func OTLPTraces(cfg OTLPConfig) NewDecoder { return newOTLP(cfg, false) }

// OTLPLogs returns the NewDecoder of OTLP log records (one
// ExportLogsServiceRequest per Kafka record, the otlp_logs topic). Only
// gen_ai.evaluation.result events become events (kind eval, with their
// outcome); other log records are ignored. It panics if cfg.Validate fails.
func OTLPLogs(cfg OTLPConfig) NewDecoder { return newOTLP(cfg, true) }

func newOTLP(cfg OTLPConfig, logs bool) NewDecoder {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults()
	rules, _ := cfg.rules() // checked by Validate
	set := cfg.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	signal := "spans"
	if logs {
		signal = "logs"
	}
	c := &otlpShared{
		json:      cfg.Encoding == EncodingOTLPJSON,
		logs:      logs,
		genAIOnly: cfg.GenAIOnly,
		unknown:   []byte(cfg.Unknown),
		rules:     rules,
		traces:    cfg.Traces,
		set:       set,
		signal:    signal,
	}
	c.traceFirst = logs && cfg.Traces != nil && cfg.TraceFirst
	c.enc = EncodingOTLPProto
	if c.json {
		c.enc = EncodingOTLPJSON
	}
	c.resItem, c.scopeItem = "resource_spans", "scope_spans"
	if logs {
		c.resItem, c.scopeItem = "resource_logs", "scope_logs"
	}
	// The counters of the initial rules exist (at 0) before the first record.
	newOTLPDecoder(c).useRules(rules.Load())
	for r := range numSkips {
		c.skipped[r] = set.GetOrCreateCounter(`canaryd_otlp_skipped_total{signal="` + signal + `",reason="` + skipNames[r] + `"}`)
	}
	c.ignored = set.GetOrCreateCounter(`canaryd_otlp_ignored_total{signal="` + signal + `"}`)
	c.unattributed[0] = set.GetOrCreateCounter(`canaryd_otlp_unattributed_total{signal="` + signal + `",field="rollout"}`)
	c.unattributed[1] = set.GetOrCreateCounter(`canaryd_otlp_unattributed_total{signal="` + signal + `",field="version"}`)
	if logs && cfg.Traces != nil {
		for j := range numJoins {
			c.joins[j] = set.GetOrCreateCounter(`canaryd_otlp_trace_joins_total{result="` + joinNames[j] + `"}`)
		}
	}
	return func() Decoder { return newOTLPDecoder(c) }
}

// otlpShared is what every partition's decoder of one topic shares; it is
// immutable after newOTLP but for the counters, which are atomic.
type otlpShared struct {
	enc                string
	resItem, scopeItem string // field names in errors: resource_spans, scope_spans or …_logs
	json, logs         bool
	genAIOnly          bool
	unknown            []byte
	rules              *RulesRef   // loaded once per record
	traces             *TraceIndex // shared by every decoder of the process; nil: no join
	traceFirst         bool
	set                *metrics.Set
	signal             string // "spans" or "logs"

	skipped      [numSkips]*metrics.Counter
	ignored      *metrics.Counter
	unattributed [2]*metrics.Counter
	joins        [numJoins]*metrics.Counter
}

// join is the outcome of looking an evaluation record's trace up.
type join uint8

const (
	joinJoined join = iota
	joinUnknownTrace
	joinNoTraceID
	numJoins
)

var joinNames = [numJoins]string{"joined", "unknown_trace", "no_trace_id"}

// keyTable is an open-addressing hash table of the attribute keys the
// mapping reads. Most keys of a real span are not in it; hashing only the
// length and the last 8 bytes, with the table at most 1/4 full, answers
// those in one probe, about three times faster than a Go map here.
type keyTable struct {
	slots []keySlot
	shift uint
}

type keySlot struct {
	key  string
	info keyInfo
}

func newKeyTable(keys map[string]keyInfo) keyTable {
	bits := uint(4)
	for 1<<bits < 4*len(keys) {
		bits++
	}
	t := keyTable{slots: make([]keySlot, 1<<bits), shift: 64 - bits}
	mask := uint64(len(t.slots) - 1)
	// In a fixed order, so that the probe chains (and the decoders' speed)
	// do not change from one process to the next.
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		ki := keys[k]
		i := keyHash([]byte(k)) >> t.shift
		for t.slots[i].key != "" {
			i = (i + 1) & mask
		}
		t.slots[i] = keySlot{key: k, info: ki}
	}
	return t
}

func keyHash(b []byte) uint64 {
	var w uint64
	if n := len(b); n >= 8 {
		w = binary.LittleEndian.Uint64(b[n-8:])
	} else {
		for _, c := range b {
			w = w<<8 | uint64(c)
		}
	}
	return (w ^ uint64(len(b))*0x9e3779b97f4a7c15) * 0xff51afd7ed558ccd
}

func (t *keyTable) lookup(key []byte) (keyInfo, bool) {
	if len(key) == 0 || len(key) > maxRuleKeyBytes {
		return keyInfo{}, false
	}
	mask := uint64(len(t.slots) - 1)
	for i := keyHash(key) >> t.shift; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.key == "" {
			return keyInfo{}, false
		}
		if s.key == string(key) {
			return s.info, true
		}
	}
}

// keyInfo is what one attribute key feeds: a known attribute (id, 0 for
// none), a rollout rule and a version rule (f: their index, -1 for none).
type keyInfo struct {
	id attrID
	f  [numFields]int8
}

// attrID names an attribute the mapping reads. Zero is none.
type attrID uint8

const (
	_ attrID = iota
	aOperation
	aToolName
	aRequestModel
	aResponseModel
	aProvider
	aSystem
	aInputTokens
	aOutputTokens
	aPromptTokens
	aCompletionTokens
	aConversation
	aAgentName
	aErrorType
	aOISpanKind
	aOIPromptTokens
	aOICompletionTokens
	aOICost
	aOIToolName
	aOISession
	aOIModel
	aOIAgentName
	aTLSpanKind
	aTLEntityName
	aTLRequestType
	aEvalName
	aEvalScore
	aEvalLabel
	aEventName
	aExceptionType
	numAttrIDs
)

var _ [64 - numAttrIDs]struct{} // attrTab.has has one bit per attrID

var knownKeys = map[string]attrID{
	"gen_ai.operation.name":          aOperation,
	"gen_ai.tool.name":               aToolName,
	"gen_ai.request.model":           aRequestModel,
	"gen_ai.response.model":          aResponseModel,
	"gen_ai.provider.name":           aProvider,
	"gen_ai.system":                  aSystem,
	"gen_ai.usage.input_tokens":      aInputTokens,
	"gen_ai.usage.output_tokens":     aOutputTokens,
	"gen_ai.usage.prompt_tokens":     aPromptTokens,
	"gen_ai.usage.completion_tokens": aCompletionTokens,
	"gen_ai.conversation.id":         aConversation,
	"gen_ai.agent.name":              aAgentName,
	"error.type":                     aErrorType,
	"openinference.span.kind":        aOISpanKind,
	"llm.token_count.prompt":         aOIPromptTokens,
	"llm.token_count.completion":     aOICompletionTokens,
	"llm.cost.total":                 aOICost,
	"tool.name":                      aOIToolName,
	"session.id":                     aOISession,
	"llm.model_name":                 aOIModel,
	"agent.name":                     aOIAgentName,
	"traceloop.span.kind":            aTLSpanKind,
	"traceloop.entity.name":          aTLEntityName,
	"llm.request.type":               aTLRequestType,
	"gen_ai.evaluation.name":         aEvalName,
	"gen_ai.evaluation.score.value":  aEvalScore,
	"gen_ai.evaluation.score.label":  aEvalLabel,
	"event.name":                     aEventName,
	"exception.type":                 aExceptionType,
}

// Names of span events and log events the mapping reads.
const (
	evalEventName      = "gen_ai.evaluation.result"
	exceptionEventName = "exception"
)

// skip is why a span or log record was not emitted.
type skip uint8

const (
	skipNoTime skip = iota
	skipTimeRange
	skipEndBeforeStart
	skipDuration
	skipTokens
	skipCost
	skipScore
	skipUTF8
	numSkips
)

var skipNames = [numSkips]string{
	skipNoTime:         "no_time",
	skipTimeRange:      "time_out_of_range",
	skipEndBeforeStart: "end_before_start",
	skipDuration:       "duration_too_long",
	skipTokens:         "invalid_tokens",
	skipCost:           "invalid_cost",
	skipScore:          "invalid_score",
	skipUTF8:           "invalid_utf8",
}

const noSkip = numSkips

// valType is the type of an attribute value (OTLP AnyValue).
type valType uint8

const (
	vNone   valType = iota // absent or empty
	vStr                   // s
	vBool                  // n is 0 or 1
	vInt                   // n is the int64
	vDouble                // n is the float64's bits
	vOther                 // array, kvlist or bytes: never mapped
)

// anyVal is an attribute value. s points into the record or the decoder's
// arena.
type anyVal struct {
	s []byte
	n uint64
	t valType
}

// attrTab holds the attributes of one span, log record, span event or
// resource that the mapping reads. Presence is a bit, so reset is O(1).
type attrTab struct {
	has   uint64            // 1<<attrID
	fHas  [numFields]uint64 // per field (rollout, version): 1<<rule index
	known [numAttrIDs]anyVal
	fv    [numFields][]anyVal // per field, by rule index (sized by useRules)
}

func (t *attrTab) reset() { t.has, t.fHas = 0, [numFields]uint64{} }

// set records v under what ki names. The first of duplicate keys wins, as
// pdata's Map.Get finds it.
func (t *attrTab) set(ki keyInfo, v anyVal) {
	if v.t == vNone {
		return
	}
	if ki.id != 0 && t.has&(1<<ki.id) == 0 {
		t.has |= 1 << ki.id
		t.known[ki.id] = v
	}
	for f, i := range ki.f {
		if i >= 0 && t.fHas[f]&(1<<i) == 0 {
			t.fHas[f] |= 1 << i
			t.fv[f][i] = v
		}
	}
}

func (t *attrTab) present(id attrID) bool { return t.has&(1<<id) != 0 }

// str returns the non-empty string value of id.
func (t *attrTab) str(id attrID) ([]byte, bool) {
	if t.has&(1<<id) == 0 || t.known[id].t != vStr || len(t.known[id].s) == 0 {
		return nil, false
	}
	return t.known[id].s, true
}

// spanState is one span being parsed.
type spanState struct {
	traceID, spanID, parentID []byte // lower-case hex, nil when absent
	name                      []byte
	start, end                uint64
	code                      uint64 // status code: 2 is ERROR
	excType                   []byte // exception.type of the first exception event
	attrs                     attrTab
	evals                     []evalData // gen_ai.evaluation.result span events
}

func (sp *spanState) reset() {
	sp.traceID, sp.spanID, sp.parentID, sp.name, sp.excType = nil, nil, nil, nil, nil
	sp.start, sp.end, sp.code = 0, 0, 0
	sp.attrs.reset()
	sp.evals = sp.evals[:0]
}

// evalData is a gen_ai.evaluation.result span event, kept until its span
// has been read whole.
type evalData struct {
	ts                 uint64
	name, label, errTy []byte
	score              anyVal
	hasScore           bool
}

// logState is one log record being parsed.
type logState struct {
	traceID, spanID []byte
	eventName       []byte
	time, observed  uint64
	attrs           attrTab
}

func (lr *logState) reset() {
	lr.traceID, lr.spanID, lr.eventName = nil, nil, nil
	lr.time, lr.observed = 0, 0
	lr.attrs.reset()
}

// otlpDecoder decodes the records of one partition. It parses a whole record
// into evs before emitting any, so that a malformed record emits nothing.
type otlpDecoder struct {
	c     *otlpShared
	rs    *OTLPRules // the rules of the current record
	evs   []schemas.Event
	arena []byte // hex ids, unescaped JSON strings, formatted numbers

	res   attrTab // the current resource's attributes
	sp    spanState
	evTab attrTab // the current span event's attributes
	lr    logState

	js      jsonScan
	pending []int // JSON: offsets of scope lists seen before their resource

	// Per-record counts, added to the counters when the record is accepted.
	skipped      [numSkips]int
	ignored      int
	unattributed [2]int
	joins        [numJoins]int
	resolved     [numFields][numRuleSlots]int // by rule index, ruleTrace, ruleNone; zeroed by flushResolved

	resolvedC [numFields][numRuleSlots]*metrics.Counter // of rs (nil for slots no event can reach)
	reCache   [8]reEntry                                // regex rules' results (rs)
}

var _ Decoder = (*otlpDecoder)(nil)

// newOTLPDecoder returns a decoder; its first Decode loads the rules.
func newOTLPDecoder(c *otlpShared) *otlpDecoder { return &otlpDecoder{c: c} }

// OTLPError says why a record is not valid OTLP. Encoding, Field and Reason
// come from small fixed sets of constants, so "Encoding Field" can label
// dead-letter metrics (the consumer's label is the text before the colon).
type OTLPError struct {
	Encoding string // EncodingOTLPProto or EncodingOTLPJSON
	Field    string // e.g. "span.trace_id", "record"
	Reason   string // e.g. "truncated", "wrong wire type", "not hex"
	Offset   int    // byte offset in the record; -1 when not known
}

// Error returns e.g. "otlp_proto span.trace_id: length not 16 bytes".
func (e *OTLPError) Error() string {
	s := e.Encoding + " " + e.Field + ": " + e.Reason
	if e.Offset >= 0 {
		s += " at byte " + strconv.Itoa(e.Offset)
	}
	return s
}

// Decode implements Decoder. Events and their byte slices are valid only
// during emit.
func (d *otlpDecoder) Decode(value []byte, emit func(*schemas.Event)) error {
	if len(value) > MaxOTLPRecordBytes {
		return &OTLPError{Encoding: d.c.enc, Field: "record", Reason: "larger than MaxOTLPRecordBytes", Offset: -1}
	}
	if rs := d.c.rules.Load(); rs != d.rs {
		d.useRules(rs)
	}
	d.evs = d.evs[:0] // newEvent zeroes what it reuses
	d.arena = d.arena[:0]
	d.skipped, d.ignored, d.unattributed, d.joins = [numSkips]int{}, 0, [2]int{}, [numJoins]int{}
	var err error
	if d.c.json {
		err = d.jsonRecord(value)
	} else {
		err = d.protoRecord(value)
	}
	if err != nil {
		d.evs = d.evs[:0]
		d.resolved = [numFields][numRuleSlots]int{}
		return err
	}
	d.flushResolved()
	for i, n := range d.skipped {
		if n > 0 {
			d.c.skipped[i].Add(n)
		}
	}
	if d.ignored > 0 {
		d.c.ignored.Add(d.ignored)
	}
	for i, n := range d.unattributed {
		if n > 0 {
			d.c.unattributed[i].Add(n)
		}
	}
	for i, n := range d.joins {
		if n > 0 {
			d.c.joins[i].Add(n)
		}
	}
	if d.c.traces != nil && !d.c.logs && len(d.evs) > 0 {
		d.c.traces.putSpans(d.evs, d.c.unknown)
	}
	for i := range d.evs {
		emit(&d.evs[i])
	}
	return nil
}

const reasonTooManyEvents = "more than MaxOTLPEvents events"

// newEvent appends a zero event to evs, or returns nil when the record
// already holds MaxOTLPEvents.
func (d *otlpDecoder) newEvent() *schemas.Event {
	if len(d.evs) >= MaxOTLPEvents {
		return nil
	}
	if len(d.evs) < cap(d.evs) {
		d.evs = d.evs[:len(d.evs)+1]
		ev := &d.evs[len(d.evs)-1]
		*ev = schemas.Event{}
		return ev
	}
	d.evs = append(d.evs, schemas.Event{})
	return &d.evs[len(d.evs)-1]
}

// drop removes the last event (just made by newEvent) and counts why.
func (d *otlpDecoder) drop(why skip) {
	d.evs = d.evs[:len(d.evs)-1]
	d.skipped[why]++
}

// span maps the span just parsed (and its evaluation events) to events.
// It returns false when the record holds too many events.
func (d *otlpDecoder) span(sp *spanState) bool {
	t := &sp.attrs
	kind, marked := spanKind(t)
	if !marked && d.c.genAIOnly {
		d.ignored++
	} else {
		ev := d.newEvent()
		if ev == nil {
			return false
		}
		if why := d.mapSpan(ev, sp, kind); why != noSkip {
			d.drop(why)
		}
	}
	for i := range sp.evals {
		ev := d.newEvent()
		if ev == nil {
			return false
		}
		if why := d.mapSpanEval(ev, sp, &sp.evals[i]); why != noSkip {
			d.drop(why)
		}
	}
	return true
}

func (d *otlpDecoder) mapSpan(ev *schemas.Event, sp *spanState, kind schemas.Kind) skip {
	t := &sp.attrs
	ev.Kind = kind
	if why := eventTime(ev, sp.end); why != noSkip {
		return why
	}
	if sp.start != 0 {
		if sp.end < sp.start {
			return skipEndBeforeStart
		}
		ms := float64(sp.end-sp.start) / 1e6
		if ms > schemas.MaxDurationMS {
			return skipDuration
		}
		ev.DurationMS, ev.HasDuration = ms, true
	}
	ev.Name = spanName(t, kind, sp.name)
	if sp.code == 2 {
		ev.Error = true
		if et, ok := t.str(aErrorType); ok {
			ev.ErrorType = et
		} else if len(sp.excType) > 0 {
			ev.ErrorType = sp.excType
		} else {
			ev.ErrorType = errorWord
		}
	}
	var ok bool
	if ev.InputTokens, ok = tokens(t, aInputTokens, aPromptTokens, aOIPromptTokens); !ok {
		return skipTokens
	}
	if ev.OutputTokens, ok = tokens(t, aOutputTokens, aCompletionTokens, aOICompletionTokens); !ok {
		return skipTokens
	}
	if t.present(aOICost) {
		c, ok := number(t.known[aOICost])
		if !ok || !(c >= 0 && c <= schemas.MaxCostUSD) {
			return skipCost
		}
		ev.CostUSD, ev.HasCost = c, true
	}
	if t.present(aConversation) {
		ev.SessionID = d.text(t.known[aConversation])
	}
	if len(ev.SessionID) == 0 && t.present(aOISession) {
		ev.SessionID = d.text(t.known[aOISession])
	}
	ev.TraceID, ev.SpanID, ev.ParentSpanID = sp.traceID, sp.spanID, sp.parentID
	return d.finish(ev, t)
}

func (d *otlpDecoder) mapSpanEval(ev *schemas.Event, sp *spanState, e *evalData) skip {
	ts := e.ts
	if ts == 0 {
		ts = sp.end
	}
	if why := eventTime(ev, ts); why != noSkip {
		return why
	}
	if why := evalOutcome(ev, e); why != noSkip {
		return why
	}
	ev.TraceID, ev.SpanID = sp.traceID, sp.spanID
	return d.finish(ev, &sp.attrs)
}

// log maps the log record just parsed. It returns false when the record
// holds too many events.
func (d *otlpDecoder) log(lr *logState) bool {
	t := &lr.attrs
	if string(lr.eventName) != evalEventName {
		if n, ok := t.str(aEventName); !ok || string(n) != evalEventName {
			d.ignored++
			return true
		}
	}
	ev := d.newEvent()
	if ev == nil {
		return false
	}
	ts := lr.time
	if ts == 0 {
		ts = lr.observed
	}
	why := eventTime(ev, ts)
	if why == noSkip {
		e := evalFromTab(t, ts)
		why = evalOutcome(ev, &e)
	}
	if why == noSkip {
		ev.TraceID, ev.SpanID = lr.traceID, lr.spanID
		why = d.finish(ev, t)
	}
	if why != noSkip {
		d.drop(why)
	}
	return true
}

// evalFromTab reads a gen_ai.evaluation.result span event's attributes.
func evalFromTab(t *attrTab, ts uint64) evalData {
	e := evalData{ts: ts}
	e.name, _ = t.str(aEvalName)
	e.label, _ = t.str(aEvalLabel)
	e.errTy, _ = t.str(aErrorType)
	if t.present(aEvalScore) {
		e.score, e.hasScore = t.known[aEvalScore], true
	}
	return e
}

var errorWord = []byte("error")

// eventTime sets ev.TS from unix nanoseconds.
func eventTime(ev *schemas.Event, ts uint64) skip {
	if ts == 0 {
		return skipNoTime
	}
	if ts > math.MaxInt64 {
		return skipTimeRange
	}
	ev.TS = int64(ts)
	return noSkip
}

// evalOutcome fills an eval event from an evaluation result.
func evalOutcome(ev *schemas.Event, e *evalData) skip {
	ev.Kind = schemas.KindEval
	ev.Name = e.name
	if len(e.errTy) > 0 {
		ev.Error, ev.ErrorType = true, e.errTy
	}
	if e.hasScore {
		s, ok := number(e.score)
		if !ok || !(s >= 0 && s <= 1) {
			return skipScore
		}
		ev.OutcomeScore, ev.HasOutcomeScore = s, true
	}
	if len(e.label) > 0 {
		switch {
		case foldAny(e.label, "pass", "passed", "success", "succeeded", "correct", "true", "yes"):
			ev.OutcomeSuccess, ev.HasOutcomeSuccess = true, true
		case foldAny(e.label, "fail", "failed", "failure", "incorrect", "false", "no"):
			ev.OutcomeSuccess, ev.HasOutcomeSuccess = false, true
		case foldAny(e.label, "hallucinated", "hallucination"):
			ev.OutcomeHallucinated, ev.HasHallucination = true, true
		case foldAny(e.label, "factual", "faithful", "grounded"):
			ev.OutcomeHallucinated, ev.HasHallucination = false, true
		}
	}
	ev.HasOutcome = ev.HasOutcomeScore || ev.HasOutcomeSuccess || ev.HasHallucination
	return noSkip
}

// foldAny tells whether b equals one of words, ASCII case-insensitively.
func foldAny(b []byte, words ...string) bool {
	for _, w := range words {
		if eqFold(b, w) {
			return true
		}
	}
	return false
}

func eqFold(b []byte, w string) bool {
	if len(b) != len(w) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], w[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// finish resolves rollout and version and bounds the kept strings.
func (d *otlpDecoder) finish(ev *schemas.Event, t *attrTab) skip {
	rr, vr := ruleTrace, ruleTrace
	if joined := d.c.traceFirst && d.joinTrace(ev); !joined {
		ev.Rollout, rr = d.resolve(fRollout, t)
		ev.Version, vr = d.resolve(fVersion, t)
		if ev.Version == nil && d.c.logs && d.c.traces != nil && !d.c.traceFirst && d.joinTrace(ev) {
			rr, vr = ruleTrace, ruleTrace
		}
	}
	if ev.Rollout == nil {
		ev.Rollout, rr = d.c.unknown, ruleNone
		d.unattributed[0]++
	}
	if ev.Version == nil {
		ev.Version, vr = d.c.unknown, ruleNone
		d.unattributed[1]++
	}
	for _, s := range [...]*[]byte{&ev.Name, &ev.ErrorType, &ev.SessionID} {
		*s = truncate(*s)
		if !utf8.Valid(*s) {
			return skipUTF8
		}
	}
	d.resolved[fRollout][rr]++
	d.resolved[fVersion][vr]++
	return noSkip
}

// joinTrace sets ev's rollout and version from the trace index, by its
// trace id, and counts the outcome. It reports whether the trace was found.
func (d *otlpDecoder) joinTrace(ev *schemas.Event) bool {
	if len(ev.TraceID) == 0 {
		d.joins[joinNoTraceID]++
		return false
	}
	r, v, ok := d.c.traces.Lookup(ev.TraceID)
	if !ok {
		d.joins[joinUnknownTrace]++
		return false
	}
	ev.Rollout, ev.Version = r, v
	d.joins[joinJoined]++
	return true
}

// text returns a scalar value as text: strings as they are, numbers and
// booleans formatted into the arena. Arrays, kvlists and bytes give nil.
func (d *otlpDecoder) text(v anyVal) []byte {
	start := len(d.arena)
	switch v.t {
	case vStr:
		return v.s
	case vInt:
		d.arena = strconv.AppendInt(d.arena, int64(v.n), 10)
	case vDouble:
		d.arena = strconv.AppendFloat(d.arena, math.Float64frombits(v.n), 'g', -1, 64)
	case vBool:
		d.arena = strconv.AppendBool(d.arena, v.n != 0)
	default:
		return nil
	}
	return d.arena[start:len(d.arena):len(d.arena)]
}

// number returns a numeric value (int, double, or a decimal string).
func number(v anyVal) (float64, bool) {
	switch v.t {
	case vInt:
		return float64(int64(v.n)), true
	case vDouble:
		f := math.Float64frombits(v.n)
		return f, !math.IsNaN(f) && !math.IsInf(f, 0)
	case vStr:
		f, err := strconv.ParseFloat(string(v.s), 64)
		return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	}
	return 0, false
}

// tokens returns the first present of the token counts ids, checked to be a
// whole number in 0..schemas.MaxTokens; ok is false when it is not.
func tokens(t *attrTab, ids ...attrID) (n int64, ok bool) {
	for _, id := range ids {
		if !t.present(id) {
			continue
		}
		v := t.known[id]
		switch v.t {
		case vInt:
			n = int64(v.n)
		case vDouble, vStr:
			f, ok := number(v)
			if !ok || f != math.Trunc(f) || f < 0 || f > schemas.MaxTokens {
				return 0, false
			}
			n = int64(f)
		default:
			return 0, false
		}
		return n, n >= 0 && n <= schemas.MaxTokens
	}
	return 0, true
}

// truncate cuts s to schemas.MaxStringBytes, at a UTF-8 boundary.
func truncate(s []byte) []byte {
	if len(s) <= schemas.MaxStringBytes {
		return s
	}
	n := schemas.MaxStringBytes
	for n > 0 && n > schemas.MaxStringBytes-utf8.UTFMax && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// spanKind maps a span's attributes to a kind; marked tells whether the
// span carries any GenAI, OpenInference or OpenLLMetry attribute.
func spanKind(t *attrTab) (k schemas.Kind, marked bool) {
	const markers = 1<<aOperation | 1<<aOISpanKind | 1<<aTLSpanKind | 1<<aTLRequestType |
		1<<aRequestModel | 1<<aResponseModel | 1<<aOIModel | 1<<aProvider | 1<<aSystem |
		1<<aToolName | 1<<aAgentName | 1<<aInputTokens | 1<<aOutputTokens |
		1<<aPromptTokens | 1<<aCompletionTokens | 1<<aOIPromptTokens | 1<<aOICompletionTokens |
		1<<aEvalName
	marked = t.has&markers != 0
	if v, ok := t.str(aOperation); ok {
		switch string(v) {
		case "chat", "text_completion", "generate_content", "embeddings":
			return schemas.KindLLM, true
		case "execute_tool":
			return schemas.KindTool, true
		case "invoke_agent", "create_agent":
			return schemas.KindAgent, true
		case "invoke_workflow":
			return schemas.KindTask, true
		case "retrieval":
			return schemas.KindRetrieval, true
		}
	}
	if v, ok := t.str(aOISpanKind); ok {
		switch {
		case foldAny(v, "LLM", "EMBEDDING"):
			return schemas.KindLLM, true
		case foldAny(v, "TOOL"):
			return schemas.KindTool, true
		case foldAny(v, "AGENT"):
			return schemas.KindAgent, true
		case foldAny(v, "CHAIN"):
			return schemas.KindTask, true
		case foldAny(v, "RETRIEVER", "RERANKER"):
			return schemas.KindRetrieval, true
		case foldAny(v, "EVALUATOR"):
			return schemas.KindEval, true
		}
	}
	if v, ok := t.str(aTLSpanKind); ok {
		switch string(v) {
		case "workflow", "task":
			return schemas.KindTask, true
		case "agent":
			return schemas.KindAgent, true
		case "tool":
			return schemas.KindTool, true
		}
	}
	if v, ok := t.str(aTLRequestType); ok {
		switch string(v) {
		case "chat", "completion", "embedding":
			return schemas.KindLLM, true
		case "rerank":
			return schemas.KindRetrieval, true
		}
	}
	if t.has&(1<<aRequestModel|1<<aResponseModel|1<<aOIModel) != 0 {
		return schemas.KindLLM, true
	}
	return schemas.KindOther, marked
}

// spanName picks the event name for kind, falling back to the span name.
func spanName(t *attrTab, kind schemas.Kind, spanName []byte) []byte {
	var ids []attrID
	switch kind {
	case schemas.KindLLM:
		ids = []attrID{aRequestModel, aResponseModel, aOIModel}
	case schemas.KindTool:
		ids = []attrID{aToolName, aOIToolName, aTLEntityName}
	case schemas.KindAgent:
		ids = []attrID{aAgentName, aOIAgentName, aTLEntityName}
	case schemas.KindTask, schemas.KindRetrieval:
		ids = []attrID{aTLEntityName}
	case schemas.KindEval:
		ids = []attrID{aEvalName}
	}
	for _, id := range ids {
		if v, ok := t.str(id); ok {
			return v
		}
	}
	return spanName
}

// appendHex appends the lower-case hex of b.
func appendHex(dst, b []byte) []byte {
	const digits = "0123456789abcdef"
	for _, c := range b {
		dst = append(dst, digits[c>>4], digits[c&15])
	}
	return dst
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
