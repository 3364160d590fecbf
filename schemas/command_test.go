package schemas

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func testCommand() Command {
	c := Command{
		Seq: 7, Rollout: "support-agent", Baseline: "v42", Canary: "v43", Action: ActionSetWeight,
		Weight: 25, Step: 2, Reason: "no degradation after 1840 canary requests (p95 < 1000 ms)",
		Evidence:  json.RawMessage(`{"metric":"error_rate","e_value":0.4}`),
		DecidedAt: time.Date(2025, 11, 25, 18, 34, 12, 123456789, time.UTC),
		Commit:    "3f2c1ab",
	}
	c.CommandID = CommandID(c.Rollout, c.Baseline, c.Canary, c.Action, c.Step, c.Weight)
	return c
}

func TestCommandID(t *testing.T) {
	id := CommandID("r", "v1", "v2", ActionSetWeight, 1, 10)
	if got := CommandID("r", "v1", "v2", ActionSetWeight, 1, 10); got != id {
		t.Fatalf("CommandID is not deterministic: %s then %s", id, got)
	}
	// The documented derivation (control-command.v1.json).
	sum := sha256.Sum256([]byte("r\x00v1\x00v2\x00set_weight\x001\x0010\x00"))
	if want := hex.EncodeToString(sum[:16]); id != want {
		t.Fatalf("CommandID = %s; want %s (first 16 bytes of sha256 of the NUL-terminated fields)", id, want)
	}
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("CommandID = %q; want 32 lowercase hex digits", id)
	}
	seen := map[string]string{id: "base"}
	for name, other := range map[string]string{
		"rollout":  CommandID("r2", "v1", "v2", ActionSetWeight, 1, 10),
		"baseline": CommandID("r", "v0", "v2", ActionSetWeight, 1, 10),
		"canary":   CommandID("r", "v1", "v3", ActionSetWeight, 1, 10),
		"action":   CommandID("r", "v1", "v2", ActionRollback, 1, 10),
		"step":     CommandID("r", "v1", "v2", ActionSetWeight, 2, 10),
		"weight":   CommandID("r", "v1", "v2", ActionSetWeight, 1, 20),
		// The NUL separators keep shifted boundaries apart.
		"boundary": CommandID("rv", "1", "v2", ActionSetWeight, 1, 10),
		"digits":   CommandID("r", "v1", "v2", ActionSetWeight, 11, 0),
	} {
		if prev, dup := seen[other]; dup {
			t.Errorf("CommandID with a different %s equals the one with a different %s: %s", name, prev, other)
		}
		seen[other] = name
	}
}

func TestCommandSignVerify(t *testing.T) {
	key := []byte("secret")
	c := testCommand()
	if err := c.Sign(key); err != nil {
		t.Fatal(err)
	}
	if len(c.Signature) != 64 || strings.Trim(c.Signature, "0123456789abcdef") != "" {
		t.Fatalf("Signature = %q; want 64 lowercase hex digits", c.Signature)
	}
	if !c.Verify(key) {
		t.Fatalf("Verify with the signing key: got false")
	}
	if c.Verify([]byte("other")) {
		t.Fatalf("Verify with another key: got true")
	}
	if c.Verify(nil) {
		t.Fatalf("Verify of a signed command with no key: got true")
	}
	sig := c.Signature
	if err := c.Sign(key); err != nil || c.Signature != sig {
		t.Fatalf("Sign is not deterministic: %s then %s (%v)", sig, c.Signature, err)
	}

	// Any change to a signed field breaks the signature.
	for name, mutate := range map[string]func(*Command){
		"command_id":    func(c *Command) { c.CommandID = "00" + c.CommandID[2:] },
		"seq":           func(c *Command) { c.Seq++ },
		"rollout":       func(c *Command) { c.Rollout += "x" },
		"baseline":      func(c *Command) { c.Baseline = "v41" },
		"canary":        func(c *Command) { c.Canary = "v44" },
		"action":        func(c *Command) { c.Action = ActionPromote },
		"weight":        func(c *Command) { c.Weight = 100 },
		"step":          func(c *Command) { c.Step = 3 },
		"reason":        func(c *Command) { c.Reason = "ok" },
		"evidence":      func(c *Command) { c.Evidence = json.RawMessage(`{"metric":"error_rate","e_value":99}`) },
		"decided_at":    func(c *Command) { c.DecidedAt = c.DecidedAt.Add(time.Nanosecond) },
		"deployment_id": func(c *Command) { c.DeploymentID = "d" },
		"commit":        func(c *Command) { c.Commit = "" },
		"signature":     func(c *Command) { c.Signature = strings.ToUpper(c.Signature) },
	} {
		m := c
		mutate(&m)
		if m.Verify(key) {
			t.Errorf("Verify after changing %s: got true", name)
		}
	}

	// Verify does not change the command it is called on.
	if c.Signature != sig {
		t.Fatalf("Verify changed the receiver's signature")
	}

	// An empty key clears the signature.
	if err := c.Sign(nil); err != nil || c.Signature != "" {
		t.Fatalf("Sign(nil): signature %q, error %v; want cleared", c.Signature, err)
	}
}

