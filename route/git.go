package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// The Git adapter (GitOps): it writes the weights into a route manifest kept
// in a Git repository, typically a kustomize patch that Flux or Argo CD
// applies, commits and pushes. It drives the git CLI (git ≥ 2.28 on PATH) in
// a working directory it owns.
//
// One Apply is, in git commands:
//
//	clone --single-branch --branch B   (only when Dir holds no clone yet)
//	fetch origin +B:origin/B
//	merge-base --is-ancestor origin/B B (keep local commits not pushed yet)
//	checkout -f -B B <origin/B or B> ; clean -ffdq
//	(edit the file) add ; commit       (only when the weights change)
//	rev-list --count origin/B..B ; push origin B:B   (when ahead)
//
// A push rejected because the branch moved upstream is followed by a fetch,
// a reset to origin/B and the same edit again, up to PushAttempts times. It
// never force-pushes.

// Defaults of GitConfig, applied by NewGit to the zero values.
const (
	DefaultGitBranch         = "main"
	DefaultGitAuthorName     = "canaryd"
	DefaultGitAuthorEmail    = "canaryd@localhost"
	DefaultGitCommandTimeout = 60 * time.Second
	DefaultGitPushAttempts   = 3
)

// GitConfig is the repository side of the Git adapter, shared by its routes.
type GitConfig struct {
	// Remote is the URL (or path) of the repository to push to; required.
	Remote string `yaml:"remote"`
	// Branch is the branch Flux or Argo CD follows. Default main.
	Branch string `yaml:"branch,omitempty"`
	// Dir is the working directory: a clone the adapter owns. It is cloned
	// when missing or empty; otherwise it is fetched and reset to the
	// remote branch (uncommitted changes in it are discarded). Required.
	Dir string `yaml:"dir"`
	// AuthorName and AuthorEmail sign the commits (author and committer).
	// Default canaryd <canaryd@localhost>.
	AuthorName  string `yaml:"author_name,omitempty"`
	AuthorEmail string `yaml:"author_email,omitempty"`
	// Push: false commits locally only (something else publishes the
	// branch). Default true.
	Push *bool `yaml:"push,omitempty"`
	// CommandTimeout bounds each git command. Default 60s.
	CommandTimeout time.Duration `yaml:"command_timeout,omitempty"`
	// PushAttempts bounds the pushes of one Apply when the remote branch
	// keeps moving under it. Default 3.
	PushAttempts int `yaml:"push_attempts,omitempty"`
}

// withDefaults returns c with its zero values replaced by the defaults; the
// one place the defaults are applied.
func (c GitConfig) withDefaults() GitConfig {
	if c.Branch == "" {
		c.Branch = DefaultGitBranch
	}
	if c.AuthorName == "" {
		c.AuthorName = DefaultGitAuthorName
	}
	if c.AuthorEmail == "" {
		c.AuthorEmail = DefaultGitAuthorEmail
	}
	if c.Push == nil {
		push := true
		c.Push = &push
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = DefaultGitCommandTimeout
	}
	if c.PushAttempts == 0 {
		c.PushAttempts = DefaultGitPushAttempts
	}
	return c
}

// Validate checks c; zero values stand for the defaults and are valid.
func (c GitConfig) Validate() error {
	switch {
	case c.Remote == "":
		return errors.New("git: remote is required")
	case strings.HasPrefix(c.Remote, "-") || strings.ContainsAny(c.Remote, "\n\r\x00"):
		return fmt.Errorf("git: remote %q is not a URL or path", c.Remote)
	case c.Dir == "":
		return errors.New("git: dir is required")
	case c.CommandTimeout < 0:
		return fmt.Errorf("git: command_timeout %v is negative", c.CommandTimeout)
	case c.PushAttempts < 0:
		return fmt.Errorf("git: push_attempts %d is negative", c.PushAttempts)
	}
	if c.Branch != "" {
		if err := checkBranchName(c.Branch); err != nil {
			return fmt.Errorf("git: branch %q: %w", c.Branch, err)
		}
	}
	if strings.ContainsAny(c.AuthorName, "<>\n\r\x00") {
		return fmt.Errorf("git: author_name %q holds <, > or a line break", c.AuthorName)
	}
	if strings.ContainsAny(c.AuthorEmail, "<> \t\n\r\x00") {
		return fmt.Errorf("git: author_email %q holds <, >, a blank or a line break", c.AuthorEmail)
	}
	return nil
}

