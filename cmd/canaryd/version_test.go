package main

import (
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionLine(t *testing.T) {
	vcs := func(kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/inferensys/canaryd", Version: "(devel)"}}
		for i := 0; i+1 < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	tagged := vcs("vcs.revision", "69691f82659929d71dc483da56fd1c0a9233e231", "vcs.modified", "false")
	tagged.Main.Version = "v1.2.0"
	for _, tc := range []struct {
		name                string
		ldVersion, ldCommit string
		bi                  *debug.BuildInfo
		want                string
	}{
		{"ldflags win", "v1.3.0", "abc123", vcs("vcs.revision", "def456"), "canaryd v1.3.0 commit abc123 go1.26.8"},
		{"build info", "", "", vcs("vcs.revision", "69691f82659929d71dc483da56fd1c0a9233e231", "vcs.modified", "false"),
			"canaryd (devel) commit 69691f82659929d71dc483da56fd1c0a9233e231 go1.26.8"},
		{"modified checkout", "", "", vcs("vcs.revision", "69691f8", "vcs.modified", "true"), "canaryd (devel) commit 69691f8+dirty go1.26.8"},
		{"go install of a tag", "", "", tagged, "canaryd v1.2.0 commit 69691f82659929d71dc483da56fd1c0a9233e231 go1.26.8"},
		{"version from ldflags, commit from vcs", "v1.3.0", "", vcs("vcs.revision", "def456"), "canaryd v1.3.0 commit def456 go1.26.8"},
		{"no vcs (-buildvcs=false)", "", "", vcs(), "canaryd (devel) commit unknown go1.26.8"},
	} {
		if got := versionLine(tc.ldVersion, tc.ldCommit, tc.bi); got != tc.want {
			t.Errorf("%s: got %q; want %q", tc.name, got, tc.want)
		}
	}
	if got := versionLine("", "", nil); !strings.HasPrefix(got, "canaryd (devel) commit unknown go") {
		t.Errorf("without build info: got %q", got)
	}
}

// TestVersionCommand: canaryd --version and canaryd version print the
// version line on stdout and exit 0.
func TestVersionCommand(t *testing.T) {
	for _, arg := range []string{"--version", "-version", "version"} {
		code, stdout, stderr := runCLI(t, arg)
		if code != 0 || stdout != buildVersion()+"\n" || stderr != "" || !strings.HasPrefix(stdout, "canaryd ") {
			t.Errorf("canaryd %s: exit %d, stdout %q, stderr %q; want 0 and %q", arg, code, stdout, stderr, buildVersion())
		}
	}
}

// TestVersionLdflags builds canaryd the way make build does and runs it.
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	bin := filepath.Join(t.TempDir(), "canaryd")
	build := exec.Command(gobin, "build", "-ldflags", "-X main.version=v9.8.7-test -X main.commit=0123456789abcdef", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out); !strings.HasPrefix(got, "canaryd v9.8.7-test commit 0123456789abcdef go1.") {
		t.Errorf("canaryd --version printed %q; want canaryd v9.8.7-test commit 0123456789abcdef go1.…", got)
	}
}