// TestCommandSignatureOnReceivedBytes checks what control-command.v1.json
// tells non-Go routers: the signature is the HMAC of the record as received
// with its final signature member removed.
func TestCommandSignatureOnReceivedBytes(t *testing.T) {
	key := []byte("secret")
	c := testCommand()
	c.Reason = `p95 > 1000 ms & rising <fast>` // encoding/json escapes these
	if err := c.Sign(key); err != nil {
		t.Fatal(err)
	}
	rec, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	suffix := `,"signature":"` + c.Signature + `"}`
	if !bytes.HasSuffix(rec, []byte(suffix)) {
		t.Fatalf("signature is not the last member of %s", rec)
	}
	signed := append(rec[:len(rec)-len(suffix):len(rec)-len(suffix)], '}')
	m := hmac.New(sha256.New, key)
	m.Write(signed)
	if got := hex.EncodeToString(m.Sum(nil)); got != c.Signature {
		t.Fatalf("HMAC of the received bytes without the signature = %s; want %s", got, c.Signature)
	}

	// A router in Go may also decode and Verify.
	var got Command
	if err := json.Unmarshal(rec, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Verify(key) {
		t.Fatalf("Verify after a JSON round trip of %s: got false", rec)
	}
}

func TestCommandValidate(t *testing.T) {
	f := func(name string, mutate func(*Command), wantErr string) {
		t.Helper()
		c := testCommand()
		mutate(&c)
		err := c.Validate()
		switch {
		case wantErr == "" && err != nil:
			t.Fatalf("%s: Validate() = %v; want nil", name, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Fatalf("%s: Validate() = %v; want an error containing %q", name, err, wantErr)
		}
	}
	f("valid", func(*Command) {}, "")
	for _, a := range []Action{ActionSetWeight, ActionPromote, ActionRollback, ActionHold} {
		f("action "+string(a), func(c *Command) { c.Action = a }, "")
	}
	f("weight 0", func(c *Command) { c.Weight = 0 }, "")
	f("weight 100", func(c *Command) { c.Weight = 100 }, "")
	f("missing command_id", func(c *Command) { c.CommandID = "" }, "missing command_id")
	f("missing rollout", func(c *Command) { c.Rollout = "" }, "missing rollout")
	f("seq 0", func(c *Command) { c.Seq = 0 }, "seq must be > 0")
	f("weight -1", func(c *Command) { c.Weight = -1 }, "weight -1 outside 0..100")
	f("weight 101", func(c *Command) { c.Weight = 101 }, "weight 101 outside 0..100")
	f("cohort", func(c *Command) { c.Cohort = &Cohort{Attribute: "user_tier", Values: []string{"internal"}} }, "")
	f("cohort without attribute", func(c *Command) { c.Cohort = &Cohort{Values: []string{"internal"}} }, "cohort without attribute")
	f("cohort without values", func(c *Command) { c.Cohort = &Cohort{Attribute: "user_tier"} }, `cohort "user_tier" without values`)
	f("unknown action", func(c *Command) { c.Action = "pause" }, `unknown action "pause"`)
	f("empty action", func(c *Command) { c.Action = "" }, `unknown action ""`)
}

// TestCommandSchemaExample checks that the example in control-command.v1.json
// is a real command: valid, with its true command_id, signed with the key the
// schema names.
func TestCommandSchemaExample(t *testing.T) {
	var schema struct {
		Examples []json.RawMessage `json:"examples"`
	}
	b, err := os.ReadFile("control-command.v1.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	if len(schema.Examples) == 0 {
		t.Fatal("control-command.v1.json has no examples")
	}
	for _, ex := range schema.Examples {
		var c Command
		if err := json.Unmarshal(ex, &c); err != nil {
			t.Fatalf("example %s: %v", ex, err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("example %s: Validate() = %v", ex, err)
		}
		if want := CommandID(c.Rollout, c.Baseline, c.Canary, c.Action, c.Step, c.Weight); c.CommandID != want {
			t.Fatalf("example command_id = %s; want %s", c.CommandID, want)
		}
		if !c.Verify([]byte("example-key")) {
			t.Fatalf("example %s: signature does not verify under \"example-key\"", ex)
		}
	}
}

// TestCommandCohortOptional checks that the cohort member, added after v1's
// first commands were signed, leaves those commands' bytes (and so their
// signatures) as they were, and is signed like any other member when present.
func TestCommandCohortOptional(t *testing.T) {
	key := []byte("secret")
	c := testCommand()
	if err := c.Sign(key); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("cohort")) {
		t.Fatalf("a command without a cohort encodes one: %s", b)
	}
	c.Cohort = &Cohort{Attribute: "user_tier", Values: []string{"internal"}}
	if c.Verify(key) {
		t.Fatalf("Verify after adding a cohort: got true")
	}
	if err := c.Sign(key); err != nil {
		t.Fatal(err)
	}
	b, err = json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"commit":"3f2c1ab","cohort":{"attribute":"user_tier","values":["internal"]},"signature":"`; !bytes.Contains(b, []byte(want)) {
		t.Fatalf("encoding %s; want it to contain %s", b, want)
	}
	var got Command
	if err := json.Unmarshal(b, &got); err != nil || !got.Verify(key) {
		t.Fatalf("round trip of a command with a cohort: error %v, verifies %v", err, got.Verify(key))
	}

	f := func(cohort *Cohort, attrs map[string]string, want bool) {
		t.Helper()
		if got := cohort.Contains(attrs); got != want {
			t.Errorf("%+v.Contains(%v) = %v; want %v", cohort, attrs, got, want)
		}
	}
	internal := &Cohort{Attribute: "user_tier", Values: []string{"internal", "beta"}}
	f(nil, nil, true)
	f(internal, nil, false)
	f(internal, map[string]string{"user_tier": "beta"}, true)
	f(internal, map[string]string{"user_tier": "Internal"}, false)
	f(internal, map[string]string{"tier": "internal"}, false)
}