// checkBranchName applies the rules of git check-ref-format that matter
// here, so a bad branch is refused at load time rather than by git later.
func checkBranchName(b string) error {
	switch {
	case strings.HasPrefix(b, "-"), strings.HasPrefix(b, "/"), strings.HasSuffix(b, "/"),
		strings.HasSuffix(b, ".lock"), strings.HasSuffix(b, "."), strings.Contains(b, ".."),
		strings.Contains(b, "//"), strings.Contains(b, "@{"), b == "@":
		return errors.New("not a valid branch name")
	}
	for _, r := range b {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			return fmt.Errorf("not a valid branch name (holds %q)", r)
		}
	}
	return nil
}

// GitRoute says where in the repository one rollout's weights are.
type GitRoute struct {
	// File is the manifest's path in the repository, relative to its root
	// (e.g. deploy/prod/httproute-patch.yaml). Required.
	File string `yaml:"file"`
	// Baseline and Canary name the two backends whose weights are set:
	// the backendRef name of an HTTPRoute or GRPCRoute, the service of a
	// TrafficSplit, and for an Istio VirtualService the destination host
	// (for a destination without subset) or its subset ("v1") or
	// host/subset ("reviews/v1"). Required, and different.
	Baseline string `yaml:"baseline"`
	Canary   string `yaml:"canary"`
	// Object picks the route object when the file holds several documents
	// of a supported kind; optional otherwise.
	Object *GitObject `yaml:"object,omitempty"`
}

// GitObject names one object of a multi-document file.
type GitObject struct {
	Kind string `yaml:"kind"` // HTTPRoute, GRPCRoute, VirtualService or TrafficSplit
	Name string `yaml:"name"` // metadata.name
}

// Validate checks r.
func (r GitRoute) Validate() error {
	switch {
	case r.File == "":
		return errors.New("git route: file is required")
	case !filepath.IsLocal(r.File):
		return fmt.Errorf("git route: file %q must be a path inside the repository (relative, no ..)", r.File)
	case r.Baseline == "":
		return errors.New("git route: baseline is required")
	case r.Canary == "":
		return errors.New("git route: canary is required")
	case r.Baseline == r.Canary:
		return fmt.Errorf("git route: baseline and canary are both %q", r.Canary)
	}
	if o := r.Object; o != nil {
		if _, ok := routeKinds[o.Kind]; !ok {
			return fmt.Errorf("git route: object.kind %q is not one of %s", o.Kind, kindList())
		}
		if o.Name == "" {
			return errors.New("git route: object.name is required with object.kind")
		}
	}
	return nil
}

// Git is the GitOps adapter. Its Apply calls are serialised: they share one
// working directory.
type Git struct {
	cfg    GitConfig
	routes map[string]GitRoute
	log    *slog.Logger

	// sem (capacity 1) is held for the git commands of one Apply; a channel
	// rather than a mutex so that a waiting Apply gives up with its ctx.
	sem chan struct{}
	// remoteChecked: origin's URL was checked against cfg.Remote in this
	// process. Guarded by sem.
	remoteChecked bool

	// beforePush, when set (tests only), runs before each push attempt: it
	// lets a test move the remote between fetch and push.
	beforePush func(attempt int)
}

var _ Adapter = (*Git)(nil)

// NewGit checks cfg and routes and returns the adapter. It runs no git
// command: the clone is made by the first Apply.
func NewGit(cfg GitConfig, routes map[string]GitRoute, logger *slog.Logger) (*Git, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if _, err := exec.LookPath("git"); err != nil {
		return nil, fmt.Errorf("git: the git command is needed: %w", err)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("git: dir: %w", err)
	}
	cfg.Dir = dir
	rs := make(map[string]GitRoute, len(routes))
	for name, r := range routes {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("rollout %q: %w", name, err)
		}
		rs[name] = r
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Git{cfg: cfg, routes: rs, log: logger, sem: make(chan struct{}, 1)}, nil
}

// Kind returns "git".
func (g *Git) Kind() string { return "git" }

