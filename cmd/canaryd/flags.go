package main

import (
	"errors"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Every flag of `canaryd run` has an environment variable: CANARYD_ and the
// flag's name in upper snake case (--events-topic: CANARYD_EVENTS_TOPIC),
// except where envNames says otherwise. A variable set to the empty string
// counts as unset. Command-line flags win over variables. Values are parsed
// as strictly as on the command line: booleans by strconv.ParseBool,
// durations by time.ParseDuration, integers in base 10; a bad value is a
// start error naming the variable and the value.

// envNames holds the variables that are not derived from their flag's name.
var envNames = map[string]string{"v": "CANARYD_VERBOSE"}

// envName returns the environment variable of a run flag.
func envName(flagName string) string {
	if n, ok := envNames[flagName]; ok {
		return n
	}
	return "CANARYD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envOnly are the variables that have no flag (secrets do not belong on a
// command line) and those of the tooling around canaryd; any other unknown
// CANARYD_ variable is reported as a likely typo.
var envOnly = map[string]bool{
	"CANARYD_SASL_PASSWORD": true,
	// The client commands' (status, wait) connection: see clientEnv.
	"CANARYD_SERVER": true, "CANARYD_TOKEN_FILE": true, "CANARYD_CA_FILE": true,
	// Tests, scripts and the Makefile.
	"CANARYD_KAFKA": true, "CANARYD_PYTHON": true, "CANARYD_CACHE": true,
	"CANARYD_WRITE_FIXTURE": true, "CANARYD_CRASH_EVENTS": true,
}

// applyEnv sets every flag of fs whose variable is set and not empty, and
// returns the bad values, each naming its variable. Call it before fs.Parse
// so the command line wins.
func applyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		v, ok := lookup(name)
		if !ok || v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %v", name, v, err))
		}
	})
	return errors.Join(errs...)
}

// unknownEnv lists the CANARYD_ variables of environ that no flag of fs and
// no entry of envOnly knows.
func unknownEnv(fs *flag.FlagSet, environ []string) []string {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "CANARYD_") && !known[k] && !envOnly[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// withEnvUsage appends each flag's variable to its usage, so --help shows
// it, and names the kind of value the strict types take (flag prints
// "value" for types it does not know).
func withEnvUsage(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(f.Usage, "`") {
			switch f.Value.(type) {
			case *durationValue:
				f.Usage += " (a `duration`)"
			case *intValue, *int32Value:
				f.Usage += " (an `int`)"
			}
		}
		f.Usage += " [" + envName(f.Name) + "]"
	})
}

// Strict flag values. Unlike the flag package's own, their errors say what
// is wrong ("time: missing unit in duration", not "parse error"), and the
// same parsing serves the command line and the environment.

type boolValue bool

func (b *boolValue) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false (or 1, 0, t, f)")
	}
	*b = boolValue(v)
	return nil
}
func (b *boolValue) String() string   { return strconv.FormatBool(bool(*b)) }
func (b *boolValue) Get() any         { return bool(*b) }
func (b *boolValue) IsBoolFlag() bool { return true }

type durationValue time.Duration

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}
func (d *durationValue) String() string { return time.Duration(*d).String() }
func (d *durationValue) Get() any       { return time.Duration(*d) }

type intValue int

func (i *intValue) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, strconv.IntSize)
	if err != nil {
		return fmt.Errorf("want a base-10 integer")
	}
	*i = intValue(v)
	return nil
}
func (i *intValue) String() string { return strconv.Itoa(int(*i)) }
func (i *intValue) Get() any       { return int(*i) }

type int32Value int32

func (i *int32Value) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return fmt.Errorf("want a base-10 integer below 2^31")
	}
	*i = int32Value(v)
	return nil
}
func (i *int32Value) String() string { return strconv.FormatInt(int64(*i), 10) }
func (i *int32Value) Get() any       { return int32(*i) }

// positive refuses a non-positive value of a duration or integer flag,
// naming the flag and its variable.
func positive[T int | int32 | time.Duration](name string, v T) error {
	if v > 0 {
		return nil
	}
	return fmt.Errorf("--%s %v [%s]: must be positive", name, v, envName(name))
}
