package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// CheckpointVersion is the version of the checkpoint format (checkpoint.md,
// "Versions"): the envelope and everything in it. Envelopes are written with
// it; versions from oldestCheckpointVersion on are read. A fixture of each
// released version is kept under testdata/ and loaded by a test.
//
// Version 2: session units in the snapshot table and in Agg's encoding.
// Version 3: the partition's watermark quorum and recent arrival lags in the
// snapshot's partition metadata.
// Version 4: sessions first seen (new_sessions, Agg encoding version 3) and
// the partition's session memory in the snapshot's partition metadata.
const CheckpointVersion = 4

// oldestCheckpointVersion is the oldest version open reads.
const oldestCheckpointVersion = 1

// Checkpoint is one Kafka partition's durable state.
type Checkpoint struct {
	// Next is the offset after the last record counted in Snapshot: on
	// recovery, consumption resumes there.
	Next  int64
	Epoch int32 // leader epoch of the last record
	// Commit is the offset committed to Kafka after this checkpoint: the
	// smallest offset still only in an open window. A group offset above it
	// means another consumer went on from here, and the checkpoint is stale.
	Commit int64
	// Replay is where recovery reads from: Next, or earlier when a decoder
	// held data of older records (session assembly's traces in flight).
	// Records in [Replay, Next) are decoded again to rebuild that state,
	// their events dropped.
	Replay   int64
	SavedAt  int64  // wall clock, unix ns
	Snapshot []byte // Partition.Snapshot: Arrow IPC stream
}

// Store keeps checkpoints in Badger. Each Save is one transaction: the
// partition's checkpoint and the side entries (the detector's state) are
// durable together or not at all. Safe for concurrent use.
//
// Keys: "ck/p/<topic>/<partition>" for partitions, "ck/s/<name>" for side
// entries. Values: the envelope of checkpoint.md (magic, version, CRC-32C).
type Store struct {
	dir    string
	logger *slog.Logger

	mu       sync.Mutex // guards db, openErr, lastOpen, opening, closed; never held across I/O
	db       *badger.DB // nil while the directory cannot be opened
	openErr  error
	lastOpen time.Time
	opening  bool // a goroutine is opening db (outside mu)
	closed   bool

	// largest is the largest transaction Save has written (bytes), and
	// pending the free space claimed by writes in progress (Save and the
	// value-log GC): see reserve.
	largest atomic.Int64
	pending atomic.Int64

	stop chan struct{}
	wg   sync.WaitGroup // the value-log GC goroutine
}

// Envelope magics.
var (
	magicPartition = [4]byte{'C', 'D', 'C', 'P'}
	magicSide      = [4]byte{'C', 'D', 'C', 'S'}
)

const envelopeLen = 4 + 2 + 2 + 4 // magic, version, reserved, crc32c

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenStore opens (creating) the Badger database in dir and starts one
// goroutine that garbage-collects its value log; Close stops it.
func OpenStore(dir string, logger *slog.Logger) (*Store, error) {
	s := newStore(dir, logger)
	db, err := openBadger(dir, s.logger)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.start()
	return s, nil
}

// OpenStoreOrDegraded opens the store like OpenStore; when dir cannot be
// opened (read-only, missing permissions, full), it returns a store that
// fails every Save with that error, retrying to open dir at most every 5
// seconds, and loads nothing: the caller judges from memory meanwhile.
func OpenStoreOrDegraded(dir string, logger *slog.Logger) (*Store, error) {
	s := newStore(dir, logger)
	s.db, s.openErr = openBadger(dir, s.logger)
	s.lastOpen = time.Now()
	s.start()
	return s, s.openErr
}

func newStore(dir string, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{dir: dir, logger: logger, stop: make(chan struct{})}
}

func (s *Store) start() {
	s.wg.Add(1)
	go s.gcLoop()
}

// retryOpen is how often a degraded store tries to open its directory again.
const retryOpen = 5 * time.Second

