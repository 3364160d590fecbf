package schemas

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// jsonSchema is the part of a JSON Schema these tests read.
type jsonSchema struct {
	Schema        string                 `json:"$schema"`
	Description   string                 `json:"description"`
	Type          any                    `json:"type"`
	Required      []string               `json:"required"`
	Properties    map[string]*jsonSchema `json:"properties"`
	Items         *jsonSchema            `json:"items"`
	PropertyNames *jsonSchema            `json:"propertyNames"`
	AddProps      any                    `json:"additionalProperties"`
	OneOf         []*jsonSchema          `json:"oneOf"`
	Minimum       *float64               `json:"minimum"`
	Maximum       *float64               `json:"maximum"`
	MaxLength     *int                   `json:"maxLength"`
	MaxItems      *int                   `json:"maxItems"`
	MaxProperties *int                   `json:"maxProperties"`
	Examples      []json.RawMessage      `json:"examples"`
}

func loadSchema(t *testing.T, name string) *jsonSchema {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(b) {
		t.Fatalf("%s is not valid JSON", name)
	}
	var s jsonSchema
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if s.Schema != "https://json-schema.org/draft/2020-12/schema" {
		t.Fatalf("%s: $schema = %q; want draft 2020-12", name, s.Schema)
	}
	if s.Description == "" || len(s.Properties) == 0 {
		t.Fatalf("%s: no description or no properties", name)
	}
	var check func(path string, p *jsonSchema)
	check = func(path string, p *jsonSchema) {
		for k, sub := range p.Properties {
			if strings.TrimSpace(sub.Description) == "" {
				t.Errorf("%s: property %s%s has no description", name, path, k)
			}
			check(path+k+".", sub)
		}
	}
	check("", &s)
	return &s
}

// property returns the schema of a dotted property path, e.g. "outcome.score".
func (s *jsonSchema) property(path string) *jsonSchema {
	for _, k := range strings.Split(path, ".") {
		if s = s.Properties[k]; s == nil {
			return nil
		}
	}
	return s
}

// eventFieldJSON maps each field of Event to the schema property it comes
// from. A new Event field must be added here, and so to the schema.
var eventFieldJSON = map[string]string{
	"Rollout":             "rollout",
	"Version":             "version",
	"Kind":                "kind",
	"Name":                "name",
	"TS":                  "ts",
	"DurationMS":          "duration_ms",
	"Error":               "status",
	"ErrorType":           "error_type",
	"InputTokens":         "input_tokens",
	"OutputTokens":        "output_tokens",
	"CostUSD":             "cost_usd",
	"ContextTokens":       "context_tokens",
	"ContextLimit":        "context_limit",
	"TraceID":             "trace_id",
	"SpanID":              "span_id",
	"ParentSpanID":        "parent_span_id",
	"SessionID":           "session_id",
	"DeploymentID":        "deployment_id",
	"Commit":              "commit",
	"ToolCalls":           "tool_calls",
	"Requests":            "requests",
	"RequestErrors":       "request_errors",
	"RequestMedianMS":     "request_median_ms",
	"HasRequestMedian":    "request_median_ms",
	"HasDuration":         "duration_ms",
	"HasCost":             "cost_usd",
	"HasOutcome":          "outcome",
	"OutcomeSuccess":      "outcome.success",
	"HasOutcomeSuccess":   "outcome.success",
	"OutcomeScore":        "outcome.score",
	"HasOutcomeScore":     "outcome.score",
	"OutcomeHallucinated": "outcome.hallucination",
	"HasHallucination":    "outcome.hallucination",
}