// Apply writes t's weights into the route's file, commits when they
// changed, and pushes when the local branch is ahead of the remote.
func (g *Git) Apply(ctx context.Context, t Target) error {
	r, ok := g.routes[t.Rollout]
	if !ok {
		return Permanent(fmt.Errorf("git: rollout %q: %w", t.Rollout, ErrUnknownRollout))
	}
	if t.CanaryWeight < 0 || t.CanaryWeight > 100 {
		return Permanentf("git: rollout %q: canary weight %d is outside 0..100", t.Rollout, t.CanaryWeight)
	}
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("git: waiting for the working directory: %w", ctx.Err())
	}
	defer func() { <-g.sem }()

	if err := g.sync(ctx); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		commit, err := g.edit(ctx, r, t)
		if err != nil {
			return err
		}
		if !*g.cfg.Push {
			if commit != "" {
				g.log.Info("git: committed (push disabled)", "rollout", t.Rollout, "file", r.File, "commit", commit)
			}
			return nil
		}
		ahead, err := g.ahead(ctx)
		if err != nil {
			return err
		}
		if ahead == 0 {
			g.log.Debug("git: weights already in the remote branch", "rollout", t.Rollout, "file", r.File)
			return nil
		}
		if g.beforePush != nil {
			g.beforePush(attempt)
		}
		err = g.push(ctx)
		if err == nil {
			g.log.Info("git: pushed", "rollout", t.Rollout, "file", r.File, "canary_weight", t.CanaryWeight,
				"commits", ahead, "attempt", attempt+1)
			return nil
		}
		if !errors.Is(err, errRemoteMoved) {
			return err
		}
		if attempt+1 >= g.cfg.PushAttempts {
			return fmt.Errorf("git: push to %s gave up after %d attempts: %w", g.cfg.Remote, attempt+1, err)
		}
		// Someone else committed: start again from their commit. Our
		// unpushed commits are dropped; the edit below redoes the one that
		// matters (the latest target).
		g.log.Info("git: remote branch moved; fetching and applying again", "rollout", t.Rollout, "attempt", attempt+1)
		if err := g.fetch(ctx); err != nil {
			return err
		}
		if err := g.resetTo(ctx, g.remoteRef()); err != nil {
			return err
		}
	}
}

func (g *Git) remoteRef() string { return "refs/remotes/origin/" + g.cfg.Branch }
func (g *Git) localRef() string  { return "refs/heads/" + g.cfg.Branch }

// sync makes Dir a clean checkout of the branch: a fresh clone, or a fetch
// and a reset to the remote branch. Local commits that are not pushed yet
// and lie on top of the remote branch are kept (a previous Apply committed
// but its push failed); if the remote moved elsewhere they are dropped.
func (g *Git) sync(ctx context.Context) error {
	_, err := os.Stat(filepath.Join(g.cfg.Dir, ".git"))
	if errors.Is(err, fs.ErrNotExist) {
		return g.clone(ctx)
	}
	if err != nil {
		return fmt.Errorf("git: dir: %w", err)
	}
	if !g.remoteChecked {
		url, err := g.run(ctx, "", "remote", "get-url", "origin")
		var ge *gitError
		switch {
		case errors.As(err, &ge) && ge.exit == 2: // no remote named origin
			if _, err := g.run(ctx, "", "remote", "add", "origin", g.cfg.Remote); err != nil {
				return err
			}
			url = g.cfg.Remote
		case err != nil:
			return err
		}
		if url = strings.TrimSpace(url); url != g.cfg.Remote {
			g.log.Info("git: the working directory pointed to another remote; repointing it", "dir", g.cfg.Dir, "was", url, "remote", g.cfg.Remote)
			if _, err := g.run(ctx, "", "remote", "set-url", "origin", g.cfg.Remote); err != nil {
				return err
			}
		}
		g.remoteChecked = true
	}
	if err := g.fetch(ctx); err != nil {
		return err
	}
	base := g.remoteRef()
	if _, err := g.run(ctx, "", "merge-base", "--is-ancestor", g.remoteRef(), g.localRef()); err == nil {
		base = g.localRef()
	} else if ge := (*gitError)(nil); !errors.As(err, &ge) || ge.exit != 1 && ge.exit != 128 {
		// 1: not an ancestor; 128: no local branch yet. Anything else
		// (a timeout) is reported.
		return err
	}
	return g.resetTo(ctx, base)
}

func (g *Git) clone(ctx context.Context) error {
	entries, err := os.ReadDir(g.cfg.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("git: dir: %w", err)
	}
	if len(entries) > 0 {
		return Permanentf("git: dir %s holds files but no git clone; give the adapter a directory of its own", g.cfg.Dir)
	}
	if err := os.MkdirAll(filepath.Dir(g.cfg.Dir), 0o755); err != nil {
		return fmt.Errorf("git: dir: %w", err)
	}
	if _, err := g.runIn(ctx, "", "", "clone", "--quiet", "--no-tags", "--single-branch", "--branch", g.cfg.Branch,
		"--", g.cfg.Remote, g.cfg.Dir); err != nil {
		// git removes the directory it created; an empty one we made
		// stays, which the next clone accepts.
		return err
	}
	g.remoteChecked = true
	g.log.Info("git: cloned", "remote", g.cfg.Remote, "branch", g.cfg.Branch, "dir", g.cfg.Dir)
	return nil
}