// handle returns the open database, retrying to open it when it failed. The
// open runs outside s.mu: a file system that blocks (frozen, a hung NFS)
// blocks the goroutine that opens, and the others get the last error.
func (s *Store) handle() (*badger.DB, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errStoreClosed
	}
	if s.db != nil || s.opening || time.Since(s.lastOpen) < retryOpen {
		db, err := s.db, s.openErr
		s.mu.Unlock()
		return db, err
	}
	s.opening, s.lastOpen = true, time.Now()
	s.mu.Unlock()

	db, err := openBadger(s.dir, s.logger)

	s.mu.Lock()
	s.opening = false
	closed := s.closed
	if !closed {
		s.db, s.openErr = db, err
	}
	s.mu.Unlock()
	if closed {
		// Close ran meanwhile: nobody else will close this one.
		err = errStoreClosed
		if db != nil {
			err = errors.Join(err, db.Close())
		}
		return nil, err
	}
	if err == nil {
		s.logger.Info("checkpoint directory usable again", "dir", s.dir)
	}
	return db, err
}

var errStoreClosed = errors.New("checkpoint store closed")

// Badger's sizes. Badger maps its memtable's write-ahead log (2×
// memTableSize) and each value-log file (2× valueLogFileSize) into memory
// and writes through the mapping; on a file system without free blocks, a
// write into a mapped page that has none yet kills the process with SIGBUS
// (measured on a full tmpfs, in badger.Open and in writes) instead of
// returning an error. Mapped files are sparse: only written pages take
// blocks. So every write is preceded by a free-space check against what it
// can make Badger write (openNeed, saveNeed, gcNeed; checkpoint.md, "Disk
// space"), and the sizes are set here, small and explicit, so that those
// bounds are known:
//
//   - memTableSize bounds what a memtable holds before it is flushed to a
//     table file (keys, small values and value pointers: a checkpoint's
//     large values live in the value log), and so what a flush writes;
//   - valueLogFileSize is where Badger starts a new value-log file, and the
//     largest value it accepts: a checkpoint transaction cannot exceed it;
//   - discardFileSize is Badger's own discard-statistics file (1 MB, fixed
//     by Badger);
//   - diskMargin covers file headers, the manifest, the last page of each
//     file and rounding.
const (
	memTableSize     = 8 << 20
	valueLogFileSize = 16 << 20
	discardFileSize  = 1 << 20
	diskMargin       = 2 << 20
)

// ErrDiskFull: the checkpoint directory's file system lacks the room that
// opening Badger or writing a checkpoint needs (see openNeed, saveNeed).
var ErrDiskFull = errors.New("checkpoint directory full")

// DiskFullError is the error (wrapping ErrDiskFull) of a write or an open
// refused for lack of free space: it names the directory, the bytes free
// and the bytes needed.
type DiskFullError struct {
	Op   string // "open", "save"
	Dir  string
	Free int64
	Need int64
}

func (e *DiskFullError) Error() string {
	return fmt.Sprintf("%s: %s has %s free; %s needs %s (refused rather than risk SIGBUS in Badger's memory-mapped writes; see window/checkpoint.md, \"Disk space\")",
		ErrDiskFull, e.Dir, mb(e.Free), e.Op, mb(e.Need))
}

func (e *DiskFullError) Unwrap() error { return ErrDiskFull }

func mb(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MB" }

// openNeed returns the free bytes that opening Badger in dir needs: what
// Badger writes on open without a Save asking it to — the discard-stats
// file, a table file for every memtable a crash left behind (it flushes
// them; each is at most its log's blocks), a rewrite of every table file (a
// compaction writes the new tables before deleting the old) — plus the
// smallest checkpoint's reserve (saveNeed(0)): a store that cannot write a
// checkpoint is not opened.
func openNeed(dir string) (int64, error) {
	need := int64(discardFileSize) + saveNeed(0)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".mem", ".sst":
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			need += allocated(fi)
		}
	}
	return need, nil
}

