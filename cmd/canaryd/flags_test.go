package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/internal/daemon"
)

// envMap is a lookup function over a fixed environment.
func envMap(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestEveryRunFlagHasItsVariable enumerates the run flags: each shows its
// variable in its usage, and setting the variable changes the flag's value.
func TestEveryRunFlagHasItsVariable(t *testing.T) {
	fs, _ := newRunFlags()
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		name := envName(f.Name)
		if !strings.HasPrefix(name, "CANARYD_") {
			t.Errorf("--%s: variable %s; want a CANARYD_ name", f.Name, name)
		}
		if !strings.Contains(f.Usage, "["+name+"]") {
			t.Errorf("--%s: usage %q does not show [%s]", f.Name, f.Usage, name)
		}
		getter, ok := f.Value.(flag.Getter)
		if !ok {
			t.Fatalf("--%s: value %T is not a flag.Getter", f.Name, f.Value)
		}
		var val string
		switch d := getter.Get().(type) {
		case bool:
			val = "false"
			if !d {
				val = "true"
			}
		case time.Duration:
			val = (d + 7*time.Second).String()
		case int:
			val = "1234"
		case int32:
			val = "17"
		case string:
			val = "changed-by-env"
		default:
			t.Fatalf("--%s: value of type %T not covered by this test", f.Name, d)
		}
		fs2, _ := newRunFlags()
		if err := applyEnv(fs2, envMap(name, val)); err != nil {
			t.Fatalf("%s=%q: %v", name, val, err)
		}
		got := fs2.Lookup(f.Name).Value.String()
		if got == f.Value.String() {
			t.Errorf("%s=%q: --%s is %q; want it changed from the default", name, val, f.Name, got)
		}
		if want := (func() string { v := fs.Lookup(f.Name).Value; _ = v.Set(val); return v.String() })(); got != want {
			t.Errorf("%s=%q: --%s is %q; want %q", name, val, f.Name, got, want)
		}
	})
	if n < 30 {
		t.Errorf("%d run flags enumerated; want at least 30", n)
	}
	for _, want := range []string{"history-windows", "v", "log-level", "shutdown-timeout", "max-future", "tls-ca-file", "tls-cert-file", "tls-key-file", "tls-server-name", "sasl-password-file", "sasl-oauth-token-file"} {
		if fs.Lookup(want) == nil {
			t.Errorf("no flag --%s", want)
		}
	}
	if got, want := envName("v"), "CANARYD_VERBOSE"; got != want {
		t.Errorf("envName(v) = %s; want %s", got, want)
	}
}

// TestRunFlagDefaults: the flags' defaults are daemon.DefaultConfig's.
func TestRunFlagDefaults(t *testing.T) {
	r, _, err := parseRun(nil, nil, envMap(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := daemon.DefaultConfig()
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"events-topic", r.cfg.EventsTopic, d.EventsTopic},
		{"control-topic", r.cfg.ControlTopic, d.ControlTopic},
		{"dlq-topic", r.cfg.DLQTopic, d.DLQTopic},
		{"acks-topic", r.cfg.AcksTopic, d.AcksTopic},
		{"ack-timeout", r.cfg.AckTimeout, d.AckTimeout},
		{"group", r.cfg.Group, d.Group},
		{"state-topic", r.cfg.StateTopic, d.StateTopic},
		{"two-stage", r.cfg.TwoStage, d.TwoStage},
		{"partials-topic", r.cfg.PartialsTopic, d.PartialsTopic},
		{"partials-partitions", r.cfg.PartialsPartitions, d.PartialsPartitions},
		{"partitions", r.cfg.Partitions, d.Partitions},
		{"http", r.cfg.HTTPAddr, d.HTTPAddr},
		{"otlp-encoding", r.cfg.OTLPEncoding, d.OTLPEncoding},
		{"window", r.cfg.Window.Width, d.Window.Width},
		{"lateness", r.cfg.Window.Lateness, d.Window.Lateness},
		{"max-future", r.cfg.Window.MaxFuture, d.Window.MaxFuture},
		{"session-timeout", r.cfg.SessionTimeout, d.SessionTimeout},
		{"checkpoint-interval", r.cfg.CheckpointInterval, d.CheckpointInterval},
		{"evict-after", r.cfg.EvictAfter, d.EvictAfter},
		{"history-windows", r.cfg.HistoryWindows, d.HistoryWindows},
		{"shutdown-timeout", r.cfg.ShutdownTimeout, d.ShutdownTimeout},
	} {
		if c.got != c.want {
			t.Errorf("--%s default %v; want %v", c.name, c.got, c.want)
		}
	}
	// The values the brief and README promise.
	if d.Window.MaxFuture != time.Minute || d.ShutdownTimeout != 30*time.Second || d.SessionTimeout != 45*time.Second ||
		d.CheckpointInterval != 5*time.Second || d.HistoryWindows != 360 || d.EvictAfter != time.Hour ||
		d.Window.Width != 10*time.Second || d.Window.Lateness != 5*time.Second || d.HTTPAddr != ":8080" || d.OTLPEncoding != "otlp_proto" {
		t.Errorf("DefaultConfig() = %+v", d)
	}
}

