package judgebench

import "syscall"

// rusageThread is RUSAGE_THREAD: the calling thread's usage (Linux).
const rusageThread = 1

// threadCPU returns the CPU time (user+system) the calling OS thread has
// used, in nanoseconds; callers lock their goroutine to its thread.
func threadCPU() int64 { return rusage(rusageThread) }

// processCPU returns the CPU time the process has used, in nanoseconds.
func processCPU() int64 { return rusage(syscall.RUSAGE_SELF) }

func rusage(who int) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