// saveNeed returns the free space a checkpoint transaction of n bytes needs:
// n in the value log, n again for the value-log GC's copy of it before the
// old copy goes, a memtable's flush (the write may fill it) and the margin.
func saveNeed(n int64) int64 { return 2*n + memTableSize + diskMargin }

// gcNeed returns the free space one value-log GC run needs given the
// largest transaction written: GC rewrites a file only when at least half
// of it is garbage (RunValueLogGC(0.5)), so it copies at most half of one
// file, which is at most valueLogFileSize plus one value long; plus the
// memtable flush and the margin.
func gcNeed(largest int64) int64 { return (valueLogFileSize+largest)/2 + memTableSize + diskMargin }

// reserve claims need bytes of the directory's free space for a write in
// progress, counting the claims of the other writes in progress (Save and
// GC run concurrently, and each needs its own room). release returns the
// claim when the write is done.
func (s *Store) reserve(op string, need int64) (release func(), err error) {
	free, err := freeBytes(s.dir)
	if err != nil {
		// No statfs, no guard: Badger reports what it can.
		return func() {}, nil
	}
	total := s.pending.Add(need)
	if free < total {
		s.pending.Add(-need)
		return nil, &DiskFullError{Op: op, Dir: s.dir, Free: free, Need: total}
	}
	return func() { s.pending.Add(-need) }, nil
}

func openBadger(dir string, logger *slog.Logger) (*badger.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open checkpoint store: %w", err)
	}
	// Refuse rather than SIGBUS: see memTableSize.
	if need, err := openNeed(dir); err == nil {
		if free, err := freeBytes(dir); err == nil && free < need {
			return nil, &DiskFullError{Op: "opening the checkpoint store", Dir: dir, Free: free, Need: need}
		}
	}
	// Small caches: canaryd reads checkpoints only at start. Sync writes: a
	// checkpoint whose offsets get committed must survive a power loss.
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{logger}).
		WithSyncWrites(true).
		WithMemTableSize(memTableSize).
		WithNumMemtables(2).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithValueLogFileSize(valueLogFileSize).
		WithValueThreshold(1 << 10).
		WithNumCompactors(2)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint store %s: %w", dir, err)
	}
	return db, nil
}

// Close stops the GC goroutine and closes the database.
func (s *Store) Close() error {
	close(s.stop)
	s.wg.Wait()
	s.mu.Lock()
	db := s.db
	s.db, s.closed = nil, true
	s.mu.Unlock()
	if db == nil {
		return nil
	}
	return db.Close()
}

// gcLoop reclaims value-log space: every checkpoint overwrites the previous
// one, so old values pile up otherwise.
func (s *Store) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.mu.Lock()
			db := s.db
			s.mu.Unlock()
			if db == nil {
				continue
			}
			for {
				// GC rewrites values: only with room for it (see gcNeed).
				release, err := s.reserve("value-log GC", gcNeed(s.largest.Load()))
				if err != nil {
					break
				}
				err = db.RunValueLogGC(0.5)
				release()
				if err != nil {
					break
				}
			}
		}
	}
}

func partKey(topic string, p int32) []byte {
	return []byte("ck/p/" + topic + "/" + strconv.Itoa(int(p)))
}

const sidePrefix = "ck/s/"

func seal(magic [4]byte, body []byte) []byte {
	out := make([]byte, envelopeLen, envelopeLen+len(body))
	copy(out, magic[:])
	binary.LittleEndian.PutUint16(out[4:], CheckpointVersion)
	out = append(out, body...)
	binary.LittleEndian.PutUint32(out[8:], crc32.Checksum(out[envelopeLen:], castagnoli))
	return out
}

