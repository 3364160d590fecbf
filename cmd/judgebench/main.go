// Command judgebench runs the detector benchmark of loadtest/judgebench:
// canaryd's suite, a Kayenta-like judge and threshold rules side by side on
// simulated canary streams, and prints a markdown table.
//
//	go run ./cmd/judgebench                  # full benchmark (make bench-detector)
//	go run ./cmd/judgebench -quick           # fewer runs, wider intervals
//	go run ./cmd/judgebench -scenarios 'A/A|errors ×2' -runs 200
//	go run ./cmd/judgebench -list            # scenario names
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"

	"github.com/inferensys/canaryd/loadtest/judgebench"
)

func main() {
	var (
		runs      = flag.Int("runs", 0, "runs per scenario (0: each scenario's own count)")
		quick     = flag.Bool("quick", false, "the smaller version: each scenario's quick run count")
		scenarios = flag.String("scenarios", "", `"|"-separated, case-insensitive substrings of scenario names (default: all)`)
		seed      = flag.Uint64("seed", 1, "random seed")
		parallel  = flag.Int("parallel", runtime.GOMAXPROCS(0), "worker goroutines")
		list      = flag.Bool("list", false, "list the scenarios and exit")
		out       = flag.String("o", "", "also write the table to this file")
		quiet     = flag.Bool("q", false, "no progress lines on stderr")
		specExtra = flag.String("spec-extra", "", `YAML lines appended to canaryd's spec, e.g. "alpha_weights: {error_rate: 40}"`)
		oneSec    = flag.Int("one-second", 0, "also run canaryd on 1 s windows in the first N runs of every scenario (costly)")
		cpuProf   = flag.String("cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	)
	flag.Parse()
	if *specExtra != "" {
		judgebench.SpecExtra = strings.TrimRight(*specExtra, "\n") + "\n"
	}
	scs := judgebench.Filter(judgebench.Scenarios(), *scenarios)
	if *list {
		for _, s := range scs {
			fmt.Printf("%-12s %s\n", s.Kind, s.Name)
		}
		return
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "judgebench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "judgebench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	opt := judgebench.Options{Runs: *runs, Quick: *quick, Seed: *seed, Parallel: *parallel, OneSecondRuns: *oneSec}
	if !*quiet {
		opt.Progress = os.Stderr
	}
	rep, err := judgebench.Run(scs, opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "judgebench:", err)
		os.Exit(2)
	}
	rep.Markdown(os.Stdout)
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "judgebench:", err)
			os.Exit(1)
		}
		rep.Markdown(f)
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "judgebench:", err)
			os.Exit(1)
		}
	}
}
