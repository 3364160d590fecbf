package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
)

// configMapDir lays out a directory as a Kubernetes ConfigMap volume does
// (files are symlinks into ..data, itself a symlink to a timestamped
// directory), and returns a function that swaps in new contents the way
// the kubelet does: a new directory, then an atomic rename of ..data.
func configMapDir(t *testing.T, files map[string]string) (dir string, swap func(map[string]string)) {
	t.Helper()
	dir = t.TempDir()
	n := 0
	write := func(files map[string]string) {
		n++
		ts := fmt.Sprintf("..2026_12_03_00_00_%02d.%d", n, n)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, ts, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(dir, name)
			if _, err := os.Lstat(link); os.IsNotExist(err) {
				if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
					t.Fatal(err)
				}
			}
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(ts, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write(files)
	return dir, write
}

func relSpec(baseline, canary, extra string) string {
	return fmt.Sprintf("rollout: rel\nbaseline: %s\ncanary: %s\nsteps: [{weight: 20, min_duration: 1h}, {weight: 100}]\n%s", baseline, canary, extra)
}

// produceRel writes a batch of healthy events of both versions, stamped now.
func produceRel(t *testing.T, cl *kgo.Client, versions ...string) {
	t.Helper()
	now := time.Now()
	var recs []*kgo.Record
	for k := range 200 {
		recs = append(recs, &kgo.Record{Key: []byte("rel"), Value: fmt.Appendf(nil,
			`{"rollout":"rel","version":%q,"kind":"llm","name":"m","ts":%d,"duration_ms":20,"status":"ok"}`, versions[k%len(versions)], now.Add(time.Duration(k)*time.Microsecond).UnixNano())})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestSpecReload: specs in a ConfigMap-shaped directory change under a
// running daemon. A new canary version starts a new release whose commands
// continue the rollout's seq (the previous release ends as superseded, in
// the status); an invalid file keeps the last valid specs and says so in
// the status and a metric; an edit that cannot apply (alpha of a running
// rollout) is refused with its reason; one that can (a later step's
// weight) applies.
func TestSpecReload(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			kafkatest.CreateTopics(t, brokers, 3, tp.events, tp.control, tp.dlq)
			dir, swap := configMapDir(t, map[string]string{"rel.yaml": relSpec("v1", "v2", "")})
			cfg := testConfig(t, brokers, tp, relSpec("v1", "v2", ""))
			cfg.SpecsPath, cfg.SpecsPoll, cfg.Logger = dir, 50*time.Millisecond, slog.New(slog.DiscardHandler)
			d := runDaemon(t, cfg).d
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(tp.events))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			commandsOf := func(canary string) func(map[string][]schemas.Command) bool {
				return func(cs map[string][]schemas.Command) bool {
					for _, c := range cs["rel"] {
						if c.Canary == canary {
							return true
						}
					}
					return false
				}
			}
			untilCommand := func(canary string) []schemas.Command {
				t.Helper()
				deadline := time.Now().Add(time.Minute)
				for {
					produceRel(t, cl, "v1", "v2", "v3")
					if cs := readCommands(t, brokers, tp.control, 2*time.Second, commandsOf(canary)); commandsOf(canary)(cs) {
						return cs["rel"]
					}
					if time.Now().After(deadline) {
						t.Fatalf("no command for canary %s after a minute", canary)
					}
				}
			}
			status := func() detector.Status {
				st, ok := d.Status("rel")
				if !ok {
					t.Fatal("rollout rel unknown")
				}
				return st
			}
			untilCommand("v2")

			// A new canary version: a new release.
			swap(map[string]string{"rel.yaml": relSpec("v1", "v3", "")})
			waitFor(t, 30*time.Second, "the new release in force", func() bool { return status().Canary == "v3" })
			st := status()
			if len(st.Previous) != 1 || st.Previous[0].Canary != "v2" || st.Previous[0].Final != "superseded" {
				b, _ := json.Marshal(st.Previous)
				t.Errorf("previous releases: %s; want v2 superseded", b)
			}
			cmds := untilCommand("v3")
			var seqs []string
			for _, c := range cmds {
				seqs = append(seqs, fmt.Sprintf("%d %s %s", c.Seq, c.Action, c.Canary))
			}
			if want := []string{"1 set_weight v2", "2 set_weight v3"}; fmt.Sprint(seqs) != fmt.Sprint(want) {
				t.Errorf("commands: %q; want %q", seqs, want)
			}

			// An invalid file: the last valid specs stay, the status says why.
			swap(map[string]string{"rel.yaml": "rollout: rel\nbaseline: v1\ncanary: [oops\n"})
			waitFor(t, 30*time.Second, "the invalid specs reported", func() bool {
				return strings.Contains(status().SpecError, "spec files invalid") && sumMetric(get(t, "http://"+d.HTTPAddr()+"/metrics"), "canaryd_specs_valid") == 0
			})
			if st := status(); st.Canary != "v3" {
				t.Errorf("canary after an invalid file: %s; want v3 (the last valid spec)", st.Canary)
			}

			// An edit that cannot apply, then one that can.
			swap(map[string]string{"rel.yaml": relSpec("v1", "v3", "alpha: 0.01\n")})
			waitFor(t, 30*time.Second, "the alpha edit refused", func() bool { return strings.Contains(status().SpecError, "cannot change alpha") })
			swap(map[string]string{"rel.yaml": strings.Replace(relSpec("v1", "v3", ""), "{weight: 100}", "{weight: 50}, {weight: 100}", 1)})
			waitFor(t, 30*time.Second, "the step edit applied", func() bool { st := status(); return st.SpecError == "" && st.Steps == 2 })
			if v := sumMetric(get(t, "http://"+d.HTTPAddr()+"/metrics"), "canaryd_specs_valid"); v != 1 {
				t.Errorf("canaryd_specs_valid = %v after a valid reload; want 1", v)
			}
		})
	}
}

// TestSIGHUPReloads: SIGHUP makes canaryd run read its specs again (here
// with polling off) and never ends the process; SIGTERM still stops it
// cleanly.
func TestSIGHUPReloads(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.Brokers(t, kafkatest.Kinds()[0])
	tp := newTopics(t)
	bin := buildCanaryd(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "rel.yaml")
	if err := os.WriteFile(file, []byte(relSpec("v1", "v2", "")), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "hup", bin, "", "run", "--http", "127.0.0.1:0", "--brokers", strings.Join(brokers, ","), "--events-topic", tp.events,
		"--control-topic", tp.control, "--dlq-topic", tp.dlq, "--group", tp.events+".group", "--specs", file, "--specs-poll", "1h")
	canary := func() string {
		var st detector.Status
		getJSON(t, "http://"+p.addr+"/v1/rollouts/rel", &st)
		return st.Canary
	}
	if c := canary(); c != "v2" {
		t.Fatalf("canary %s; want v2", c)
	}
	if err := os.WriteFile(file, []byte(relSpec("v1", "v3", "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the spec read again after SIGHUP", func() bool { return canary() == "v3" })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("canaryd after SIGHUP and SIGTERM: %v; want exit 0", err)
	}
}
