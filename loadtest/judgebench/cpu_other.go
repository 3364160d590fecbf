//go:build !linux

package judgebench

import "time"

var start = time.Now()

// threadCPU falls back to wall time where per-thread CPU time is not
// available: per-scenario CPU is then wall time per run.
func threadCPU() int64 { return int64(time.Since(start)) }

// processCPU falls back to wall time.
func processCPU() int64 { return int64(time.Since(start)) }
