package daemon

import (
	"testing"
	"time"

	"github.com/inferensys/canaryd/detector"
)

// TestSetDefaultsFromDefaultConfig: a Config with only brokers and specs gets
// every default from DefaultConfig (HTTPAddr excepted: empty means no
// server); set fields are kept; the two required ones are refused.
func TestSetDefaultsFromDefaultConfig(t *testing.T) {
	specs := []detector.Spec{{Rollout: "r"}}
	c := Config{Brokers: []string{"b:9092"}, Specs: specs}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"EventsTopic", c.EventsTopic, d.EventsTopic},
		{"ControlTopic", c.ControlTopic, d.ControlTopic},
		{"DLQTopic", c.DLQTopic, d.DLQTopic},
		{"Group", c.Group, d.Group},
		{"StateTopic", c.StateTopic, d.StateTopic},
		{"OTLPEncoding", c.OTLPEncoding, d.OTLPEncoding},
		{"Partitions", c.Partitions, d.Partitions},
		{"HistoryWindows", c.HistoryWindows, d.HistoryWindows},
		{"CheckpointInterval", c.CheckpointInterval, d.CheckpointInterval},
		{"EvictAfter", c.EvictAfter, d.EvictAfter},
		{"ShutdownTimeout", c.ShutdownTimeout, d.ShutdownTimeout},
		{"SessionTimeout", c.SessionTimeout, d.SessionTimeout},
		{"Window.Width", c.Window.Width, d.Window.Width},
		{"Window.Lateness", c.Window.Lateness, d.Window.Lateness},
		{"Window.MaxFuture", c.Window.MaxFuture, d.Window.MaxFuture},
		{"HTTPAddr", c.HTTPAddr, ""},
		{"KgoOpts", len(c.KgoOpts), 1}, // the session timeout
	} {
		if f.got != f.want {
			t.Errorf("%s = %v; want %v", f.name, f.got, f.want)
		}
	}
	if c.Logger == nil || c.Metrics == nil {
		t.Errorf("Logger %v, Metrics %v; want no-op ones", c.Logger, c.Metrics)
	}

	set := Config{Brokers: []string{"b"}, Specs: specs, Group: "g", Partitions: 2, HistoryWindows: 4, ShutdownTimeout: time.Second}
	set.Window.MaxFuture = 5 * time.Minute
	if err := set.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if set.Group != "g" || set.Partitions != 2 || set.HistoryWindows != 4 || set.ShutdownTimeout != time.Second || set.Window.MaxFuture != 5*time.Minute {
		t.Errorf("set fields changed: %+v", set)
	}
	if err := (&Config{Specs: specs}).setDefaults(); err == nil {
		t.Error("no brokers: got no error; want one")
	}
	if err := (&Config{Brokers: []string{"b"}}).setDefaults(); err == nil {
		t.Error("no specs: got no error; want one")
	}
}