func open(magic [4]byte, v []byte) ([]byte, error) {
	if len(v) < envelopeLen || [4]byte(v[:4]) != magic {
		return nil, fmt.Errorf("%w: bad envelope", ErrCorrupt)
	}
	if ver := binary.LittleEndian.Uint16(v[4:]); ver < oldestCheckpointVersion || ver > CheckpointVersion {
		return nil, fmt.Errorf("%w: checkpoint version %d, this canaryd reads %d to %d", ErrCorrupt, ver, oldestCheckpointVersion, CheckpointVersion)
	}
	if got, want := crc32.Checksum(v[envelopeLen:], castagnoli), binary.LittleEndian.Uint32(v[8:]); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	return v[envelopeLen:], nil
}

// checkpointHeaderLen is the fixed part of a partition body.
const checkpointHeaderLen = 8 + 4 + 8 + 8 + 8

// EncodeCheckpoint returns ck in the checkpoint format (envelope + body).
func EncodeCheckpoint(ck Checkpoint) []byte {
	body := make([]byte, 0, checkpointHeaderLen+len(ck.Snapshot))
	body = binary.LittleEndian.AppendUint64(body, uint64(ck.Next))
	body = binary.LittleEndian.AppendUint32(body, uint32(ck.Epoch))
	body = binary.LittleEndian.AppendUint64(body, uint64(ck.Commit))
	body = binary.LittleEndian.AppendUint64(body, uint64(ck.Replay))
	body = binary.LittleEndian.AppendUint64(body, uint64(ck.SavedAt))
	body = append(body, ck.Snapshot...)
	return seal(magicPartition, body)
}

// DecodeCheckpoint parses EncodeCheckpoint's output, checking its checksum.
func DecodeCheckpoint(v []byte) (Checkpoint, error) {
	body, err := open(magicPartition, v)
	if err != nil {
		return Checkpoint{}, err
	}
	if len(body) < checkpointHeaderLen {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint body of %d bytes", ErrCorrupt, len(body))
	}
	ck := Checkpoint{
		Next:     int64(binary.LittleEndian.Uint64(body)),
		Epoch:    int32(binary.LittleEndian.Uint32(body[8:])),
		Commit:   int64(binary.LittleEndian.Uint64(body[12:])),
		Replay:   int64(binary.LittleEndian.Uint64(body[20:])),
		SavedAt:  int64(binary.LittleEndian.Uint64(body[28:])),
		Snapshot: body[checkpointHeaderLen:],
	}
	if ck.Replay > ck.Next || ck.Commit > ck.Next {
		return Checkpoint{}, fmt.Errorf("%w: offsets replay %d, commit %d beyond next %d", ErrCorrupt, ck.Replay, ck.Commit, ck.Next)
	}
	return ck, nil
}

// Save writes a partition's checkpoint and the side entries in one
// transaction, synced to disk before it returns.
func (s *Store) Save(topic string, p int32, ck Checkpoint, side map[string][]byte) error {
	db, err := s.handle()
	if err != nil {
		return err
	}
	v := EncodeCheckpoint(ck)
	n := int64(len(v))
	for k, b := range side {
		n += int64(len(sidePrefix) + len(k) + envelopeLen + len(b))
	}
	// The reserve is sized from the largest checkpoint written, not only
	// this one: the next checkpoint of the largest partition must still fit.
	largest := max(n, s.largest.Load())
	release, err := s.reserve(fmt.Sprintf("a checkpoint of %s (largest so far %s)", mb(n), mb(largest)), saveNeed(largest))
	if err != nil {
		return err
	}
	defer release()
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(partKey(topic, p), v); err != nil {
			return err
		}
		for k, v := range side {
			if err := txn.Set([]byte(sidePrefix+k), seal(magicSide, v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		for l := s.largest.Load(); n > l && !s.largest.CompareAndSwap(l, n); l = s.largest.Load() {
		}
	}
	return err
}

// ErrNoCheckpoint is returned by Load for a partition never checkpointed.
var ErrNoCheckpoint = errors.New("no checkpoint")

// Load returns a partition's checkpoint: ErrNoCheckpoint when there is none,
// an error wrapping ErrCorrupt when it fails its checksum or does not parse.
func (s *Store) Load(topic string, p int32) (Checkpoint, error) {
	var ck Checkpoint
	db, err := s.handle()
	if err != nil {
		return ck, ErrNoCheckpoint
	}
	err = db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(partKey(topic, p))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNoCheckpoint
		}
		if err != nil {
			return err
		}
		v, err := it.ValueCopy(nil)
		if err != nil {
			return err
		}
		ck, err = DecodeCheckpoint(v)
		return err
	})
	return ck, err
}

