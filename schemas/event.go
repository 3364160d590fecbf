// Package schemas holds canaryd's wire formats: the agent event v1 (what agents
// and collectors write to the events topic) and the control command v1 (what
// canaryd writes to the control topic), their JSON Schemas
// (agent-event.v1.json, control-command.v1.json), their Go types, and the
// allocation-free hot-path decoder for events.
package schemas

// Kind is what an event describes. The zero value is KindOther.
type Kind uint8

// Event kinds, as in the `kind` field of agent-event.v1.json.
const (
	KindOther Kind = iota
	KindLLM
	KindTool
	KindAgent
	KindTask
	KindRetrieval
	KindEval
	numKinds
)

// NumKinds is the number of distinct kinds, for arrays indexed by Kind.
const NumKinds = int(numKinds)

var kindNames = [...]string{"other", "llm", "tool", "agent", "task", "retrieval", "eval"}

// String returns the kind's wire name.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "other"
}

// ParseKind maps a wire name to a Kind; unknown names are KindOther and ok=false.
func ParseKind(b []byte) (k Kind, ok bool) {
	for i, n := range kindNames {
		if string(b) == n {
			return Kind(i), true
		}
	}
	return KindOther, false
}

// Limits on decoded values. A record outside them goes to the dead-letter topic.
const (
	MaxRecordBytes  = 1 << 20     // 1 MiB: larger records are refused before parsing
	MaxTokens       = 100_000_000 // per event; more is a broken exporter, not a real call
	MaxDurationMS   = 86_400_000  // one day
	MaxCostUSD      = 10_000      // per event
	MaxToolCalls    = 256         // per agent/task event
	MaxRequests     = 1<<31 - 1   // requests and request_errors of a session summary
	MaxAttrs        = 64          // entries in attrs
	MaxStringBytes  = 512         // rollout, version, name, error_type, ids
	maxOutcomeScore = 1
)

// Event is one decoded agent event. Byte-slice fields alias the decoder's
// buffer and stay valid only until the next Decode call on the same Decoder;
// copy what must outlive it. The zero value is an empty event.
type Event struct {
	Rollout []byte // required
	Version []byte // required
	Kind    Kind
	Name    []byte // model, tool or step name
	TS      int64  // event time, unix nanoseconds; required

	DurationMS float64 // HasDuration tells whether it was present
	Error      bool    // status == "error"
	ErrorType  []byte

	InputTokens   int64
	OutputTokens  int64
	CostUSD       float64
	ContextTokens int64
	ContextLimit  int64

	TraceID      []byte
	SpanID       []byte
	ParentSpanID []byte
	SessionID    []byte
	DeploymentID []byte
	Commit       []byte

	ToolCalls [][]byte // ordered tool names; the outer slice is reused

	// Session request totals, on agent and task events (a session's
	// summary): how many request events (llm, tool, retrieval, other) the
	// session made, how many of them failed, and the median of their
	// durations. Set by the producer (JSON "requests", "request_errors",
	// "request_median_ms") or by canaryd's session assembly from the spans
	// of the session's trace. They make the session the unit of the
	// error-rate and latency tests (spec "units: sessions"): requests of one
	// session are correlated, sessions are not. Requests == 0: unknown.
	Requests         uint32
	RequestErrors    uint32 // ≤ Requests
	RequestMedianMS  float64
	HasRequestMedian bool

	HasDuration bool
	HasCost     bool
	HasOutcome  bool
	// Outcome fields are meaningful only when HasOutcome is set; each has its own
	// presence flag because an outcome may carry any subset of them.
	OutcomeSuccess      bool
	HasOutcomeSuccess   bool
	OutcomeScore        float64
	HasOutcomeScore     bool
	OutcomeHallucinated bool
	HasHallucination    bool
}

// Reset clears ev for reuse, keeping the capacity of ToolCalls.
func (ev *Event) Reset() {
	tc := ev.ToolCalls[:0]
	*ev = Event{ToolCalls: tc}
}
