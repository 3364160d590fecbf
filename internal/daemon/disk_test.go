package daemon_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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
// commits resume by themselves.
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
		c0, r0 := committed(tp), requests(in)
		time.Sleep(3 * time.Second)
		c1, r1 := committed(tp), requests(in)
		t.Logf("disk full: commits %d → %d, requests judged %.0f → %.0f, checkpoint errors %.0f", c0, c1, r0, r1, in.metric("canaryd_checkpoint_errors_total"))
		if c1 != c0 {
			t.Errorf("offsets committed while no checkpoint could be written: %d → %d", c0, c1)
		}
		if r1 <= r0 {
			t.Errorf("judging stopped with the disk full: requests %.0f → %.0f", r0, r1)
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "checkpoints and commits resume", func() bool {
			return in.metric("canaryd_checkpoint_healthy") == 1 && committed(tp) > c1
		})
	})

	t.Run("read-only", func(t *testing.T) {
		fs := mountTmpfs(t, "160m", true)
		in, tp, _ := run(t, fs)
		waitFor(t, 30*time.Second, "checkpoint errors reported", func() bool {
			return in.metric("canaryd_checkpoint_errors_total") > 0 && in.metric("canaryd_checkpoint_healthy") == 0
		})
		r0 := requests(in)
		time.Sleep(2 * time.Second)
		if c := committed(tp); c != 0 {
			t.Errorf("offsets committed (%d) with a read-only state directory", c)
		}
		if r1 := requests(in); r1 <= r0 {
			t.Errorf("judging stopped with a read-only state directory: requests %.0f → %.0f", r0, r1)
		}
		if out, err := exec.Command("mount", "-o", "remount,rw", fs).CombinedOutput(); err != nil {
			t.Fatalf("remount rw: %v: %s", err, out)
		}
		waitFor(t, 30*time.Second, "checkpoints and commits once writable", func() bool {
			return in.metric("canaryd_checkpoint_healthy") == 1 && in.metric("canaryd_checkpoints_total") > 0 && committed(tp) > 0
		})
	})
}