func (g *Git) fetch(ctx context.Context) error {
	_, err := g.run(ctx, "", "fetch", "--quiet", "--no-tags", "origin",
		"+"+g.localRef()+":"+g.remoteRef())
	return err
}

// resetTo checks the branch out at ref and removes every change and
// untracked file: the directory is the adapter's own.
func (g *Git) resetTo(ctx context.Context, ref string) error {
	if _, err := g.run(ctx, "", "checkout", "--quiet", "--force", "-B", g.cfg.Branch, ref); err != nil {
		return err
	}
	_, err := g.run(ctx, "", "clean", "-ffdxq")
	return err
}

// ahead counts the local commits the remote branch does not have.
func (g *Git) ahead(ctx context.Context) (int, error) {
	out, err := g.run(ctx, "", "rev-list", "--count", g.remoteRef()+".."+g.localRef())
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return 0, fmt.Errorf("git rev-list: %q is not a count", out)
	}
	return n, nil
}

// edit sets the weights in r.File and commits them; it returns the new
// commit, or "" when the file already had them.
func (g *Git) edit(ctx context.Context, r GitRoute, t Target) (string, error) {
	// os.Root keeps reads and writes inside the clone even if the
	// repository holds symlinks pointing out of it.
	root, err := os.OpenRoot(g.cfg.Dir)
	if err != nil {
		return "", fmt.Errorf("git: dir: %w", err)
	}
	defer root.Close()
	fi, err := root.Lstat(r.File)
	if errors.Is(err, fs.ErrNotExist) {
		return "", Permanentf("git: rollout %q: %s does not exist in branch %s of %s", t.Rollout, r.File, g.cfg.Branch, g.cfg.Remote)
	}
	if err != nil {
		return "", Permanent(fmt.Errorf("git: rollout %q: %w", t.Rollout, err))
	}
	if !fi.Mode().IsRegular() {
		return "", Permanentf("git: rollout %q: %s is not a regular file (%v)", t.Rollout, r.File, fi.Mode().Type())
	}
	src, err := root.ReadFile(r.File)
	if err != nil {
		return "", fmt.Errorf("git: rollout %q: %w", t.Rollout, err)
	}
	out, changed, err := setWeights(src, r, t.CanaryWeight)
	if err != nil {
		return "", Permanent(fmt.Errorf("git: rollout %q: %s: %w", t.Rollout, r.File, err))
	}
	if !changed {
		return "", nil
	}
	if err := root.WriteFile(r.File, out, fi.Mode().Perm()); err != nil {
		return "", fmt.Errorf("git: rollout %q: %w", t.Rollout, err)
	}
	path := filepath.ToSlash(r.File)
	if _, err := g.run(ctx, "", "add", "--", path); err != nil {
		return "", err
	}
	if _, err := g.run(ctx, commitMessage(t, r), "commit", "--quiet", "--no-verify", "--file=-", "--", path); err != nil {
		return "", err
	}
	head, err := g.run(ctx, "", "rev-parse", "HEAD")
	return strings.TrimSpace(head), err
}

// push pushes the branch, never forced. A rejection because the remote
// branch moved is errRemoteMoved; refusals that will not mend by themselves
// are permanent.
func (g *Git) push(ctx context.Context) error {
	_, err := g.run(ctx, "", "push", "--porcelain", "origin", g.localRef()+":"+g.localRef())
	var ge *gitError
	if err == nil || !errors.As(err, &ge) || ge.timedOut {
		return err
	}
	out := ge.stdout + ge.stderr
	switch {
	case strings.Contains(out, "[rejected]") && (strings.Contains(out, "fetch first") ||
		strings.Contains(out, "non-fast-forward") || strings.Contains(out, "stale info")),
		// The branch moved between the ref advertisement and the update.
		strings.Contains(out, "[remote rejected]") && (strings.Contains(out, "failed to update ref") ||
			strings.Contains(out, "failed to lock") || strings.Contains(out, "cannot lock ref")):
		return fmt.Errorf("%w: %w", errRemoteMoved, err)
	case strings.Contains(out, "[remote rejected]"):
		// A hook or a branch protection refused the commit.
		return Permanent(err)
	}
	return err
}

