package window

// Tests of the checkpoint store on small and full file systems (checkpoint.md,
// "Disk space"): the free-space checks that keep Badger from SIGBUS.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestOpenNeed: opening counts the blocks of the memtable logs and table
// files a crash left (Badger flushes and may compact them), not their
// lengths (sparse), and not the value log (opening only truncates it).
func TestOpenNeed(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{1}, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("00001.mem", 3<<20)
	write("000002.sst", 1<<20)
	write("000003.vlog", 5<<20)
	f, err := os.Create(filepath.Join(dir, "00004.mem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(2 * memTableSize); err != nil { // mapped, never written
		t.Fatal(err)
	}
	f.Close()
	got, err := openNeed(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(discardFileSize) + saveNeed(0) + 4<<20
	// Block accounting may add a few metadata blocks per file.
	if got < want || got > want+256<<10 {
		t.Fatalf("openNeed = %d; want %d (+ at most 256 kB of metadata blocks)", got, want)
	}
}

// mountTmpfs mounts a tmpfs of size at a new directory (root only: the test
// is skipped, saying why, where mounting is not permitted) and unmounts it
// when the test ends.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs to make a real small or full file system (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillTo writes a file in dir until its file system has at most leave bytes
// free, and returns the file's path.
func fillTo(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		free, err := freeBytes(dir)
		if err != nil {
			t.Fatal(err)
		}
		if free <= leave {
			return path
		}
		if _, err := f.Write(buf[:min(int64(len(buf)), free-leave)]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// TestStoreSmallAndFullVolume runs the store on real small file systems
// (tmpfs). Badger writes through memory-mapped files, and on a full tmpfs a
// write into a mapped page kills the process with SIGBUS: before the free
// space checks, opening on a full volume did (in-process here, so a
// regression kills the test binary, which fails it), and the fixed 64 MB
// reserve meant a 64 MB volume never checkpointed.
func TestStoreSmallAndFullVolume(t *testing.T) {
	fs := mountTmpfs(t, "64m")
	dir := filepath.Join(fs, "state")
	ck := func(size int) Checkpoint {
		snap := make([]byte, size) // incompressible
		r := rand.New(rand.NewPCG(uint64(size), 1))
		for i := 0; i+8 <= size; i += 8 {
			binary.LittleEndian.PutUint64(snap[i:], r.Uint64())
		}
		return Checkpoint{Next: 10, Commit: 5, Replay: 10, Snapshot: snap}
	}

	// A 64 MB volume checkpoints, repeatedly.
	s, err := OpenStore(dir, nil)
	if err != nil {
		t.Fatalf("open on a 64 MB volume: %v", err)
	}
	for i := range 20 {
		if err := s.Save("agent.events", int32(i%3), ck(200<<10), map[string][]byte{"judge/r": []byte("state")}); err != nil {
			t.Fatalf("save %d of 200 kB on a 64 MB volume: %v", i, err)
		}
	}
	if got, err := s.Load("agent.events", 1); err != nil || len(got.Snapshot) != 200<<10 {
		t.Fatalf("load: %d bytes, %v", len(got.Snapshot), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The reserve follows the largest checkpoint written.
	filler := fillTo(t, fs, 30<<20)
	if s, err = OpenStore(dir, nil); err != nil {
		t.Fatalf("open with 30 MB free: %v", err)
	}
	var full *DiskFullError
	if err := s.Save("agent.events", 0, ck(12<<20), nil); !errors.As(err, &full) {
		t.Fatalf("save of 12 MB with 30 MB free (needs %d MB): %v; want a DiskFullError", saveNeed(12<<20)>>20, err)
	}
	t.Logf("refused: %v", full)
	if err := s.Save("agent.events", 0, ck(8<<20), nil); err != nil {
		t.Fatalf("save of 8 MB with 30 MB free (needs %d MB): %v", saveNeed(8<<20)>>20, err)
	}
	// Now about 22 MB free: a small checkpoint still needs room for the
	// largest one (2 × 8 MB + memtable + margin).
	if err := s.Save("agent.events", 1, ck(1<<10), nil); !errors.As(err, &full) {
		t.Fatalf("save of 1 kB after one of 8 MB with ~22 MB free: %v; want a DiskFullError", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A full volume: the store is not opened (no SIGBUS), the error names
	// the directory, the free and the needed bytes, and the degraded store
	// refuses saves and loads nothing.
	fillTo(t, fs, 0)
	s, err = OpenStoreOrDegraded(dir, nil)
	if s == nil {
		t.Fatalf("OpenStoreOrDegraded returned no store: %v", err)
	}
	degraded := s
	t.Cleanup(func() { degraded.Close() })
	if !errors.As(err, &full) || full.Dir != dir || full.Free >= full.Need || full.Need < saveNeed(0) {
		t.Fatalf("open on a full volume: %v; want a DiskFullError naming %s with free < need", err, dir)
	}
	for _, want := range []string{dir, "MB free", "needs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	t.Logf("refused: %v", err)
	if err := s.Save("agent.events", 0, ck(1<<10), nil); !errors.Is(err, ErrDiskFull) {
		t.Errorf("save on the degraded store: %v; want ErrDiskFull", err)
	}
	if _, err := s.Load("agent.events", 0); !errors.Is(err, ErrNoCheckpoint) {
		t.Errorf("load on the degraded store: %v; want ErrNoCheckpoint", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
}