// Side returns every side entry whose checksum holds, and the keys of those
// that failed it.
func (s *Store) Side() (map[string][]byte, []string, error) {
	out := map[string][]byte{}
	var bad []string
	db, err := s.handle()
	if err != nil {
		return out, nil, nil
	}
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(sidePrefix), PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := strings.TrimPrefix(string(it.Item().Key()), sidePrefix)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			body, err := open(magicSide, v)
			if err != nil {
				bad = append(bad, k)
				continue
			}
			out[k] = body
		}
		return nil
	})
	return out, bad, err
}

// RawSet writes a raw value under a partition's key: for tests that corrupt
// a checkpoint.
func (s *Store) RawSet(topic string, p int32, v []byte) error {
	db, err := s.handle()
	if err != nil {
		return err
	}
	release, err := s.reserve("a raw write", saveNeed(int64(len(v))))
	if err != nil {
		return err
	}
	defer release()
	return db.Update(func(txn *badger.Txn) error { return txn.Set(partKey(topic, p), v) })
}

// badgerLogger sends Badger's logs to slog: errors and warnings only.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Infof(string, ...any)  {}
func (b badgerLogger) Debugf(string, ...any) {}

var magicHandover = [4]byte{'C', 'D', 'C', 'H'}

// EncodeHandover returns a partition's checkpoint and the side entries that
// go with it (the state of the judges of its rollouts) as one value, for
// publishing to the state topic when the partition is revoked: the next
// owner, on another machine, continues from it. checkpoint.md has the layout.
func EncodeHandover(ck Checkpoint, side map[string][]byte) []byte {
	var body []byte
	body = binary.AppendUvarint(body, uint64(len(side)))
	keys := make([]string, 0, len(side))
	for k := range side {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		body = binary.AppendUvarint(body, uint64(len(k)))
		body = append(body, k...)
		body = binary.AppendUvarint(body, uint64(len(side[k])))
		body = append(body, side[k]...)
	}
	body = append(body, EncodeCheckpoint(ck)...)
	return seal(magicHandover, body)
}

// DecodeHandover parses EncodeHandover's output, checking both checksums.
func DecodeHandover(v []byte) (Checkpoint, map[string][]byte, error) {
	b, err := open(magicHandover, v)
	if err != nil {
		return Checkpoint{}, nil, err
	}
	n, b, ok := uvarint(b)
	if !ok || n > maxCounts {
		return Checkpoint{}, nil, fmt.Errorf("%w: handover side entries", ErrCorrupt)
	}
	side := make(map[string][]byte, n)
	for range n {
		var kl, vl uint64
		if kl, b, ok = uvarint(b); !ok || kl > uint64(len(b)) {
			return Checkpoint{}, nil, fmt.Errorf("%w: handover side key", ErrCorrupt)
		}
		k := string(b[:kl])
		b = b[kl:]
		if vl, b, ok = uvarint(b); !ok || vl > uint64(len(b)) {
			return Checkpoint{}, nil, fmt.Errorf("%w: handover side value", ErrCorrupt)
		}
		side[k] = b[:vl]
		b = b[vl:]
	}
	ck, err := DecodeCheckpoint(b)
	return ck, side, err
}

// Rollouts returns the names of the rollouts the partition holds state of.
func (p *Partition) Rollouts() []string {
	out := make([]string, len(p.order))
	for i, r := range p.order {
		out[i] = r.name
	}
	return out
}

// freeBytes returns the bytes available to canaryd on dir's file system.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// allocated returns the bytes a file takes on its file system: its blocks,
// not its length (Badger's mapped files are sparse).
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