// TestStrictEnv: booleans, durations and integers from the environment are
// parsed strictly, and a bad value is an error naming variable and value.
func TestStrictEnv(t *testing.T) {
	for _, c := range []struct {
		name, val string
		wantErr   string // empty: no error
		check     func(r *runFlags) error
	}{
		{"CANARYD_TLS", "false", "", func(r *runFlags) error { return want(r.sec.TLS, false) }},
		{"CANARYD_TLS", "true", "", func(r *runFlags) error { return want(r.sec.TLS, true) }},
		{"CANARYD_TLS", "1", "", func(r *runFlags) error { return want(r.sec.TLS, true) }},
		{"CANARYD_TLS", "yes", `CANARYD_TLS="yes": want true or false`, nil},
		{"CANARYD_NO_CREATE_TOPICS", "0", "", func(r *runFlags) error { return want(r.cfg.NoCreateTopics, false) }},
		{"CANARYD_NO_CREATE_TOPICS", "true", "", func(r *runFlags) error { return want(r.cfg.NoCreateTopics, true) }},
		{"CANARYD_VERBOSE", "on", `CANARYD_VERBOSE="on"`, nil},
		{"CANARYD_WINDOW", "30", `CANARYD_WINDOW="30": time: missing unit in duration`, nil},
		{"CANARYD_WINDOW", "30s", "", func(r *runFlags) error { return want(r.cfg.Window.Width, 30*time.Second) }},
		{"CANARYD_WINDOW", "0s", "--window 0s [CANARYD_WINDOW]: must be positive", nil},
		{"CANARYD_LATENESS", "-1s", "--lateness -1s [CANARYD_LATENESS]: must be positive", nil},
		{"CANARYD_SHUTDOWN_TIMEOUT", "0", "--shutdown-timeout 0s [CANARYD_SHUTDOWN_TIMEOUT]: must be positive", nil},
		{"CANARYD_SHUTDOWN_TIMEOUT", "10s", "", func(r *runFlags) error { return want(r.cfg.ShutdownTimeout, 10*time.Second) }},
		{"CANARYD_MAX_FUTURE", "2m", "", func(r *runFlags) error { return want(r.cfg.Window.MaxFuture, 2*time.Minute) }},
		{"CANARYD_MAX_FUTURE", "-1m", "--max-future -1m0s [CANARYD_MAX_FUTURE]: must be positive", nil},
		{"CANARYD_SESSION_TIMEOUT", "45", `CANARYD_SESSION_TIMEOUT="45": time: missing unit`, nil},
		{"CANARYD_CHECKPOINT_INTERVAL", "-5s", "--checkpoint-interval -5s [CANARYD_CHECKPOINT_INTERVAL]: must be positive", nil},
		{"CANARYD_EVICT_AFTER", "1 h", `CANARYD_EVICT_AFTER="1 h"`, nil},
		{"CANARYD_HISTORY_WINDOWS", "12", "", func(r *runFlags) error { return want(r.cfg.HistoryWindows, 12) }},
		{"CANARYD_HISTORY_WINDOWS", "0x10", `CANARYD_HISTORY_WINDOWS="0x10": want a base-10 integer`, nil},
		{"CANARYD_HISTORY_WINDOWS", "1e3", `CANARYD_HISTORY_WINDOWS="1e3": want a base-10 integer`, nil},
		{"CANARYD_HISTORY_WINDOWS", "0", "--history-windows 0 [CANARYD_HISTORY_WINDOWS]: must be positive", nil},
		{"CANARYD_PARTITIONS", "3000000000", `CANARYD_PARTITIONS="3000000000"`, nil},
		{"CANARYD_PARTITIONS", "12", "", func(r *runFlags) error { return want(r.cfg.Partitions, int32(12)) }},
		// Empty counts as unset.
		{"CANARYD_WINDOW", "", "", func(r *runFlags) error { return want(r.cfg.Window.Width, 10*time.Second) }},
		{"CANARYD_TLS", "", "", func(r *runFlags) error { return want(r.sec.TLS, false) }},
		{"CANARYD_SASL_PASSWORD", "s3cret", "", func(r *runFlags) error { return want(r.sec.Password, "s3cret") }},
	} {
		t.Run(c.name+"="+c.val, func(t *testing.T) {
			r, _, err := parseRun(nil, nil, envMap(c.name, c.val), io.Discard)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got error %v; want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v; want none", err)
			}
			if err := c.check(r); err != nil {
				t.Error(err)
			}
		})
	}
}

