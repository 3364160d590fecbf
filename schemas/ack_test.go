package schemas

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func testAck() Ack {
	return Ack{CommandID: "c79f7b88cdb2ecacc0adc74685878e36", Rollout: "support-agent", Seq: 7, Weight: 20,
		Action: ActionSetWeight, Router: "gw-1", AppliedAt: time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)}
}

func TestAckValidate(t *testing.T) {
	f := func(name string, mutate func(*Ack), wantErr string) {
		t.Helper()
		a := testAck()
		mutate(&a)
		err := a.Validate()
		switch {
		case wantErr == "" && err != nil:
			t.Fatalf("%s: Validate() = %v; want nil", name, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Fatalf("%s: Validate() = %v; want an error containing %q", name, err, wantErr)
		}
	}
	f("valid", func(*Ack) {}, "")
	for _, act := range []Action{ActionSetWeight, ActionPromote, ActionRollback, ActionHold} {
		f("action "+string(act), func(a *Ack) { a.Action = act }, "")
	}
	f("weight 0", func(a *Ack) { a.Weight = 0 }, "")
	f("weight 100", func(a *Ack) { a.Weight = 100 }, "")
	f("missing command_id", func(a *Ack) { a.CommandID = "" }, "missing command_id")
	f("missing rollout", func(a *Ack) { a.Rollout = "" }, "missing rollout")
	f("seq 0", func(a *Ack) { a.Seq = 0 }, "seq must be > 0")
	f("weight -1", func(a *Ack) { a.Weight = -1 }, "weight -1 outside 0..100")
	f("weight 101", func(a *Ack) { a.Weight = 101 }, "weight 101 outside 0..100")
	f("missing router", func(a *Ack) { a.Router = "" }, "missing router")
	f("long router", func(a *Ack) { a.Router = strings.Repeat("r", MaxRouterBytes+1) }, "router longer than 256 bytes")
	f("router at the limit", func(a *Ack) { a.Router = strings.Repeat("r", MaxRouterBytes) }, "")
	f("missing applied_at", func(a *Ack) { a.AppliedAt = time.Time{} }, "missing applied_at")
	f("unknown action", func(a *Ack) { a.Action = "pause" }, `unknown action "pause"`)
}

// TestAckSchemaMatchesCode: every Ack field is a property of ack.v1.json
// and back, the required members are the fields, the limits agree, and the
// example is a valid Ack.
func TestAckSchemaMatchesCode(t *testing.T) {
	s := loadSchema(t, "ack.v1.json")
	typ := reflect.TypeFor[Ack]()
	var tags []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		tags = append(tags, tag)
		if s.Properties[tag] == nil {
			t.Errorf("Ack.%s (%s) is not in ack.v1.json", f.Name, tag)
		}
	}
	for k := range s.Properties {
		if !slices.Contains(tags, k) {
			t.Errorf("ack.v1.json property %s is not an Ack field", k)
		}
	}
	if !slices.Equal(s.Required, tags) {
		t.Errorf("required = %q; want every field, %q", s.Required, tags)
	}
	if w := s.Properties["weight"]; *w.Minimum != 0 || *w.Maximum != 100 {
		t.Errorf("weight: minimum %v maximum %v; want 0 100", *w.Minimum, *w.Maximum)
	}
	if r := s.Properties["router"]; r.MaxLength == nil || *r.MaxLength != MaxRouterBytes {
		t.Errorf("router maxLength %v; want %d", r.MaxLength, MaxRouterBytes)
	}
	var actions struct {
		Properties struct {
			Action struct {
				Enum []Action `json:"enum"`
			} `json:"action"`
		} `json:"properties"`
	}
	b, err := os.ReadFile("ack.v1.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &actions); err != nil {
		t.Fatal(err)
	}
	if want := []Action{ActionSetWeight, ActionPromote, ActionRollback, ActionHold}; !slices.Equal(actions.Properties.Action.Enum, want) {
		t.Errorf("action enum = %q; want %q", actions.Properties.Action.Enum, want)
	}
	if len(s.Examples) == 0 {
		t.Fatal("ack.v1.json has no examples")
	}
	for _, ex := range s.Examples {
		var a Ack
		if err := json.Unmarshal(ex, &a); err != nil {
			t.Fatalf("example %s: %v", ex, err)
		}
		if err := a.Validate(); err != nil {
			t.Errorf("example %s: Validate() = %v", ex, err)
		}
	}
	// An ack round-trips through its JSON.
	a := testAck()
	enc, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var got Ack
	if err := json.Unmarshal(enc, &got); err != nil || got != a {
		t.Errorf("round trip of %s: %+v, %v; want %+v", enc, got, err, a)
	}
}
