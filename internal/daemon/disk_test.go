package daemon_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
)

// mountTmpfs mounts a tmpfs of size at a new directory (root only: the test
// is skipped, saying why, where mounting is not permitted) and unmounts it
// when the test ends.
func mountTmpfs(t *testing.T, size string, readOnly bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := "size=" + size
	if readOnly {
		opts += ",ro"
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs to make a real full or read-only file system (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file until the file system is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Logf("filler stopped: %v", err)
			}
			return path
		}
	}
}

// TestCheckpointDiskFaults runs canaryd on a real full file system and on a
// real read-only one (tmpfs mounts). In both, the fault shows in the
// metrics and the logs, judging goes on from memory, and no offset is
// committed that no checkpoint holds; when the fault clears, checkpoints and
// commits resume by themselves. A small (64 MB) volume checkpoints.
func TestCheckpointDiskFaults(t *testing.T) {
	brokers := kafkatest.Brokers(t, kafkatest.KindFake)
	run := func(t *testing.T, stateDir string) (*instance, topics, func()) {
		tp := newTopics(t)
		cfg := testConfig(t, brokers, tp, loopSpecs)
		cfg.StateDir, cfg.StateTopic, cfg.CheckpointInterval = stateDir, tp.events+".state", 200*time.Millisecond
		cfg.Logger = testLogger(t, "canaryd")
		in := runDaemon(t, cfg)
		p := loadtest.DefaultProfile()
		fleet, err := loadtest.NewFleet(loadtest.FleetConfig{Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, Seed: 5,
			Rollouts: []loadtest.Rollout{{Name: "good", Baseline: "v1", Canary: "v2", BaselineProfile: p, CanaryProfile: p, Rate: 200}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { _ = fleet.Run(ctx) })
		stop := func() { cancel(); wg.Wait() }
		t.Cleanup(stop)
		return in, tp, stop
	}
	committed := func(tp topics) int64 {
		var sum int64
		for _, o := range committedOffsets(t, brokers, tp.events+".group", tp.events) {
			sum += o
		}
		return sum
	}
	requests := func(in *instance) float64 { return in.metric("canaryd_requests_total") }

	t.Run("full", func(t *testing.T) {
		fs := mountTmpfs(t, "160m", false)
		in, tp, _ := run(t, filepath.Join(fs, "state"))
		waitFor(t, time.Minute, "checkpoints and commits", func() bool {
			return in.metric("canaryd_checkpoints_total") > 0 && committed(tp) > 0
		})
		filler := fill(t, fs)
		errs0 := in.metric("canaryd_checkpoint_errors_total")
		waitFor(t, 30*time.Second, "checkpoint errors reported", func() bool {
			return in.metric("canaryd_checkpoint_errors_total") > errs0 && in.metric("canaryd_checkpoint_healthy") == 0
		})
		// Offsets marked by the last checkpoints before the disk filled may
		// still be committed by the client's autocommit (every second):
		// measure from when 40 more checkpoints have failed (3 partitions
		// every 200 ms: about 2.7 s).
		waitFor(t, 30*time.Second, "40 more checkpoint errors", func() bool {
			return in.metric("canaryd_checkpoint_errors_total") > errs0+40
		})
		c0, r0 := committed(tp), requests(in)
		waitFor(t, 30*time.Second, "judging from memory with the disk full", func() bool { return requests(in) > r0+500 })
		c1, r1 := committed(tp), requests(in)
		t.Logf("disk full: commits %d → %d, requests judged %.0f → %.0f, checkpoint errors %.0f", c0, c1, r0, r1, in.metric("canaryd_checkpoint_errors_total"))
		if c1 != c0 {
			t.Errorf("offsets committed while no checkpoint could be written: %d → %d", c0, c1)
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "checkpoints and commits resume", func() bool {
			return in.metric("canaryd_checkpoint_healthy") == 1 && committed(tp) > c1
		})
	})

	// A 64 MB volume checkpoints: the reserve follows the checkpoints' size
	// (it was a fixed 64 MB, so such a volume never checkpointed).
	t.Run("64MB", func(t *testing.T) {
		fs := mountTmpfs(t, "64m", false)
		in, tp, _ := run(t, filepath.Join(fs, "state"))
		waitFor(t, time.Minute, "checkpoints and commits on a 64 MB volume", func() bool {
			return in.metric("canaryd_checkpoints_total") > 2 && committed(tp) > 0
		})
		if h, e := in.metric("canaryd_checkpoint_healthy"), in.metric("canaryd_checkpoint_errors_total"); h != 1 || e != 0 {
			t.Errorf("on a 64 MB volume: canaryd_checkpoint_healthy %v, canaryd_checkpoint_errors_total %v; want 1, 0", h, e)
		}
	})

	t.Run("read-only", func(t *testing.T) {
		fs := mountTmpfs(t, "160m", true)
		in, tp, _ := run(t, fs)
		waitFor(t, 30*time.Second, "checkpoint errors reported", func() bool {
			return in.metric("canaryd_checkpoint_errors_total") > 0 && in.metric("canaryd_checkpoint_healthy") == 0
		})
		r0 := requests(in)
		waitFor(t, 30*time.Second, "judging from memory with a read-only state directory", func() bool { return requests(in) > r0+500 })
		if c := committed(tp); c != 0 {
			t.Errorf("offsets committed (%d) with a read-only state directory", c)
		}
		if out, err := exec.Command("mount", "-o", "remount,rw", fs).CombinedOutput(); err != nil {
			t.Fatalf("remount rw: %v: %s", err, out)
		}
		waitFor(t, 30*time.Second, "checkpoints and commits once writable", func() bool {
			return in.metric("canaryd_checkpoint_healthy") == 1 && in.metric("canaryd_checkpoints_total") > 0 && committed(tp) > 0
		})
	})
}

// TestStateDirFullAfterKill9 is the fault an operator met: canaryd killed
// (SIGKILL) with checkpoints in its state directory, the directory's file
// system then filled, and every restart died with SIGBUS inside badger.Open
// (Badger writes through memory-mapped files; on a full tmpfs the write
// faults instead of failing). canaryd runs as a subprocess here, since a
// SIGBUS kills the process that gets it. Now the restart refuses to open the
// store, says why (directory, free and needed bytes), judges from memory,
// commits nothing, and opens the store by itself once there is room.
func TestStateDirFullAfterKill9(t *testing.T) {
	brokers := kafkatest.Brokers(t, kafkatest.KindFake)
	fs := mountTmpfs(t, "96m", false)
	bin := buildCanaryd(t)
	tp := newTopics(t)
	group := tp.events + ".group"
	args := []string{"run", "--brokers", strings.Join(brokers, ","), "--events-topic", tp.events,
		"--control-topic", tp.control, "--dlq-topic", tp.dlq, "--group", group, "--state-topic", tp.events + ".state",
		"--http", "127.0.0.1:0", "--state-dir", filepath.Join(fs, "state"), "--checkpoint-interval", "200ms",
		"--window", "1s", "--lateness", "500ms", "--session-timeout", "6s"}
	p := loadtest.DefaultProfile()
	fleet, err := loadtest.NewFleet(loadtest.FleetConfig{Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, Seed: 7,
		Rollouts: []loadtest.Rollout{{Name: "good", Baseline: "v1", Canary: "v2", BaselineProfile: p, CanaryProfile: p, Rate: 200}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = fleet.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	committed := func() int64 {
		var sum int64
		for _, o := range committedOffsets(t, brokers, group, tp.events) {
			sum += o
		}
		return sum
	}
	metric := func(p *process, name string) float64 { return sumMetric(p.get(t, "/metrics"), name) }

	first := startProcess(t, "first", bin, loopSpecs, args...)
	waitFor(t, time.Minute, "checkpoints and commits", func() bool {
		return metric(first, "canaryd_checkpoints_total") > 0 && committed() > 0
	})
	first.kill(t)
	filler := fill(t, fs)

	// Before the fix, this start died with SIGBUS: startProcess then fails
	// waiting for the HTTP address, with the fault in the logged stderr.
	full := startProcess(t, "full", bin, loopSpecs, args...)
	unusable := slices.IndexFunc(full.lines(), func(l string) bool {
		return strings.Contains(l, "checkpoint directory unusable") && strings.Contains(l, "MB free") && strings.Contains(l, "needs")
	})
	if unusable < 0 {
		t.Errorf("no log line says the state directory is unusable, with its free and needed bytes")
	}
	waitFor(t, 30*time.Second, "checkpoint failures reported", func() bool {
		return metric(full, "canaryd_checkpoint_healthy") == 0 && metric(full, "canaryd_checkpoint_errors_total") > 0
	})
	c0, r0 := committed(), metric(full, "canaryd_requests_total")
	waitFor(t, 30*time.Second, "judging from memory", func() bool {
		return metric(full, "canaryd_requests_total") > r0+500
	})
	if c1 := committed(); c1 != c0 {
		t.Errorf("offsets committed while the state directory was full: %d → %d", c0, c1)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the store opened, checkpoints and commits resume", func() bool {
		return metric(full, "canaryd_checkpoint_healthy") == 1 && committed() > c0
	})
}