func want[T comparable](got, want T) error {
	if got != want {
		return fmt.Errorf("got %v; want %v", got, want)
	}
	return nil
}

// TestStrictFlags: the command line parses as strictly as the environment,
// and wins over it.
func TestStrictFlags(t *testing.T) {
	_, _, err := parseRun([]string{"--window", "30"}, nil, envMap(), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `invalid value "30" for flag -window: time: missing unit in duration`) {
		t.Errorf("--window 30: got %v; want a missing-unit error", err)
	}
	_, _, err = parseRun([]string{"--tls=yes"}, nil, envMap(), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `invalid boolean value "yes" for -tls`) && !strings.Contains(err.Error(), `"yes"`) {
		t.Errorf("--tls=yes: got %v; want an error naming the value", err)
	}
	r, _, err := parseRun([]string{"--window", "20s", "--tls=false"}, nil, envMap("CANARYD_WINDOW", "40s", "CANARYD_TLS", "true"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.Window.Width != 20*time.Second || r.sec.TLS {
		t.Errorf("flags over variables: window %v, tls %v; want 20s, false", r.cfg.Window.Width, r.sec.TLS)
	}
	if _, _, err := parseRun([]string{"extra"}, nil, envMap(), io.Discard); err == nil || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Errorf("a stray argument: got %v; want an error", err)
	}
}

// TestUnknownEnv: a CANARYD_ variable no flag reads is reported.
func TestUnknownEnv(t *testing.T) {
	_, unknown, err := parseRun(nil, []string{"CANARYD_WINDOWS=30s", "CANARYD_WINDOW=30s", "CANARYD_SASL_PASSWORD=x", "HOME=/"}, envMap(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(unknown, ","), "CANARYD_WINDOWS"; got != want {
		t.Errorf("unknown variables %q; want %q", got, want)
	}
}

// TestHelpToStdout: canaryd --help, run --help and validate --help print
// to stdout and exit 0.
func TestHelpToStdout(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "canaryd run      [flags]"},
		{[]string{"-h"}, "canaryd run      [flags]"},
		{[]string{"help"}, "canaryd run      [flags]"},
		{[]string{"run", "--help"}, "[CANARYD_SHUTDOWN_TIMEOUT]"},
		{[]string{"run", "-h"}, "-tls-ca-file"},
		{[]string{"validate", "--help"}, "usage: canaryd validate"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), c.args, &stdout, &stderr)
		if code != 0 || !strings.Contains(stdout.String(), c.want) || stderr.Len() != 0 {
			t.Errorf("canaryd %s: exit %d, stdout has %q: %v, stderr %q; want exit 0, %q on stdout, nothing on stderr",
				strings.Join(c.args, " "), code, c.want, strings.Contains(stdout.String(), c.want), stderr.String(), c.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"run", "--no-such-flag"}, &stdout, &stderr); code != 1 || stdout.Len() != 0 ||
		!strings.Contains(stderr.String(), "flag provided but not defined: -no-such-flag") {
		t.Errorf("run --no-such-flag: exit %d, stdout %q, stderr %q; want exit 1 and the error on stderr", code, stdout.String(), stderr.String())
	}
}
