package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and commit are set by make build:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=3f089cb..."
//
// Empty, they come from the build information the go command records
// (the module version, vcs.revision and vcs.modified).
var version, commit string

// versionLine is what canaryd --version prints: version, commit (with
// "+dirty" when built from a modified checkout) and Go version.
func versionLine(ldVersion, ldCommit string, bi *debug.BuildInfo) string {
	v, c, modified, goVersion := ldVersion, ldCommit, false, runtime.Version()
	if bi != nil {
		goVersion = bi.GoVersion
		if v == "" {
			v = bi.Main.Version
		}
		if c == "" {
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					c = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if c == "" {
		c = "unknown"
	} else if modified {
		c += "+dirty"
	}
	return fmt.Sprintf("canaryd %s commit %s %s", v, c, goVersion)
}

func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return versionLine(version, commit, bi)
}
