package loadtest

import (
	"fmt"
	"math"
)

// ToolProfile is how one tool behaves.
type ToolProfile struct {
	Name string
	// Weight is the relative chance that the agent picks this tool for a
	// step. Zero counts as 1, so a list of tools with no weights is uniform.
	Weight float64
	// ErrorRate is the probability that one call fails, before
	// Profile.ErrorRateMult.
	ErrorRate float64
	// LatencyMedianMS and LatencySigma describe a lognormal latency: the
	// median in milliseconds and the standard deviation of its logarithm.
	// Latency is scaled by Profile.LatencyMult and Profile.ToolLatencyMult.
	LatencyMedianMS float64
	LatencySigma    float64
}

// LLMProfile is how the agent's model calls behave.
type LLMProfile struct {
	Model string
	// LatencyMedianMS and LatencySigma describe a lognormal latency, scaled
	// by Profile.LatencyMult.
	LatencyMedianMS float64
	LatencySigma    float64
	// ErrorRate is the probability that one call fails, before
	// Profile.ErrorRateMult.
	ErrorRate float64
	// InputTokensMean and OutputTokensMean are the means of lognormal token
	// counts (scaled by Profile.TokensMult) whose logarithms have standard
	// deviation TokensSigma. A failed call uses no tokens and costs nothing.
	InputTokensMean  float64
	OutputTokensMean float64
	TokensSigma      float64
	// InputCostPer1K and OutputCostPer1K are USD per 1000 tokens.
	InputCostPer1K  float64
	OutputCostPer1K float64
	// ContextLimit is the model's context window in tokens, written as
	// context_limit; an input larger than it is cut to it. 0 omits the field
	// and cuts nothing.
	ContextLimit int64
}

// ErrorType is one kind of failure and its relative frequency among the
// failures of a kind of request.
type ErrorType struct {
	Name   string
	Weight float64
	// LatencyMS, when > 0, is how long a request failing with this type takes,
	// instead of the drawn latency: a timeout takes the timeout, a rate limit
	// fails fast. It is not scaled by the latency multipliers.
	LatencyMS float64
}

// Profile describes how one version of an agent behaves.
//
// A session is an agent loop: Steps tool calls, drawn uniformly from
// [MinSteps, MaxSteps], each preceded by the LLM call that chose it, and one
// final LLM call that writes the answer — Steps+1 LLM calls and Steps tool
// calls in all, run one after another. A failed request does not stop the
// session (the agent carries on with the error in its context), except that
// a failed final LLM call leaves the session without an answer: its agent
// event has status error and outcome.success false.
//
// The multipliers make a canary differ from its baseline without rewriting
// the profile: ErrorRateMult scales every error rate (capped at 1),
// LatencyMult every request's latency, ToolLatencyMult tool latency on top of
// LatencyMult, and TokensMult both token means. Zero means 1.
type Profile struct {
	Tools []ToolProfile
	LLM   LLMProfile

	MinSteps, MaxSteps int

	// LLMErrorTypes and ToolErrorTypes are drawn, by weight, for each failed
	// LLM or tool call. An empty list gives error_type "error".
	LLMErrorTypes  []ErrorType
	ToolErrorTypes []ErrorType

	// TaskSuccess is the probability that a session's task succeeds when none
	// of its requests failed; SuccessAfterError multiplies it when any did.
	TaskSuccess       float64
	SuccessAfterError float64
	// HallucinationRate is the probability that a session's outcome is
	// flagged as a hallucination, independent of its success.
	HallucinationRate float64

	ErrorRateMult   float64
	LatencyMult     float64
	ToolLatencyMult float64
	TokensMult      float64
}