func TestEventSchemaMatchesCode(t *testing.T) {
	s := loadSchema(t, "agent-event.v1.json")

	// Every Event field is documented in the schema.
	typ := reflect.TypeFor[Event]()
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		path, ok := eventFieldJSON[name]
		if !ok {
			t.Errorf("Event.%s has no schema property: add it to agent-event.v1.json and eventFieldJSON", name)
			continue
		}
		if s.property(path) == nil {
			t.Errorf("Event.%s: agent-event.v1.json has no property %s", name, path)
		}
	}
	for name := range eventFieldJSON {
		if _, ok := typ.FieldByName(name); !ok {
			t.Errorf("eventFieldJSON names Event.%s, which does not exist", name)
		}
	}

	// The decoder reads exactly the schema's properties.
	var props []string
	for k := range s.Properties {
		props = append(props, k)
	}
	decoded := fieldNames[:]
	slices.Sort(props)
	decoded = slices.Sorted(slices.Values(decoded))
	if !slices.Equal(props, decoded) {
		t.Errorf("schema properties %q; decoder fields %q", props, decoded)
	}
	if want := []string{"rollout", "version", "ts"}; !slices.Equal(s.Required, want) {
		t.Errorf("required = %q; want %q", s.Required, want)
	}

	// The limits of event.go are the schema's.
	num := func(path string, min, max float64) {
		t.Helper()
		p := s.property(path)
		if p.Minimum == nil || *p.Minimum != min || p.Maximum == nil || *p.Maximum != max {
			t.Errorf("%s: minimum %v maximum %v; want %v %v", path, p.Minimum, p.Maximum, min, max)
		}
	}
	for _, k := range []string{"input_tokens", "output_tokens", "context_tokens", "context_limit"} {
		num(k, 0, MaxTokens)
	}
	num("duration_ms", 0, MaxDurationMS)
	num("request_median_ms", 0, MaxDurationMS)
	num("requests", 0, MaxRequests)
	num("request_errors", 0, MaxRequests)
	num("cost_usd", 0, MaxCostUSD)
	num("outcome.score", 0, maxOutcomeScore)
	for _, k := range []string{"rollout", "version", "name", "error_type", "trace_id", "span_id", "parent_span_id",
		"session_id", "deployment_id", "commit"} {
		if p := s.property(k); p.MaxLength == nil || *p.MaxLength != MaxStringBytes {
			t.Errorf("%s: maxLength %v; want %d", k, p.MaxLength, MaxStringBytes)
		}
	}
	tc := s.property("tool_calls")
	if tc.MaxItems == nil || *tc.MaxItems != MaxToolCalls || tc.Items == nil || *tc.Items.MaxLength != MaxStringBytes {
		t.Errorf("tool_calls: maxItems %v; want %d, items of maxLength %d", tc.MaxItems, MaxToolCalls, MaxStringBytes)
	}
	at := s.property("attrs")
	if at.MaxProperties == nil || *at.MaxProperties != MaxAttrs || *at.PropertyNames.MaxLength != MaxStringBytes {
		t.Errorf("attrs: maxProperties %v; want %d", at.MaxProperties, MaxAttrs)
	}
	if !strings.Contains(s.Description, "1048576") || MaxRecordBytes != 1048576 {
		t.Errorf("the schema's description must state MaxRecordBytes (%d)", MaxRecordBytes)
	}

	// The examples decode.
	if len(s.Examples) == 0 {
		t.Fatal("agent-event.v1.json has no examples")
	}
	var d Decoder
	var ev Event
	for _, ex := range s.Examples {
		if err := d.Decode(ex, &ev); err != nil {
			t.Errorf("example %s: %v", ex, err)
		}
	}
}

func TestCommandSchemaMatchesCode(t *testing.T) {
	s := loadSchema(t, "control-command.v1.json")
	typ := reflect.TypeFor[Command]()
	var tags, required []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "" || tag == "-" {
			t.Errorf("Command.%s has no JSON name", f.Name)
			continue
		}
		tags = append(tags, tag)
		if !strings.Contains(opts, "omitempty") {
			required = append(required, tag)
		}
		if s.Properties[tag] == nil {
			t.Errorf("Command.%s (%s) is not in control-command.v1.json", f.Name, tag)
		}
	}
	for k := range s.Properties {
		if !slices.Contains(tags, k) {
			t.Errorf("control-command.v1.json property %s is not a Command field", k)
		}
	}
	// The schema lists the members in the order encoding/json writes them,
	// since the signature is computed over that encoding.
	b, err := os.ReadFile("control-command.v1.json")
	if err != nil {
		t.Fatal(err)
	}
	props := string(b[strings.Index(string(b), `"properties"`):])
	last := -1
	for _, tag := range tags {
		i := strings.Index(props, `"`+tag+`": {`)
		if i < last {
			t.Errorf("control-command.v1.json: property %s is out of the struct's order", tag)
		}
		last = i
	}
	if !slices.Equal(s.Required, required) {
		t.Errorf("required = %q; want the fields without omitempty, %q", s.Required, required)
	}
	if tags[len(tags)-1] != "signature" {
		t.Errorf("signature must stay the last field of Command: the schema tells verifiers to strip it from the end")
	}
	w := s.Properties["weight"]
	if *w.Minimum != 0 || *w.Maximum != 100 {
		t.Errorf("weight: minimum %v maximum %v; want 0 100", *w.Minimum, *w.Maximum)
	}
	var actions struct {
		Properties struct {
			Action struct {
				Enum []Action `json:"enum"`
			} `json:"action"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &actions); err != nil {
		t.Fatal(err)
	}
	want := []Action{ActionSetWeight, ActionPromote, ActionRollback, ActionHold}
	if !slices.Equal(actions.Properties.Action.Enum, want) {
		t.Errorf("action enum = %q; want %q", actions.Properties.Action.Enum, want)
	}
}

func TestKindEnumMatchesSchema(t *testing.T) {
	b, err := os.ReadFile("agent-event.v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties struct {
			Kind struct {
				Enum []*string `json:"enum"`
			} `json:"kind"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range s.Properties.Kind.Enum {
		if e != nil {
			got = append(got, *e)
		}
	}
	want := slices.Clone(kindNames[:])
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("kind enum %q; want the kinds of event.go %q", got, want)
	}
}
