package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
	"go.yaml.in/yaml/v3"
)

// The Git adapter's tests run the real git CLI against a bare repository in
// t.TempDir(), seeded from testdata/git/repo (a kustomize directory with a
// patch of each route kind).

// gitTestEnv keeps the user's and the system's git configuration out.
func gitTestEnv(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", filepath.Join(home, "gitconfig")) // missing: empty
	for _, k := range []string{"GIT_DIR", "GIT_WORK_TREE", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL",
		"GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_SSH_COMMAND", "GIT_INDEX_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// tgit runs git as the test's "upstream" person, failing the test on error.
func tgit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := tgitErr(dir, args...)
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func tgitErr(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Upstream", "GIT_AUTHOR_EMAIL=up@example.com",
		"GIT_COMMITTER_NAME=Upstream", "GIT_COMMITTER_EMAIL=up@example.com", "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// newBareRemote returns a bare repository whose main branch holds
// testdata/git/repo, plus the files of extra (path → content).
func newBareRemote(t *testing.T, extra map[string]string) string {
	t.Helper()
	bare := filepath.Join(t.TempDir(), "routes.git")
	tgit(t, "", "init", "--quiet", "--bare", "-b", "main", bare)
	seed := t.TempDir()
	tgit(t, seed, "init", "--quiet", "-b", "main")
	if err := os.CopyFS(seed, os.DirFS("testdata/git/repo")); err != nil {
		t.Fatal(err)
	}
	for p, content := range extra {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(seed, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(seed, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tgit(t, seed, "add", "-A")
	tgit(t, seed, "commit", "--quiet", "-m", "seed")
	tgit(t, seed, "push", "--quiet", bare, "main:main")
	return bare
}

// upstreamCommit commits a change to path from another clone and pushes it,
// as a person or another tool would.
func upstreamCommit(t *testing.T, bare, path, content, msg string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "other")
	tgit(t, "", "clone", "--quiet", bare, dir)
	if err := os.WriteFile(filepath.Join(dir, path), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tgit(t, dir, "add", path)
	tgit(t, dir, "commit", "--quiet", "-m", msg)
	tgit(t, dir, "push", "--quiet", "origin", "main")
	return tgit(t, dir, "rev-parse", "HEAD")
}

func remoteHead(t *testing.T, bare string) string {
	t.Helper()
	return tgit(t, bare, "rev-parse", "refs/heads/main")
}

func remoteShow(t *testing.T, bare, rev, path string) string {
	t.Helper()
	out, err := exec.Command("git", "--git-dir", bare, "show", rev+":"+path).Output()
	if err != nil {
		t.Fatalf("git show %s:%s: %v", rev, path, err)
	}
	return string(out)
}

// testRoutes configures one rollout per route kind, on the seed's patches.
func testRoutes() map[string]GitRoute {
	return map[string]GitRoute{
		"support-agent": {File: "httproute-patch.yaml", Baseline: "support-agent-stable", Canary: "support-agent-canary"},
		"triage-agent":  {File: "virtualservice-patch.yaml", Baseline: "v1", Canary: "triage-agent/v2"},
		"billing-agent": {File: "trafficsplit-patch.yaml", Baseline: "billing-agent-v1", Canary: "billing-agent-v2"},
	}
}

func newTestGit(t *testing.T, bare string, routes map[string]GitRoute, mod func(*GitConfig)) *Git {
	t.Helper()
	cfg := GitConfig{Remote: bare, Dir: filepath.Join(t.TempDir(), "work"), CommandTimeout: 30 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	g, err := NewGit(cfg, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func testTarget(rollout string, w int, seq uint64) Target {
	a := schemas.ActionSetWeight
	switch w {
	case 100:
		a = schemas.ActionPromote
	case 0:
		a = schemas.ActionRollback
	}
	return Target{Rollout: rollout, Baseline: "v1", Canary: "v2", CanaryWeight: w, Action: a, Seq: seq,
		CommandID: fmt.Sprintf("cmd-%s-%d", rollout, seq), DeploymentID: "dep-7", Commit: "0123abc"}
}

// trailers parses a commit's message with git interpret-trailers --parse.
func trailers(t *testing.T, bare, rev string) map[string]string {
	t.Helper()
	msg := tgit(t, bare, "log", "-1", "--format=%B", rev)
	cmd := exec.Command("git", "interpret-trailers", "--parse")
	cmd.Stdin = strings.NewReader(msg + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("interpret-trailers: %v", err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("trailer line %q", line)
		}
		m[k] = v
	}
	return m
}

func TestGitApplyKinds(t *testing.T) {
	gitTestEnv(t)
	bare := newBareRemote(t, nil)
	g := newTestGit(t, bare, testRoutes(), nil)
	ctx := context.Background()
	seq := uint64(10)
	for _, tc := range []struct{ rollout, file string }{
		{"support-agent", "httproute-patch.yaml"},
		{"triage-agent", "virtualservice-patch.yaml"},
		{"billing-agent", "trafficsplit-patch.yaml"},
	} {
		t.Run(tc.rollout, func(t *testing.T) {
			before := remoteHead(t, bare)
			orig := remoteShow(t, bare, before, tc.file)
			seq++
			tg := testTarget(tc.rollout, 25, seq)
			if err := g.Apply(ctx, tg); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			after := remoteHead(t, bare)
			if n := tgit(t, bare, "rev-list", "--count", before+".."+after); n != "1" {
				t.Fatalf("commits on the remote = %s; want 1", n)
			}
			if files := tgit(t, bare, "diff", "--name-only", before, after); files != tc.file {
				t.Errorf("files changed = %q; want %q", files, tc.file)
			}
			got := remoteShow(t, bare, after, tc.file)
			want, err := os.ReadFile(filepath.Join("testdata/git/want", strings.TrimSuffix(tc.file, ".yaml")+".25.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("file after Apply:\n%s\nwant:\n%s", got, want)
			}
			// Only the two weight lines differ from the original.
			ol, nl := strings.Split(orig, "\n"), strings.Split(got, "\n")
			if len(ol) != len(nl) {
				t.Fatalf("line count %d → %d", len(ol), len(nl))
			}
			var changed []string
			for i := range ol {
				if ol[i] != nl[i] {
					changed = append(changed, nl[i])
					if !strings.Contains(ol[i], "weight: ") {
						t.Errorf("line %d changed and is not a weight: %q → %q", i+1, ol[i], nl[i])
					}
				}
			}
			if len(changed) != 2 {
				t.Errorf("changed lines = %q; want 2 weight lines", changed)
			}
			if subj := tgit(t, bare, "log", "-1", "--format=%s", after); subj != "canaryd: "+tc.rollout+" canary v2 at 25% (set_weight)" {
				t.Errorf("subject = %q", subj)
			}
			if au := tgit(t, bare, "log", "-1", "--format=%an <%ae> / %cn <%ce>", after); au != "canaryd <canaryd@localhost> / canaryd <canaryd@localhost>" {
				t.Errorf("author / committer = %q", au)
			}
			wantTr := map[string]string{"Command-Id": tg.CommandID, "Rollout": tc.rollout, "Seq": fmt.Sprint(seq),
				"Deployment-Id": "dep-7", "Commit": "0123abc", "Action": "set_weight", "Weight": "25"}
			if tr := trailers(t, bare, after); fmt.Sprint(tr) != fmt.Sprint(wantTr) {
				t.Errorf("trailers = %v; want %v", tr, wantTr)
			}

			// The same target again: nothing to commit, nothing pushed.
			if err := g.Apply(ctx, tg); err != nil {
				t.Fatalf("second Apply: %v", err)
			}
			if h := remoteHead(t, bare); h != after {
				t.Errorf("the same target made another commit: %s → %s", after, h)
			}
		})
	}

	// A promote of one rollout: one more commit with its own trailers.
	before := remoteHead(t, bare)
	if err := g.Apply(ctx, testTarget("support-agent", 100, 20)); err != nil {
		t.Fatal(err)
	}
	after := remoteHead(t, bare)
	if n := tgit(t, bare, "rev-list", "--count", before+".."+after); n != "1" {
		t.Fatalf("commits for the promote = %s; want 1", n)
	}
	if tr := trailers(t, bare, after); tr["Action"] != "promote" || tr["Weight"] != "100" || tr["Seq"] != "20" {
		t.Errorf("promote trailers = %v", tr)
	}
	if subj := tgit(t, bare, "log", "-1", "--format=%s", after); subj != "canaryd: support-agent canary v2 at 100% (promote)" {
		t.Errorf("subject = %q", subj)
	}

	// The manifests still build, with the weights in the output.
	if _, err := exec.LookPath("kubectl"); err == nil {
		co := filepath.Join(t.TempDir(), "co")
		tgit(t, "", "clone", "--quiet", bare, co)
		out, err := exec.Command("kubectl", "kustomize", co).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl kustomize: %v\n%s", err, out)
		}
		for _, want := range []string{
			"- name: support-agent-stable\n      port: 8080\n      weight: 0\n    - name: support-agent-canary\n      port: 8080\n      weight: 100\n",
			"subset: v1\n      weight: 75\n", "subset: v2\n      weight: 25\n",
			"- service: billing-agent-v1\n    weight: 75\n  - service: billing-agent-v2\n    weight: 25\n",
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("kubectl kustomize output lacks %q:\n%s", want, out)
			}
		}
	} else {
		t.Log("kubectl not installed: kustomize build not checked")
	}
}

// TestGitUpstreamMoved: another clone pushes between the adapter's fetch and
// its push; the adapter's push is rejected, and it applies again on top.
func TestGitUpstreamMoved(t *testing.T) {
	gitTestEnv(t)
	bare := newBareRemote(t, nil)
	g := newTestGit(t, bare, testRoutes(), nil)
	ctx := context.Background()
	if err := g.Apply(ctx, testTarget("billing-agent", 5, 1)); err != nil {
		t.Fatal(err)
	}
	// Upstream edits the same file (a comment and the baseline's weight)
	// and another file.
	orig := remoteShow(t, bare, "main", "trafficsplit-patch.yaml")
	edited := strings.Replace(orig, "# Canary of the billing agent (SMI).", "# Canary of the billing agent (SMI), reviewed.", 1)
	edited = strings.Replace(edited, "weight: 95}", "weight: 50}", 1)
	var upstream []string
	g.beforePush = func(attempt int) {
		if attempt == 0 {
			upstream = append(upstream, upstreamCommit(t, bare, "trafficsplit-patch.yaml", edited, "review the billing split"))
		}
	}
	var logs bytes.Buffer
	g.log = slog.New(slog.NewTextHandler(&logs, nil))
	if err := g.Apply(ctx, testTarget("billing-agent", 30, 2)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	head := remoteHead(t, bare)
	if len(upstream) != 1 {
		t.Fatalf("upstream commits = %d", len(upstream))
	}
	if parent := tgit(t, bare, "rev-parse", head+"^"); parent != upstream[0] {
		t.Errorf("the adapter's commit's parent = %s; want the upstream commit %s", parent, upstream[0])
	}
	if au := tgit(t, bare, "log", "-1", "--format=%an", head); au != "canaryd" {
		t.Errorf("head author = %q; want canaryd", au)
	}
	if tr := trailers(t, bare, head); tr["Seq"] != "2" || tr["Weight"] != "30" {
		t.Errorf("trailers = %v", tr)
	}
	want := strings.Replace(strings.Replace(edited, "weight: 50}", "weight: 70}", 1), "weight: 5\n", "weight: 30\n", 1)
	if got := remoteShow(t, bare, head, "trafficsplit-patch.yaml"); got != want {
		t.Errorf("file after the rebase:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(logs.String(), "remote branch moved") {
		t.Errorf("no log of the rejected push:\n%s", logs.String())
	}
}

// TestGitPushGivesUp: a remote that moves before every push wins after
// PushAttempts; the error is retriable and none of the adapter's commits is
// on the remote.
func TestGitPushGivesUp(t *testing.T) {
	gitTestEnv(t)
	bare := newBareRemote(t, nil)
	g := newTestGit(t, bare, testRoutes(), func(c *GitConfig) { c.PushAttempts = 2 })
	seed := remoteHead(t, bare)
	pushes := 0
	g.beforePush = func(attempt int) {
		pushes++
		upstreamCommit(t, bare, "README.md", fmt.Sprintf("edit %d\n", attempt), fmt.Sprintf("edit %d", attempt))
	}
	err := g.Apply(context.Background(), testTarget("support-agent", 10, 1))
	if err == nil || IsPermanent(err) || !errors.Is(err, errRemoteMoved) {
		t.Fatalf("Apply = %v; want a retriable errRemoteMoved", err)
	}
	if pushes != 2 {
		t.Errorf("push attempts = %d; want 2", pushes)
	}
	if authors := tgit(t, bare, "log", "--format=%an", seed+"..main"); authors != "Upstream\nUpstream" {
		t.Errorf("authors of the remote's new commits = %q; want two upstream commits only", authors)
	}
	// Once the remote keeps still, the same target goes through.
	g.beforePush = nil
	if err := g.Apply(context.Background(), testTarget("support-agent", 10, 1)); err != nil {
		t.Fatal(err)
	}
	if au := tgit(t, bare, "log", "-1", "--format=%an", "main"); au != "canaryd" {
		t.Errorf("head author = %q", au)
	}
}

// TestGitLocalAhead: a commit whose push failed is pushed by the next Apply
// of the same target, without a second commit.
func TestGitLocalAhead(t *testing.T) {
	gitTestEnv(t)
	bare := newBareRemote(t, nil)
	g := newTestGit(t, bare, testRoutes(), nil)
	ctx := context.Background()
	if err := g.Apply(ctx, testTarget("triage-agent", 10, 1)); err != nil {
		t.Fatal(err)
	}
	away := bare + ".away"
	g.beforePush = func(int) {
		if err := os.Rename(bare, away); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Apply(ctx, testTarget("triage-agent", 50, 2)); err == nil {
		t.Fatal("Apply with the remote gone = nil")
	}
	local := tgit(t, g.cfg.Dir, "rev-parse", "main")
	if err := os.Rename(away, bare); err != nil {
		t.Fatal(err)
	}
	g.beforePush = nil
	if err := g.Apply(ctx, testTarget("triage-agent", 50, 2)); err != nil {
		t.Fatal(err)
	}
	if h := remoteHead(t, bare); h != local {
		t.Errorf("remote head = %s; want the commit made before the failed push %s", h, local)
	}
}

func TestGitBadFiles(t *testing.T) {
	gitTestEnv(t)
	extra := map[string]string{}
	for _, name := range []string{"not-yaml.yaml", "two-canaries.yaml", "no-baseline.yaml", "third-backend.yaml", "two-routes.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata/git/bad", name))
		if err != nil {
			t.Fatal(err)
		}
		extra["bad/"+name] = string(b)
	}
	extra["bad/empty.yaml"] = "# nothing here\n"
	extra["bad/quoted.yaml"] = "kind: TrafficSplit\nmetadata: {name: q}\nspec:\n  backends:\n    - {service: a, weight: \"90\"}\n    - {service: b, weight: 10}\n"
	extra["bad/alias.yaml"] = "kind: TrafficSplit\nmetadata: {name: q}\nspec:\n  backends:\n    - {service: a, weight: &w 90}\n    - {service: b, weight: *w}\n"
	extra["bad/split-lists.yaml"] = "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n    - backendRefs: [{name: a, weight: 100}]\n    - backendRefs: [{name: b, weight: 0}]\n"
	bare := newBareRemote(t, extra)
	gw := func(file string) GitRoute {
		return GitRoute{File: file, Baseline: "support-agent-stable", Canary: "support-agent-canary"}
	}
	smi := func(file string) GitRoute {
		return GitRoute{File: file, Baseline: "billing-agent-v1", Canary: "billing-agent-v2"}
	}
	cases := map[string]struct {
		route GitRoute
		want  []string
	}{
		"missing":       {gw("deploy/nope.yaml"), []string{"deploy/nope.yaml does not exist in branch main"}},
		"directory":     {gw("bad"), []string{"bad is not a regular file"}},
		"not-yaml":      {gw("bad/not-yaml.yaml"), []string{"not YAML", "line"}},
		"empty":         {gw("bad/empty.yaml"), []string{"holds no YAML document"}},
		"other kind":    {gw("kustomization.yaml"), []string{"no route object (GRPCRoute, HTTPRoute, TrafficSplit, VirtualService) in the file; it holds Kustomization"}},
		"two canaries":  {gw("bad/two-canaries.yaml"), []string{`2 weighted entries for the canary backend "support-agent-canary" (spec.rules[0].backendRefs[1] line 10, spec.rules[1].backendRefs[0] line 15)`}},
		"no baseline":   {gw("bad/no-baseline.yaml"), []string{`no weighted entry for the baseline backend "support-agent-stable"`, "support-agent-old=90 (line 8)"}},
		"third backend": {smi("bad/third-backend.yaml"), []string{"also routes to billing-agent-shadow (weight 10"}},
		"two routes":    {smi("bad/two-routes.yaml"), []string{"holds 2 route objects (TrafficSplit/billing-agent, TrafficSplit/billing-agent-eu)", "object: {kind, name}"}},
		"wrong object":  {GitRoute{File: "bad/two-routes.yaml", Baseline: "billing-agent-v1", Canary: "billing-agent-v2", Object: &GitObject{Kind: "TrafficSplit", Name: "billing-agent-us"}}, []string{"no TrafficSplit/billing-agent-us in the file"}},
		"quoted weight": {GitRoute{File: "bad/quoted.yaml", Baseline: "a", Canary: "b"}, []string{`the weight at line 5 is "90", not a plain integer`}},
		"alias":         {GitRoute{File: "bad/alias.yaml", Baseline: "a", Canary: "b"}, []string{"line 5 uses a YAML anchor or alias"}},
		"split lists":   {GitRoute{File: "bad/split-lists.yaml", Baseline: "a", Canary: "b"}, []string{"are in different lists"}},
		"unweighted":    {GitRoute{File: "httproute-patch.yaml", Baseline: "support-agent-stable", Canary: "support-agent-beta"}, []string{`no weighted entry for the canary backend "support-agent-beta"`}},
	}
	routes := map[string]GitRoute{"good": smi("trafficsplit-patch.yaml")}
	for name, c := range cases {
		routes[name] = c.route
	}
	g := newTestGit(t, bare, routes, nil)
	head := remoteHead(t, bare)
	names := make([]string, 0, len(cases))
	for name := range cases {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		err := g.Apply(context.Background(), testTarget(name, 40, 1))
		switch {
		case err == nil:
			t.Errorf("%s: Apply = nil; want a permanent error", name)
			continue
		case !IsPermanent(err):
			t.Errorf("%s: Apply = %v; want a permanent error", name, err)
		}
		for _, w := range cases[name].want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", name, err, w)
			}
		}
		if h := remoteHead(t, bare); h != head {
			t.Fatalf("%s: the remote moved to %s", name, h)
		}
		if st := tgit(t, g.cfg.Dir, "status", "--porcelain"); st != "" {
			t.Errorf("%s: working tree left dirty: %q", name, st)
		}
	}
	// The directory is still good for the next target.
	if err := g.Apply(context.Background(), testTarget("good", 40, 2)); err != nil {
		t.Fatal(err)
	}
	if n := tgit(t, bare, "rev-list", "--count", head+"..main"); n != "1" {
		t.Errorf("commits = %s; want 1", n)
	}
}

func TestGitUnknownRolloutAndWeight(t *testing.T) {
	gitTestEnv(t)
	bare := newBareRemote(t, nil)
	g := newTestGit(t, bare, testRoutes(), nil)
	err := g.Apply(context.Background(), testTarget("no-such-agent", 10, 1))
	if !errors.Is(err, ErrUnknownRollout) || !IsPermanent(err) || !strings.Contains(err.Error(), `"no-such-agent"`) {
		t.Errorf("unknown rollout: Apply = %v; want a permanent ErrUnknownRollout naming it", err)
	}
	tg := testTarget("support-agent", 101, 1)
	if err := g.Apply(context.Background(), tg); !IsPermanent(err) || !strings.Contains(err.Error(), "101") {
		t.Errorf("weight 101: Apply = %v; want a permanent error", err)
	}
	if _, err := os.Stat(g.cfg.Dir); !os.IsNotExist(err) {
		t.Errorf("refused targets touched the working directory: %v", err)
	}
}

// TestGitRemoteRefuses: remotes that refuse for good give permanent errors.
func TestGitRemoteRefuses(t *testing.T) {
	gitTestEnv(t)
	ctx := context.Background()
	t.Run("no such repository", func(t *testing.T) {
		g := newTestGit(t, filepath.Join(t.TempDir(), "nope.git"), testRoutes(), nil)
		err := g.Apply(ctx, testTarget("support-agent", 10, 1))
		if !IsPermanent(err) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("Apply = %v; want a permanent error", err)
		}
	})
	t.Run("no such branch", func(t *testing.T) {
		g := newTestGit(t, newBareRemote(t, nil), testRoutes(), func(c *GitConfig) { c.Branch = "production" })
		err := g.Apply(ctx, testTarget("support-agent", 10, 1))
		if !IsPermanent(err) || !strings.Contains(err.Error(), "production") {
			t.Errorf("Apply = %v; want a permanent error naming the branch", err)
		}
	})
	t.Run("hook declines", func(t *testing.T) {
		bare := newBareRemote(t, nil)
		hook := filepath.Join(bare, "hooks", "pre-receive")
		if err := os.WriteFile(hook, []byte("#!/bin/sh\necho 'main is protected' >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		head := remoteHead(t, bare)
		g := newTestGit(t, bare, testRoutes(), nil)
		err := g.Apply(ctx, testTarget("support-agent", 10, 1))
		if !IsPermanent(err) || !strings.Contains(err.Error(), "main is protected") {
			t.Errorf("Apply = %v; want a permanent error with the hook's words", err)
		}
		if h := remoteHead(t, bare); h != head {
			t.Errorf("remote moved to %s", h)
		}
	})
	t.Run("dir holds other files", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "precious.txt"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		g := newTestGit(t, newBareRemote(t, nil), testRoutes(), func(c *GitConfig) { c.Dir = dir })
		err := g.Apply(ctx, testTarget("support-agent", 10, 1))
		if !IsPermanent(err) || !strings.Contains(err.Error(), "holds files but no git clone") {
			t.Errorf("Apply = %v; want a permanent error", err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "precious.txt")); string(b) != "keep" {
			t.Errorf("precious.txt = %q", b)
		}
	})
}

// TestGitCommandTimeout: a remote that never answers (an ssh that hangs)
// costs one command_timeout and a retriable error.
func TestGitCommandTimeout(t *testing.T) {
	gitTestEnv(t)
	t.Setenv("GIT_SSH_COMMAND", "sleep 60;:")
	g := newTestGit(t, "ssh://git.invalid/routes.git", testRoutes(), func(c *GitConfig) { c.CommandTimeout = 300 * time.Millisecond })
	start := time.Now()
	err := g.Apply(context.Background(), testTarget("support-agent", 10, 1))
	took := time.Since(start)
	if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "no answer within command_timeout 300ms") {
		t.Errorf("Apply = %v; want a retriable timeout", err)
	}
	// Generous: the timeout plus the 2s WaitDelay for the pipes ssh holds.
	if took > 20*time.Second {
		t.Errorf("Apply took %v", took)
	}
	t.Logf("hung remote: Apply returned after %v", took)
}

// TestGitConcurrentApply: Apply calls from several goroutines share the
// working directory one at a time; every target lands in its own commit.
func TestGitConcurrentApply(t *testing.T) {
	gitTestEnv(t)
	bare := newBareRemote(t, nil)
	g := newTestGit(t, bare, testRoutes(), nil)
	seed := remoteHead(t, bare)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i, r := range []string{"support-agent", "triage-agent", "billing-agent"} {
		wg.Go(func() { errs <- g.Apply(context.Background(), testTarget(r, 10*(i+1), uint64(i+1))) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := tgit(t, bare, "rev-list", "--count", seed+"..main"); n != "3" {
		t.Errorf("commits = %s; want 3", n)
	}
	for file, want := range map[string]string{"httproute-patch.yaml": "weight: 10 # canary share",
		"virtualservice-patch.yaml": "subset: v2}\n          weight: 20", "trafficsplit-patch.yaml": "# canary\n      weight: 30"} {
		if got := remoteShow(t, bare, "main", file); !strings.Contains(got, want) {
			t.Errorf("%s lacks %q:\n%s", file, want, got)
		}
	}
	// A waiting Apply gives up with its context.
	g.sem <- struct{}{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Apply(ctx, testTarget("support-agent", 50, 9)); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply while another holds the directory, cancelled = %v", err)
	}
	<-g.sem
}

// TestGitApplyTime measures one Apply (fetch, edit, commit, push to a local
// bare remote).
func TestGitApplyTime(t *testing.T) {
	gitTestEnv(t)
	bare := newBareRemote(t, nil)
	g := newTestGit(t, bare, testRoutes(), nil)
	if os.Getenv("GIT_ADAPTER_TRACE") != "" {
		g.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx := context.Background()
	start := time.Now()
	if err := g.Apply(ctx, testTarget("support-agent", 1, 1)); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	const n = 20
	var took []time.Duration
	for i := range n {
		start := time.Now()
		if err := g.Apply(ctx, testTarget("support-agent", 2+i, uint64(2+i))); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	start = time.Now()
	if err := g.Apply(ctx, testTarget("support-agent", 1+n, uint64(1+n))); err != nil {
		t.Fatal(err)
	}
	noop := time.Since(start)
	slices.Sort(took)
	t.Logf("Apply with clone: %v; Apply (fetch+commit+push) over %d: median %v, max %v; no-op Apply (fetch only): %v",
		first, n, took[n/2], took[n-1], noop)
	if c := tgit(t, bare, "rev-list", "--count", "main"); c != fmt.Sprint(n+2) {
		t.Errorf("commits = %s; want %d", c, n+2)
	}
}

func TestSetWeights(t *testing.T) {
	f := func(name, src string, r GitRoute, w int, want string) {
		t.Helper()
		out, changed, err := setWeights([]byte(src), r, w)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if !changed {
			out = []byte(src)
		}
		if string(out) != want {
			t.Errorf("%s: got\n%s\nwant\n%s", name, out, want)
		}
		if changed != (src != want) {
			t.Errorf("%s: changed = %v", name, changed)
		}
	}
	ts := GitRoute{Baseline: "a", Canary: "b"}
	f("crlf", "kind: TrafficSplit\r\nspec:\r\n  backends:\r\n  - service: a\r\n    weight: 100\r\n  - service: b\r\n    weight: 0\r\n", ts, 7,
		"kind: TrafficSplit\r\nspec:\r\n  backends:\r\n  - service: a\r\n    weight: 93\r\n  - service: b\r\n    weight: 7\r\n")
	// Columns count characters: non-ASCII text before the weight on its line.
	f("non-ascii", "kind: TrafficSplit # ünïcödé\nspec: {backends: [{service: a, note: \"é→ü\", weight: 100}, {service: b, weight: 0}]}\n", ts, 30,
		"kind: TrafficSplit # ünïcödé\nspec: {backends: [{service: a, note: \"é→ü\", weight: 70}, {service: b, weight: 30}]}\n")
	f("already", "kind: TrafficSplit\nspec:\n  backends:\n  - {service: a, weight: 60}\n  - {service: b, weight: 40}\n", ts, 40,
		"kind: TrafficSplit\nspec:\n  backends:\n  - {service: a, weight: 60}\n  - {service: b, weight: 40}\n")
	f("weight-0 third", "kind: TrafficSplit\nspec:\n  backends:\n  - {service: a, weight: 60}\n  - {service: c, weight: 0}\n  - {service: b, weight: 40}\n", ts, 50,
		"kind: TrafficSplit\nspec:\n  backends:\n  - {service: a, weight: 50}\n  - {service: c, weight: 0}\n  - {service: b, weight: 50}\n")
	multi := "# two routes\nkind: GRPCRoute\nmetadata: {name: x}\nspec:\n  rules:\n  - backendRefs: [{name: a, weight: 1}, {name: b, weight: 0}]\n---\n" +
		"kind: GRPCRoute\nmetadata: {name: y}\nspec:\n  rules:\n  - backendRefs: [{name: a, weight: 1}, {name: b, weight: 0}]\n"
	f("multi-doc second", multi, GitRoute{Baseline: "a", Canary: "b", Object: &GitObject{Kind: "GRPCRoute", Name: "y"}}, 100,
		strings.Replace(multi, "name: y}\nspec:\n  rules:\n  - backendRefs: [{name: a, weight: 1}, {name: b, weight: 0}]",
			"name: y}\nspec:\n  rules:\n  - backendRefs: [{name: a, weight: 0}, {name: b, weight: 100}]", 1))
	vs := "kind: VirtualService\nspec:\n  http:\n  - route:\n    - destination: {host: svc-v1}\n      weight: 100\n    - destination: {host: svc-v2}\n      weight: 0\n"
	f("istio hosts", vs, GitRoute{Baseline: "svc-v1", Canary: "svc-v2"}, 20, strings.Replace(strings.Replace(vs, "100", "80", 1), "weight: 0", "weight: 20", 1))

	// The subset alone and host/subset both name an Istio destination; the
	// host alone does not when there is a subset.
	sub := "kind: VirtualService\nspec:\n  http:\n  - route:\n    - destination: {host: h, subset: v1}\n      weight: 100\n    - destination: {host: h, subset: v2}\n      weight: 0\n"
	if _, _, err := setWeights([]byte(sub), GitRoute{Baseline: "h", Canary: "h/v2"}, 5); err == nil ||
		!strings.Contains(err.Error(), `no weighted entry for the baseline backend "h"`) {
		t.Errorf("host of subset destinations: err = %v", err)
	}
}

func TestGitConfigValidate(t *testing.T) {
	f := func(name string, mod func(*GitConfig), want string) {
		t.Helper()
		c := GitConfig{Remote: "git@github.com:acme/routes.git", Dir: "/var/lib/canaryd/routes"}
		mod(&c)
		err := c.Validate()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: Validate = %v; want %q", name, err, want)
		}
	}
	f("ok", func(*GitConfig) {}, "")
	f("no remote", func(c *GitConfig) { c.Remote = "" }, "remote is required")
	f("option remote", func(c *GitConfig) { c.Remote = "--upload-pack=x" }, "remote")
	f("no dir", func(c *GitConfig) { c.Dir = "" }, "dir is required")
	f("bad branch", func(c *GitConfig) { c.Branch = "main..x" }, `branch "main..x"`)
	f("branch blank", func(c *GitConfig) { c.Branch = "my branch" }, "branch")
	f("timeout", func(c *GitConfig) { c.CommandTimeout = -time.Second }, "command_timeout")
	f("attempts", func(c *GitConfig) { c.PushAttempts = -1 }, "push_attempts")
	f("email", func(c *GitConfig) { c.AuthorEmail = "a <b>" }, "author_email")
	f("name", func(c *GitConfig) { c.AuthorName = "x\ny" }, "author_name")

	r := func(name string, mod func(*GitRoute), want string) {
		t.Helper()
		rt := GitRoute{File: "deploy/route.yaml", Baseline: "a", Canary: "b"}
		mod(&rt)
		err := rt.Validate()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: Validate = %v; want %q", name, err, want)
		}
	}
	r("ok", func(*GitRoute) {}, "")
	r("no file", func(rt *GitRoute) { rt.File = "" }, "file is required")
	r("absolute", func(rt *GitRoute) { rt.File = "/etc/passwd" }, "file")
	r("escape", func(rt *GitRoute) { rt.File = "../x.yaml" }, "file")
	r("no baseline", func(rt *GitRoute) { rt.Baseline = "" }, "baseline is required")
	r("no canary", func(rt *GitRoute) { rt.Canary = "" }, "canary is required")
	r("same", func(rt *GitRoute) { rt.Canary = "a" }, "both")
	r("kind", func(rt *GitRoute) { rt.Object = &GitObject{Kind: "Service", Name: "x"} }, "object.kind")
	r("name", func(rt *GitRoute) { rt.Object = &GitObject{Kind: "HTTPRoute"} }, "object.name")

	if _, err := NewGit(GitConfig{Remote: "x", Dir: "y"}, map[string]GitRoute{"agent": {File: "f.yaml"}}, nil); err == nil ||
		!strings.Contains(err.Error(), `rollout "agent"`) || !strings.Contains(err.Error(), "baseline") {
		t.Errorf("NewGit with a bad route = %v", err)
	}

	// The YAML shape the routes file embeds, with a duration.
	var c struct {
		Git   GitConfig
		Route GitRoute
	}
	src := "git:\n  remote: https://example.com/routes.git\n  dir: /var/lib/canaryd/routes\n  branch: prod\n  push: false\n  command_timeout: 45s\n" +
		"route:\n  file: deploy/vs.yaml\n  baseline: v1\n  canary: v2\n  object: {kind: VirtualService, name: triage}\n"
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	if d := c.Git.withDefaults(); d.CommandTimeout != 45*time.Second || *d.Push || d.Branch != "prod" || d.AuthorName != "canaryd" ||
		d.PushAttempts != 3 || c.Route.Object.Kind != "VirtualService" {
		t.Errorf("decoded %+v %+v", d, c.Route)
	}
}

// FuzzSetWeights: any input gives an error or an edit that reads back with
// the weights in place and changes nothing but digits of weights.
func FuzzSetWeights(f *testing.F) {
	for _, dir := range []string{"testdata/git/repo", "testdata/git/bad"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
				f.Add(b, 25)
			}
		}
	}
	routes := []GitRoute{
		{Baseline: "support-agent-stable", Canary: "support-agent-canary"},
		{Baseline: "v1", Canary: "triage-agent/v2"},
		{Baseline: "billing-agent-v1", Canary: "billing-agent-v2"},
	}
	f.Fuzz(func(t *testing.T, src []byte, w int) {
		if w < 0 || w > 100 {
			return
		}
		for _, r := range routes {
			out, changed, err := setWeights(src, r, w)
			if err != nil || !changed {
				continue
			}
			if _, again, err := setWeights(out, r, w); err != nil || again {
				t.Fatalf("edit does not read back: again %v, err %v", again, err)
			}
			strip := func(b []byte) []byte {
				return bytes.Map(func(r rune) rune {
					// A weight may be written 0x1f or 0o17; it becomes decimal.
					if strings.ContainsRune("0123456789abcdefABCDEFxXoO_+-", r) {
						return -1
					}
					return r
				}, b)
			}
			if !bytes.Equal(strip(src), strip(out)) {
				t.Fatalf("edit changed more than numbers:\n%q\n%q", src, out)
			}
		}
	})
}

// TestGitReuseDir: push: false commits locally only; a later adapter (a
// restart) on the same directory pushes that commit without making another,
// puts back a removed origin, and follows a changed remote.
func TestGitReuseDir(t *testing.T) {
	gitTestEnv(t)
	bare := newBareRemote(t, nil)
	seed := remoteHead(t, bare)
	dir := filepath.Join(t.TempDir(), "work")
	ctx := context.Background()
	noPush := false
	g1 := newTestGit(t, bare, testRoutes(), func(c *GitConfig) { c.Dir, c.Push = dir, &noPush })
	if err := g1.Apply(ctx, testTarget("support-agent", 15, 1)); err != nil {
		t.Fatal(err)
	}
	if h := remoteHead(t, bare); h != seed {
		t.Fatalf("push: false pushed: %s", h)
	}
	local := tgit(t, dir, "rev-parse", "main")
	if local == seed {
		t.Fatal("push: false made no local commit")
	}

	g2 := newTestGit(t, bare, testRoutes(), func(c *GitConfig) { c.Dir = dir })
	if err := g2.Apply(ctx, testTarget("support-agent", 15, 1)); err != nil {
		t.Fatal(err)
	}
	if h := remoteHead(t, bare); h != local {
		t.Errorf("remote head = %s; want the local commit %s", h, local)
	}

	tgit(t, dir, "remote", "remove", "origin")
	g3 := newTestGit(t, bare, testRoutes(), func(c *GitConfig) { c.Dir = dir })
	if err := g3.Apply(ctx, testTarget("support-agent", 16, 2)); err != nil {
		t.Fatal(err)
	}
	if tr := trailers(t, bare, "main"); tr["Weight"] != "16" {
		t.Errorf("after origin was removed: remote head trailers %v", tr)
	}

	moved := filepath.Join(t.TempDir(), "moved.git")
	tgit(t, "", "clone", "--quiet", "--bare", bare, moved)
	g4 := newTestGit(t, moved, testRoutes(), func(c *GitConfig) { c.Dir = dir })
	if err := g4.Apply(ctx, testTarget("support-agent", 17, 3)); err != nil {
		t.Fatal(err)
	}
	if tr := trailers(t, moved, "main"); tr["Weight"] != "17" {
		t.Errorf("new remote's head trailers %v", tr)
	}
	if tr := trailers(t, bare, "main"); tr["Weight"] != "16" {
		t.Errorf("old remote changed: %v", tr)
	}
}

// TestGitUpstreamRace: the remote moves after the push read its refs and
// before it updated them (here from a pre-push hook of the adapter's
// clone); git reports "failed to update ref", and the adapter applies again
// on top, as for a plain rejection.
func TestGitUpstreamRace(t *testing.T) {
	gitTestEnv(t)
	bare := newBareRemote(t, nil)
	g := newTestGit(t, bare, testRoutes(), nil)
	ctx := context.Background()
	if err := g.Apply(ctx, testTarget("support-agent", 5, 1)); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other")
	tgit(t, "", "clone", "--quiet", bare, other)
	if err := os.WriteFile(filepath.Join(other, "README.md"), []byte("raced\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tgit(t, other, "commit", "--quiet", "-am", "race")
	raced := tgit(t, other, "rev-parse", "HEAD")
	marker := filepath.Join(t.TempDir(), "pushed")
	hook := fmt.Sprintf("#!/bin/sh\n[ -e %[1]q ] && exit 0\ntouch %[1]q\nunset GIT_DIR\ngit -C %[2]q push --quiet origin main\n", marker, other)
	if err := os.WriteFile(filepath.Join(g.cfg.Dir, ".git", "hooks", "pre-push"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	g.log = slog.New(slog.NewTextHandler(&logs, nil))
	if err := g.Apply(ctx, testTarget("support-agent", 35, 2)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	head := remoteHead(t, bare)
	if parent := tgit(t, bare, "rev-parse", head+"^"); parent != raced {
		t.Errorf("the adapter's commit's parent = %s; want the raced commit %s", parent, raced)
	}
	if tr := trailers(t, bare, head); tr["Weight"] != "35" {
		t.Errorf("trailers %v", tr)
	}
	if !strings.Contains(logs.String(), "remote branch moved") {
		t.Errorf("the race was not seen as the remote moving:\n%s", logs.String())
	}
}