// DefaultProfile is a support agent on gpt-4o-mini with four tools, 1–4 tool
// calls per session (5.5 requests on average) and about 1% of requests
// failing.
func DefaultProfile() Profile {
	return Profile{
		Tools: []ToolProfile{
			{Name: "search_docs", Weight: 4, ErrorRate: 0.008, LatencyMedianMS: 120, LatencySigma: 0.5},
			{Name: "get_weather", Weight: 1, ErrorRate: 0.015, LatencyMedianMS: 250, LatencySigma: 0.4},
			{Name: "run_sql", Weight: 3, ErrorRate: 0.012, LatencyMedianMS: 80, LatencySigma: 0.7},
			{Name: "send_email", Weight: 1, ErrorRate: 0.005, LatencyMedianMS: 400, LatencySigma: 0.3},
		},
		LLM: LLMProfile{
			Model:            "gpt-4o-mini",
			LatencyMedianMS:  900,
			LatencySigma:     0.5,
			ErrorRate:        0.009,
			InputTokensMean:  1800,
			OutputTokensMean: 250,
			TokensSigma:      0.6,
			InputCostPer1K:   0.00015,
			OutputCostPer1K:  0.0006,
			ContextLimit:     128_000,
		},
		MinSteps: 1,
		MaxSteps: 4,
		LLMErrorTypes: []ErrorType{
			{Name: "rate_limit", Weight: 4, LatencyMS: 35},
			{Name: "timeout", Weight: 2, LatencyMS: 30_000},
			{Name: "invalid_output", Weight: 3},
			{Name: "server_error", Weight: 1},
		},
		ToolErrorTypes: []ErrorType{
			{Name: "tool_error", Weight: 6},
			{Name: "timeout", Weight: 3, LatencyMS: 10_000},
			{Name: "invalid_input", Weight: 1, LatencyMS: 5},
		},
		TaskSuccess:       0.92,
		SuccessAfterError: 0.6,
		HallucinationRate: 0.03,
		ErrorRateMult:     1,
		LatencyMult:       1,
		ToolLatencyMult:   1,
		TokensMult:        1,
	}
}

// maxSteps bounds tool calls per session, well under schemas.MaxToolCalls.
const maxSteps = 64

// Validate reports the first thing wrong with p, wrapped in ErrInvalidConfig.
func (p *Profile) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if p.MinSteps < 0 || p.MaxSteps < p.MinSteps || p.MaxSteps > maxSteps {
		return bad("steps [%d, %d] not within [0, %d]", p.MinSteps, p.MaxSteps, maxSteps)
	}
	if p.MaxSteps > 0 && len(p.Tools) == 0 {
		return bad("MaxSteps %d but no tools", p.MaxSteps)
	}
	seen := make(map[string]bool, len(p.Tools))
	for _, t := range p.Tools {
		switch {
		case t.Name == "":
			return bad("tool without a name")
		case seen[t.Name]:
			return bad("tool %q listed twice", t.Name)
		case !nonNeg(t.Weight):
			return bad("tool %q: weight %v < 0", t.Name, t.Weight)
		case !prob(t.ErrorRate):
			return bad("tool %q: error rate %v outside [0, 1]", t.Name, t.ErrorRate)
		case !(t.LatencyMedianMS > 0) || math.IsInf(t.LatencyMedianMS, 0):
			return bad("tool %q: latency median %v must be > 0", t.Name, t.LatencyMedianMS)
		case !nonNeg(t.LatencySigma):
			return bad("tool %q: latency sigma %v < 0", t.Name, t.LatencySigma)
		}
		seen[t.Name] = true
	}
	l := &p.LLM
	switch {
	case l.Model == "":
		return bad("LLM without a model name")
	case !(l.LatencyMedianMS > 0) || math.IsInf(l.LatencyMedianMS, 0):
		return bad("LLM latency median %v must be > 0", l.LatencyMedianMS)
	case !nonNeg(l.LatencySigma):
		return bad("LLM latency sigma %v < 0", l.LatencySigma)
	case !prob(l.ErrorRate):
		return bad("LLM error rate %v outside [0, 1]", l.ErrorRate)
	case !nonNeg(l.InputTokensMean) || !nonNeg(l.OutputTokensMean) || !nonNeg(l.TokensSigma):
		return bad("LLM token means and sigma must be >= 0")
	case !nonNeg(l.InputCostPer1K) || !nonNeg(l.OutputCostPer1K):
		return bad("LLM costs must be >= 0")
	case l.ContextLimit < 0:
		return bad("LLM context limit %d < 0", l.ContextLimit)
	}
	for _, list := range [][]ErrorType{p.LLMErrorTypes, p.ToolErrorTypes} {
		sum := 0.0
		for _, e := range list {
			if e.Name == "" || !nonNeg(e.Weight) || !nonNeg(e.LatencyMS) {
				return bad("error type %q: needs a name, weight >= 0 and latency >= 0", e.Name)
			}
			sum += e.Weight
		}
		if len(list) > 0 && !(sum > 0) {
			return bad("error types with zero total weight")
		}
	}
	switch {
	case !prob(p.TaskSuccess) || !prob(p.SuccessAfterError) || !prob(p.HallucinationRate):
		return bad("TaskSuccess, SuccessAfterError and HallucinationRate must be within [0, 1]")
	case !nonNeg(p.ErrorRateMult) || !nonNeg(p.LatencyMult) || !nonNeg(p.ToolLatencyMult) || !nonNeg(p.TokensMult):
		return bad("multipliers must be >= 0")
	}
	return nil
}