// errRemoteMoved: the push was rejected because the remote branch has
// commits the local one lacks.
var errRemoteMoved = errors.New("the remote branch moved")

// gitError is a git command that failed.
type gitError struct {
	args     []string
	exit     int // -1 when it did not exit by itself
	timedOut bool
	stdout   string
	stderr   string
	err      error
}

func (e *gitError) Error() string {
	msg := strings.TrimSpace(e.stderr)
	if msg == "" {
		msg = strings.TrimSpace(e.stdout)
	}
	if len(msg) > 2000 {
		msg = msg[:2000] + "…"
	}
	switch {
	case msg == "":
		return fmt.Sprintf("git %s: %v", e.args[0], e.err)
	}
	return fmt.Sprintf("git %s: %v: %s", e.args[0], e.err, msg)
}

func (e *gitError) Unwrap() error { return e.err }

// permanentGit lists (lower case) what git prints when the remote refuses
// for good: the repository or branch does not exist, or the credentials are
// refused or missing (prompts are disabled).
var permanentGit = []string{
	"does not appear to be a git repository",
	"repository not found",
	"fatal: repository '", // … does not exist (a path), … not found (http)
	"not found in upstream",
	"couldn't find remote ref",
	"permission denied",
	"permission to ",
	"authentication failed",
	"could not read username",
	"could not read password",
	"access denied",
	"returned error: 401",
	"returned error: 403",
	"returned error: 404",
	"not a git repository",
}

func (g *Git) run(ctx context.Context, stdin string, args ...string) (string, error) {
	return g.runIn(ctx, g.cfg.Dir, stdin, args...)
}

// runIn runs one git command under CommandTimeout with the adapter's
// identity, in English, and never waiting for a prompt.
func (g *Git) runIn(ctx context.Context, dir, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.CommandTimeout)
	defer cancel()
	full := append([]string{"-c", "user.name=" + g.cfg.AuthorName, "-c", "user.email=" + g.cfg.AuthorEmail}, args...)
	cmd := exec.CommandContext(ctx, "git", full...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_TERMINAL_PROMPT=0", "GCM_INTERACTIVE=never", "LC_ALL=C", "LANGUAGE=C",
		"GIT_AUTHOR_NAME="+g.cfg.AuthorName, "GIT_AUTHOR_EMAIL="+g.cfg.AuthorEmail,
		"GIT_COMMITTER_NAME="+g.cfg.AuthorName, "GIT_COMMITTER_EMAIL="+g.cfg.AuthorEmail,
	)
	// After a kill, ssh or a remote helper may still hold the pipes; do
	// not wait for them longer than this.
	cmd.WaitDelay = 2 * time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	g.log.Debug("git: ran", "command", args[0], "took", time.Since(start), "err", err)
	if err == nil {
		return stdout.String(), nil
	}
	ge := &gitError{args: args, exit: -1, stdout: stdout.String(), stderr: stderr.String(), err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ge.exit = ee.ExitCode()
	}
	if ctx.Err() != nil {
		ge.timedOut = true
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			ge.err = fmt.Errorf("no answer within command_timeout %v: %w", g.cfg.CommandTimeout, err)
		} else {
			ge.err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return "", ge
	}
	low := strings.ToLower(ge.stderr)
	for _, p := range permanentGit {
		if strings.Contains(low, p) {
			return "", Permanent(ge)
		}
	}
	return "", ge
}

