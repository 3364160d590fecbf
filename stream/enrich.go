package stream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"go.yaml.in/yaml/v3"

	"github.com/inferensys/canaryd/schemas"
)

// Model table: context-window limits and prices per model, from a YAML file
// (format in otlp.md, "Model table"; example in deploy/models.yaml). Enrich
// wraps a decoder so that llm events whose model is in the table get the
// context limit and the cost that their source did not carry.
//
// Metrics (on the set given to Enrich):
//
//	canaryd_models_cost_filled_total      llm events given a cost from the price table
//	canaryd_models_context_filled_total   llm events given a context limit from the table
//	canaryd_models_unknown_total          llm events without a cost whose model is not in the table

// Limits of a model table.
const (
	// MaxModels bounds the entries of a model table.
	MaxModels = 4096
	// MaxModelUSDPerMillion bounds a price, far above any real one (2025's
	// dearest models cost under 200 USD per million output tokens).
	MaxModelUSDPerMillion = 10_000
)

// Model is one entry of a ModelTable.
type Model struct {
	// Name is the model name as events carry it (gen_ai.request.model, the
	// event's name), or a prefix when it ends with "*" ("gpt-4o*").
	Name string
	// ContextLimit is the model's context window in tokens; 0 is unknown.
	ContextLimit int64
	// InputUSDPerM and OutputUSDPerM are the prices in USD per million input
	// and output tokens; HasPrices tells whether they were given.
	InputUSDPerM, OutputUSDPerM float64
	HasPrices                   bool
	// Line of the entry in its file.
	Line int
}

// ModelTable maps model names to their Model. It is immutable once loaded
// and safe for concurrent use.
type ModelTable struct {
	models   []Model
	exact    map[string]int32 // name → index in models
	prefixes []int32          // indexes of the prefix entries, longest prefix first
}

// ModelTableError is a model table that cannot be used: it names the file,
// the line and the field, and says what is wrong ("models.yaml:7:
// models.2.context_limit: must be a whole number of tokens").
type ModelTableError struct {
	File   string
	Line   int
	Field  string
	Reason string
}

func (e *ModelTableError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", loc, e.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Reason)
}

// LoadModelTable reads a model table from a YAML file.
func LoadModelTable(path string) (*ModelTable, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model table: %w", err)
	}
	return ParseModelTable(path, b)
}