func prob(x float64) bool   { return x >= 0 && x <= 1 }
func nonNeg(x float64) bool { return x >= 0 && !math.IsInf(x, 0) }

// mult treats an unset multiplier as 1.
func mult(x float64) float64 {
	if x == 0 {
		return 1
	}
	return x
}

// compiledProfile is a Profile with multipliers applied, names as bytes and
// weights as cumulative tables, so drawing a request allocates nothing.
type compiledProfile struct {
	tools   []compiledTool
	toolCum []float64 // cumulative tool weights, last = total

	model      []byte
	llmErr     float64
	llmMu      float64 // ln(median ms)
	llmSigma   float64
	inMu       float64 // ln of the input-token median
	outMu      float64
	tokSigma   float64
	inCost     float64 // USD per token
	outCost    float64
	ctxLimit   int64
	llmErrs    errorTable
	toolErrs   errorTable
	minSteps   int
	maxSteps   int
	success    float64
	successErr float64 // success probability after a failed request
	halluc     float64
}

type compiledTool struct {
	name  []byte
	err   float64
	mu    float64
	sigma float64
}

type errorTable struct {
	names   [][]byte
	cum     []float64
	latency []float64
}

var genericError = []byte("error")

// pick returns the error type for u uniform in [0, 1).
func (t *errorTable) pick(u float64) (name []byte, latencyMS float64) {
	if len(t.names) == 0 {
		return genericError, 0
	}
	x := u * t.cum[len(t.cum)-1]
	for i, c := range t.cum {
		if x < c {
			return t.names[i], t.latency[i]
		}
	}
	i := len(t.names) - 1
	return t.names[i], t.latency[i]
}

func compileErrors(list []ErrorType) errorTable {
	var t errorTable
	sum := 0.0
	for _, e := range list {
		if e.Weight == 0 {
			continue
		}
		sum += e.Weight
		t.names = append(t.names, []byte(e.Name))
		t.cum = append(t.cum, sum)
		t.latency = append(t.latency, e.LatencyMS)
	}
	return t
}

// compile assumes p is valid.
func (p *Profile) compile() compiledProfile {
	errMult, latMult := mult(p.ErrorRateMult), mult(p.LatencyMult)
	toolLat, tokMult := mult(p.ToolLatencyMult), mult(p.TokensMult)
	c := compiledProfile{
		model:      []byte(p.LLM.Model),
		llmErr:     math.Min(1, p.LLM.ErrorRate*errMult),
		llmMu:      math.Log(p.LLM.LatencyMedianMS * latMult),
		llmSigma:   p.LLM.LatencySigma,
		tokSigma:   p.LLM.TokensSigma,
		inCost:     p.LLM.InputCostPer1K / 1000,
		outCost:    p.LLM.OutputCostPer1K / 1000,
		ctxLimit:   p.LLM.ContextLimit,
		llmErrs:    compileErrors(p.LLMErrorTypes),
		toolErrs:   compileErrors(p.ToolErrorTypes),
		minSteps:   p.MinSteps,
		maxSteps:   p.MaxSteps,
		success:    p.TaskSuccess,
		successErr: p.TaskSuccess * p.SuccessAfterError,
		halluc:     p.HallucinationRate,
	}
	// A lognormal with mean m has median m·exp(-σ²/2).
	half := p.LLM.TokensSigma * p.LLM.TokensSigma / 2
	c.inMu = math.Log(p.LLM.InputTokensMean*tokMult) - half
	c.outMu = math.Log(p.LLM.OutputTokensMean*tokMult) - half
	sum := 0.0
	for _, t := range p.Tools {
		w := t.Weight
		if w == 0 {
			w = 1
		}
		sum += w
		c.toolCum = append(c.toolCum, sum)
		c.tools = append(c.tools, compiledTool{
			name:  []byte(t.Name),
			err:   math.Min(1, t.ErrorRate*errMult),
			mu:    math.Log(t.LatencyMedianMS * latMult * toolLat),
			sigma: t.LatencySigma,
		})
	}
	return c
}

// pickTool returns the tool index for u uniform in [0, 1).
func (c *compiledProfile) pickTool(u float64) int {
	x := u * c.toolCum[len(c.toolCum)-1]
	for i, cum := range c.toolCum {
		if x < cum {
			return i
		}
	}
	return len(c.toolCum) - 1
}