// commitMessage says what happened in its subject and carries the command
// as git trailers (git interpret-trailers --parse reads them back).
func commitMessage(t Target, r GitRoute) string {
	var b strings.Builder
	fmt.Fprintf(&b, "canaryd: %s canary %s at %d%%", oneLine(t.Rollout), oneLine(t.Canary), t.CanaryWeight)
	if t.Action != "" {
		fmt.Fprintf(&b, " (%s)", oneLine(string(t.Action)))
	}
	fmt.Fprintf(&b, "\n\nSet the weight of backend %s (canary %s) to %d and of %s (baseline %s) to %d in %s.\n\n",
		r.Canary, oneLine(t.Canary), t.CanaryWeight, r.Baseline, oneLine(t.Baseline), 100-t.CanaryWeight, filepath.ToSlash(r.File))
	trailer := func(k, v string) {
		if v = oneLine(v); v != "" {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	trailer("Command-Id", t.CommandID)
	trailer("Rollout", t.Rollout)
	trailer("Seq", strconv.FormatUint(t.Seq, 10))
	trailer("Deployment-Id", t.DeploymentID)
	trailer("Commit", t.Commit)
	trailer("Action", string(t.Action))
	trailer("Weight", strconv.Itoa(t.CanaryWeight))
	return b.String()
}

// oneLine keeps a value on its trailer's line.
func oneLine(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
}

// The route kinds whose weights the adapter can set.
var routeKinds = map[string]func(spec *yaml.Node) ([]backendList, error){
	"HTTPRoute":      gatewayBackends,
	"GRPCRoute":      gatewayBackends,
	"VirtualService": istioBackends,
	"TrafficSplit":   smiBackends,
}

func kindList() string {
	ks := make([]string, 0, len(routeKinds))
	for k := range routeKinds {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// backendList is one list of weighted backends (a rule's backendRefs, an
// http route's destinations, a TrafficSplit's backends): weights compare
// only within one list.
type backendList struct {
	path    string
	entries []backendEntry
}

type backendEntry struct {
	names  []string   // what a configured backend name may be to match
	label  string     // for messages
	path   string     // spec.rules[0].backendRefs[1]
	line   int        // of the entry
	weight *yaml.Node // nil: the entry has no weight
}

// setWeights sets, in the YAML manifest src, the canary backend's weight to
// w and the baseline's to 100−w. It changes the bytes of the two weight
// scalars and nothing else, so comments, key order, quoting and blank lines
// stay as they were. changed is false when both already had their value.
func setWeights(src []byte, r GitRoute, w int) (out []byte, changed bool, err error) {
	obj, kind, name, err := findRouteObject(src, r.Object)
	if err != nil {
		return nil, false, err
	}
	spec := mapGet(obj, "spec")
	if spec == nil || spec.Kind != yaml.MappingNode {
		return nil, false, fmt.Errorf("%s/%s has no spec mapping", kind, name)
	}
	lists, err := routeKinds[kind](spec)
	if err != nil {
		return nil, false, fmt.Errorf("%s/%s: %w", kind, name, err)
	}
	base, canary, err := pickPair(lists, r)
	if err != nil {
		return nil, false, fmt.Errorf("%s/%s: %w", kind, name, err)
	}
	edits := []weightEdit{{base.weight, 100 - w}, {canary.weight, w}}
	for _, e := range edits {
		if err := checkWeightNode(e.node); err != nil {
			return nil, false, err
		}
	}
	out, changed, err = spliceWeights(src, edits)
	if err != nil || !changed {
		return nil, changed, err
	}
	// The splice is checked by reading the result back: it must be YAML
	// with the weights in place.
	if _, again, err := setWeights(out, r, w); err != nil || again {
		return nil, false, fmt.Errorf("BUG: the edited file does not read back with the weights (changed again: %v): %v", again, err)
	}
	return out, true, nil
}

type weightEdit struct {
	node  *yaml.Node
	value int
}

func checkWeightNode(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Style != 0 {
		return fmt.Errorf("the weight at line %d is %q, not a plain integer", n.Line, n.Value)
	}
	return nil
}

// spliceWeights replaces the text of each weight scalar with its new value.
func spliceWeights(src []byte, edits []weightEdit) ([]byte, bool, error) {
	type span struct {
		off, end int
		text     string
	}
	var spans []span
	for _, e := range edits {
		var cur int64
		if err := e.node.Decode(&cur); err != nil {
			return nil, false, fmt.Errorf("the weight at line %d: %w", e.node.Line, err)
		}
		if cur == int64(e.value) {
			continue
		}
		off, err := nodeOffset(src, e.node)
		if err != nil {
			return nil, false, err
		}
		spans = append(spans, span{off, off + len(e.node.Value), strconv.Itoa(e.value)})
	}
	if len(spans) == 0 {
		return src, false, nil
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].off > spans[j].off })
	out := bytes.Clone(src)
	for _, s := range spans {
		out = append(out[:s.off:s.off], append([]byte(s.text), out[s.end:]...)...)
	}
	return out, true, nil
}

// nodeOffset turns a scalar's line and column (1-based, the column counted
// in characters) into its byte offset in src, and checks that its text is
// there.
func nodeOffset(src []byte, n *yaml.Node) (int, error) {
	off := 0
	for line := 1; line < n.Line; line++ {
		i := bytes.IndexByte(src[off:], '\n')
		if i < 0 {
			return 0, fmt.Errorf("BUG: line %d is past the end of the file", n.Line)
		}
		off += i + 1
	}
	for col := 1; col < n.Column; col++ {
		if off >= len(src) || src[off] == '\n' {
			return 0, fmt.Errorf("BUG: column %d is past the end of line %d", n.Column, n.Line)
		}
		_, size := utf8.DecodeRune(src[off:])
		off += size
	}
	if !bytes.HasPrefix(src[off:], []byte(n.Value)) {
		return 0, fmt.Errorf("BUG: the weight %q is not at line %d column %d", n.Value, n.Line, n.Column)
	}
	return off, nil
}

// findRouteObject returns the root mapping of the route object in the
// (possibly multi-document) manifest: the one obj names, or else the only
// document of a supported kind.
func findRouteObject(src []byte, obj *GitObject) (root *yaml.Node, kind, name string, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var found []string
	var match []*yaml.Node
	var matchKind, matchName []string
	for i := 0; ; i++ {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, "", "", fmt.Errorf("not YAML: %w", err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		m := doc.Content[0]
		if m.Kind != yaml.MappingNode {
			found = append(found, fmt.Sprintf("document %d is not a mapping", i+1))
			continue
		}
		k := scalar(mapGet(m, "kind"))
		n := scalar(mapGet(mapGet(m, "metadata"), "name"))
		if n == "" {
			found = append(found, k)
		} else {
			found = append(found, k+"/"+n)
		}
		if _, ok := routeKinds[k]; !ok {
			continue
		}
		if obj != nil && (obj.Kind != k || obj.Name != n) {
			continue
		}
		match, matchKind, matchName = append(match, m), append(matchKind, k), append(matchName, n)
	}
	what := "route object (" + kindList() + ")"
	if obj != nil {
		what = obj.Kind + "/" + obj.Name
	}
	switch {
	case len(found) == 0:
		return nil, "", "", errors.New("the file holds no YAML document")
	case len(match) == 0:
		return nil, "", "", fmt.Errorf("no %s in the file; it holds %s", what, strings.Join(found, ", "))
	case len(match) > 1:
		var ms []string
		for i := range match {
			ms = append(ms, matchKind[i]+"/"+matchName[i])
		}
		return nil, "", "", fmt.Errorf("the file holds %d route objects (%s); say which with object: {kind, name}", len(match), strings.Join(ms, ", "))
	}
	if err := noAliases(match[0]); err != nil {
		return nil, "", "", err
	}
	return match[0], matchKind[0], matchName[0], nil
}

// noAliases refuses anchors and aliases in the route object: a weight
// shared through an alias cannot be edited in one place only.
func noAliases(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return fmt.Errorf("line %d uses a YAML anchor or alias, which the adapter does not edit", n.Line)
	}
	for _, c := range n.Content {
		if err := noAliases(c); err != nil {
			return err
		}
	}
	return nil
}

// mapGet returns the value of key in mapping m, or nil.
func mapGet(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// seqItems returns the items of the sequence at key in m; nil when the key
// is missing, an error when it is not a sequence.
func seqItems(m *yaml.Node, key, path string) ([]*yaml.Node, error) {
	n := mapGet(m, key)
	if n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s.%s at line %d is not a list", path, key, n.Line)
	}
	return n.Content, nil
}

// gatewayBackends reads spec.rules[].backendRefs[] {name, weight} of a
// Gateway API HTTPRoute or GRPCRoute.
func gatewayBackends(spec *yaml.Node) ([]backendList, error) {
	rules, err := seqItems(spec, "rules", "spec")
	if err != nil {
		return nil, err
	}
	var lists []backendList
	for i, rule := range rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		refs, err := seqItems(rule, "backendRefs", path)
		if err != nil {
			return nil, err
		}
		l := backendList{path: path + ".backendRefs"}
		for j, ref := range refs {
			name := scalar(mapGet(ref, "name"))
			l.entries = append(l.entries, backendEntry{
				names: []string{name}, label: name, path: fmt.Sprintf("%s[%d]", l.path, j),
				line: ref.Line, weight: mapGet(ref, "weight"),
			})
		}
		lists = append(lists, l)
	}
	return lists, nil
}

// istioBackends reads spec.http[].route[] {destination: {host, subset},
// weight} of an Istio VirtualService.
func istioBackends(spec *yaml.Node) ([]backendList, error) {
	routes, err := seqItems(spec, "http", "spec")
	if err != nil {
		return nil, err
	}
	var lists []backendList
	for i, hr := range routes {
		path := fmt.Sprintf("spec.http[%d]", i)
		dests, err := seqItems(hr, "route", path)
		if err != nil {
			return nil, err
		}
		l := backendList{path: path + ".route"}
		for j, d := range dests {
			dest := mapGet(d, "destination")
			host, subset := scalar(mapGet(dest, "host")), scalar(mapGet(dest, "subset"))
			e := backendEntry{names: []string{host}, label: host, path: fmt.Sprintf("%s[%d]", l.path, j),
				line: d.Line, weight: mapGet(d, "weight")}
			if subset != "" {
				e.label = host + "/" + subset
				e.names = []string{subset, e.label}
			}
			l.entries = append(l.entries, e)
		}
		lists = append(lists, l)
	}
	return lists, nil
}

// smiBackends reads spec.backends[] {service, weight} of an SMI
// TrafficSplit.
func smiBackends(spec *yaml.Node) ([]backendList, error) {
	items, err := seqItems(spec, "backends", "spec")
	if err != nil {
		return nil, err
	}
	l := backendList{path: "spec.backends"}
	for j, b := range items {
		name := scalar(mapGet(b, "service"))
		l.entries = append(l.entries, backendEntry{names: []string{name}, label: name,
			path: fmt.Sprintf("%s[%d]", l.path, j), line: b.Line, weight: mapGet(b, "weight")})
	}
	return []backendList{l}, nil
}

// pickPair finds the one weighted entry of the baseline and the one of the
// canary. They must share a list, and the other entries of that list must
// have weight 0, or the two weights would not be percentages of the
// traffic. Entries without a weight elsewhere (a header-matched rule that
// always goes to the canary) are left alone.
func pickPair(lists []backendList, r GitRoute) (base, canary backendEntry, err error) {
	var bs, cs []backendEntry
	var bl, cl []int
	var weighted []string
	unweighted := map[string]int{}
	for li, l := range lists {
		for _, e := range l.entries {
			isB, isC := slices.Contains(e.names, r.Baseline), slices.Contains(e.names, r.Canary)
			if e.weight == nil {
				if isB || isC {
					unweighted[e.label]++
				}
				continue
			}
			weighted = append(weighted, fmt.Sprintf("%s=%s (line %d)", e.label, e.weight.Value, e.line))
			switch {
			case isB && isC:
				return base, canary, fmt.Errorf("%s (%s) matches both the baseline %q and the canary %q", e.path, e.label, r.Baseline, r.Canary)
			case isB:
				bs, bl = append(bs, e), append(bl, li)
			case isC:
				cs, cl = append(cs, e), append(cl, li)
			}
		}
	}
	if len(bs) != 1 || len(cs) != 1 {
		desc := func(role, name string, es []backendEntry) string {
			if len(es) == 0 {
				s := fmt.Sprintf("no weighted entry for the %s backend %q", role, name)
				if n := unweighted[name]; n > 0 {
					s += fmt.Sprintf(" (%d without a weight)", n)
				}
				return s
			}
			var at []string
			for _, e := range es {
				at = append(at, fmt.Sprintf("%s line %d", e.path, e.line))
			}
			return fmt.Sprintf("%d weighted entries for the %s backend %q (%s)", len(es), role, name, strings.Join(at, ", "))
		}
		var parts []string
		if len(bs) != 1 {
			parts = append(parts, desc("baseline", r.Baseline, bs))
		}
		if len(cs) != 1 {
			parts = append(parts, desc("canary", r.Canary, cs))
		}
		found := "none"
		if len(weighted) > 0 {
			found = strings.Join(weighted, ", ")
		}
		return base, canary, fmt.Errorf("want exactly one weighted baseline and one weighted canary entry; found %s; weighted backends in the route: %s",
			strings.Join(parts, " and "), found)
	}
	base, canary = bs[0], cs[0]
	if bl[0] != cl[0] {
		return base, canary, fmt.Errorf("the baseline %q (%s) and the canary %q (%s) are in different lists; their weights would not split one route's traffic",
			r.Baseline, base.path, r.Canary, canary.path)
	}
	for _, e := range lists[bl[0]].entries {
		if e.path == base.path || e.path == canary.path {
			continue
		}
		if e.weight == nil || e.weight.Value != "0" {
			w := "no weight"
			if e.weight != nil {
				w = "weight " + e.weight.Value
			}
			return base, canary, fmt.Errorf("%s also routes to %s (%s, line %d); the baseline and the canary must share their list only with weight-0 entries",
				lists[bl[0]].path, e.label, w, e.line)
		}
	}
	return base, canary, nil
}