// ParseModelTable parses a model table; name is used in errors.
//
//	models:
//	  - name: gpt-4o            # exact name
//	    context_limit: 128000   # tokens
//	    input_usd_per_1m: 2.50  # USD per million input tokens
//	    output_usd_per_1m: 10.00
//	  - name: "claude-sonnet-4*" # prefix: any name that starts with claude-sonnet-4
//	    context_limit: 200000
//
// Unknown fields, duplicate names, a "*" elsewhere than at the end, negative
// or fractional limits, negative or huge prices, and an entry with neither
// a limit nor prices are refused.
func ParseModelTable(name string, b []byte) (*ModelTable, error) {
	bad := func(line int, field, reason string) error {
		return &ModelTableError{File: name, Line: line, Field: field, Reason: reason}
	}
	root, line, reason := yamlMapping(b, "a models: list")
	if root == nil {
		return nil, bad(line, "", reason)
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "models" {
			return nil, bad(k.Line, k.Value, "unknown field (want models)")
		}
		if list != nil {
			return nil, bad(k.Line, k.Value, "given twice")
		}
		list = v
	}
	if list == nil {
		return nil, bad(root.Line, "models", "required: the list of models")
	}
	if list.Kind != yaml.SequenceNode {
		return nil, bad(list.Line, "models", "want a list")
	}
	if len(list.Content) > MaxModels {
		return nil, bad(list.Line, "models", fmt.Sprintf("%d entries, at most %d", len(list.Content), MaxModels))
	}
	t := &ModelTable{exact: map[string]int32{}}
	seen := map[string]int{} // name → line
	for i, item := range list.Content {
		path := "models." + strconv.Itoa(i)
		if item.Kind != yaml.MappingNode {
			return nil, bad(item.Line, path, "want a mapping (name, context_limit, input_usd_per_1m, output_usd_per_1m)")
		}
		m := Model{Line: item.Line}
		var hasIn, hasOut, hasLimit bool
		var inLine int
		var fields [4]string
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			field := path + "." + k.Value
			if slices.Contains(fields[:], k.Value) {
				return nil, bad(k.Line, field, "given twice")
			}
			if j/2 < len(fields) {
				fields[j/2] = k.Value
			}
			if v.Kind != yaml.ScalarNode {
				return nil, bad(v.Line, field, "want a single value")
			}
			switch k.Value {
			case "name":
				m.Name = v.Value
			case "context_limit":
				n, err := strconv.ParseInt(v.Value, 10, 64)
				if err != nil || n <= 0 || n > schemas.MaxTokens {
					return nil, bad(v.Line, field, fmt.Sprintf("%q: want a whole number of tokens in 1..%d", v.Value, schemas.MaxTokens))
				}
				m.ContextLimit, hasLimit = n, true
			case "input_usd_per_1m", "output_usd_per_1m":
				f, err := strconv.ParseFloat(v.Value, 64)
				if err != nil || !(f >= 0 && f <= MaxModelUSDPerMillion) {
					return nil, bad(v.Line, field, fmt.Sprintf("%q: want USD per million tokens in 0..%d", v.Value, MaxModelUSDPerMillion))
				}
				if k.Value == "input_usd_per_1m" {
					m.InputUSDPerM, hasIn, inLine = f, true, v.Line
				} else {
					m.OutputUSDPerM, hasOut = f, true
				}
			default:
				return nil, bad(k.Line, field, "unknown field (want name, context_limit, input_usd_per_1m, output_usd_per_1m)")
			}
		}
		switch {
		case m.Name == "" || m.Name == "*":
			return nil, bad(item.Line, path+".name", "required: the model name, or a prefix ending in *")
		case len(m.Name) > schemas.MaxStringBytes || !utf8.ValidString(m.Name):
			return nil, bad(item.Line, path+".name", fmt.Sprintf("longer than %d bytes or not UTF-8", schemas.MaxStringBytes))
		case strings.Contains(strings.TrimSuffix(m.Name, "*"), "*"):
			return nil, bad(item.Line, path+".name", fmt.Sprintf("%q: * is allowed only at the end (a prefix)", m.Name))
		case hasIn != hasOut:
			return nil, bad(max(inLine, item.Line), path, "give both input_usd_per_1m and output_usd_per_1m, or neither")
		case !hasLimit && !hasIn:
			return nil, bad(item.Line, path, "neither context_limit nor prices: the entry would do nothing")
		}
		if prev, ok := seen[m.Name]; ok {
			return nil, bad(item.Line, path+".name", fmt.Sprintf("%q is already listed at line %d", m.Name, prev))
		}
		seen[m.Name] = item.Line
		m.HasPrices = hasIn
		idx := int32(len(t.models))
		t.models = append(t.models, m)
		if strings.HasSuffix(m.Name, "*") {
			t.prefixes = append(t.prefixes, idx)
		} else {
			t.exact[m.Name] = idx
		}
	}
	// Longest prefix first: "gpt-4o-mini*" wins over "gpt-4o*".
	slices.SortStableFunc(t.prefixes, func(a, b int32) int { return len(t.models[b].Name) - len(t.models[a].Name) })
	return t, nil
}

// yamlErrLine extracts the line from a yaml.v3 syntax error ("yaml: line 3: …").
// yamlMapping decodes b as exactly one YAML document whose root is a
// mapping. Otherwise it returns nil, the line of the fault (0: none) and
// why; want names what the mapping should hold.
func yamlMapping(b []byte, want string) (*yaml.Node, int, string) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, "empty file: want " + want
		}
		return nil, yamlErrLine(err), strings.TrimPrefix(err.Error(), "yaml: ")
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, next.Line, "more than one YAML document"
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, root.Line, "want a mapping with " + want
	}
	return root, 0, ""
}

func yamlErrLine(err error) int {
	s, ok := strings.CutPrefix(err.Error(), "yaml: line ")
	if !ok {
		return 0
	}
	if i := strings.IndexByte(s, ':'); i > 0 {
		n, _ := strconv.Atoi(s[:i])
		return n
	}
	return 0
}

// Models returns the table's entries in file order.
func (t *ModelTable) Models() []Model { return slices.Clone(t.models) }

// Lookup returns the entry for a model name: the exact name, else the
// longest matching prefix.
func (t *ModelTable) Lookup(name []byte) (*Model, bool) {
	i := t.lookup(name)
	if i < 0 {
		return nil, false
	}
	return &t.models[i], true
}

func (t *ModelTable) lookup(name []byte) int32 {
	if len(name) == 0 {
		return -1
	}
	if i, ok := t.exact[string(name)]; ok {
		return i
	}
	for _, i := range t.prefixes {
		p := t.models[i].Name
		p = p[:len(p)-1]
		if len(name) >= len(p) && string(name[:len(p)]) == p {
			return i
		}
	}
	return -1
}

// Enrich returns a NewDecoder that fills, on every llm event of next's
// whose name (the model) is in t:
//   - ContextLimit, when the event has none and carries context or input
//     tokens; ContextTokens, when it has none, becomes the input tokens (an
//     LLM call's input is its context), so the window's context use is
//     input tokens over the model's limit. An event without tokens gets no
//     limit: a use of 0 would drag the mean down.
//   - CostUSD (and HasCost), when the event carries no cost, has tokens and
//     the entry has prices: input × input price + output × output price,
//     per million. A cost above schemas.MaxCostUSD is not set.
//
// Other events pass unchanged. A nil t returns next itself. set receives
// the counters (nil: none). Wrap the span decoder before Sessions, so that
// agent events sum the filled costs of their llm spans:
// Sessions(Enrich(OTLPTraces(cfg), t, set), scfg). The wrapper allocates
// nothing per event.
func Enrich(next NewDecoder, t *ModelTable, set *metrics.Set) NewDecoder {
	if t == nil {
		return next
	}
	if set == nil {
		set = metrics.NewSet()
	}
	c := &enrichShared{
		t:       t,
		cost:    set.GetOrCreateCounter("canaryd_models_cost_filled_total"),
		context: set.GetOrCreateCounter("canaryd_models_context_filled_total"),
		unknown: set.GetOrCreateCounter("canaryd_models_unknown_total"),
	}
	return func() Decoder {
		d := &enrichDecoder{c: c, next: next(), last: -1}
		d.hook = d.enrich // one method value, made once: no allocation per Decode
		return d
	}
}

type enrichShared struct {
	t                      *ModelTable
	cost, context, unknown *metrics.Counter
}

// enrichDecoder is one partition's wrapper; not safe for concurrent use,
// like the decoder it wraps.
type enrichDecoder struct {
	c    *enrichShared
	next Decoder
	hook func(*schemas.Event)
	emit func(*schemas.Event) // the caller's, during Decode

	// Cache of the last model name looked up: consecutive llm events mostly
	// name the same model.
	lastName []byte
	last     int32
	cached   bool

	nCost, nContext, nUnknown int // per record, added to the counters after it
}

var _ Decoder = (*enrichDecoder)(nil)

// Decode implements Decoder.
func (d *enrichDecoder) Decode(value []byte, emit func(*schemas.Event)) error {
	d.emit = emit
	err := d.next.Decode(value, d.hook)
	d.emit = nil
	if d.nCost > 0 {
		d.c.cost.Add(d.nCost)
	}
	if d.nContext > 0 {
		d.c.context.Add(d.nContext)
	}
	if d.nUnknown > 0 {
		d.c.unknown.Add(d.nUnknown)
	}
	d.nCost, d.nContext, d.nUnknown = 0, 0, 0
	return err
}

func (d *enrichDecoder) enrich(ev *schemas.Event) {
	if ev.Kind == schemas.KindLLM {
		d.fill(ev)
	}
	d.emit(ev)
}

func (d *enrichDecoder) fill(ev *schemas.Event) {
	needLimit := ev.ContextLimit <= 0 && (ev.ContextTokens > 0 || ev.InputTokens > 0)
	needCost := !ev.HasCost && ev.InputTokens+ev.OutputTokens > 0
	if !needLimit && !needCost {
		return
	}
	if !d.cached || !bytes.Equal(ev.Name, d.lastName) {
		d.last = d.c.t.lookup(ev.Name)
		d.lastName = append(d.lastName[:0], ev.Name...)
		d.cached = true
	}
	if d.last < 0 {
		if needCost {
			d.nUnknown++
		}
		return
	}
	m := &d.c.t.models[d.last]
	if needLimit && m.ContextLimit > 0 {
		if ev.ContextTokens <= 0 {
			ev.ContextTokens = ev.InputTokens
		}
		ev.ContextLimit = m.ContextLimit
		d.nContext++
	}
	if needCost && m.HasPrices {
		c := (float64(ev.InputTokens)*m.InputUSDPerM + float64(ev.OutputTokens)*m.OutputUSDPerM) / 1e6
		if c <= schemas.MaxCostUSD && !math.IsNaN(c) {
			ev.CostUSD, ev.HasCost = c, true
			d.nCost++
		}
	}
}
