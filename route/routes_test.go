package route

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRoutes(t *testing.T) {
	src := `
git:
  remote: /srv/git/routes.git
  dir: /var/lib/canaryd/routes
routes:
  - rollout: support-agent
    git: {file: prod/httproute-patch.yaml, baseline: agent-stable, canary: agent-canary}
  - rollout: triage-agent
    git:
      file: prod/vs-patch.yaml
      baseline: triage
      canary: triage-canary
      object: {kind: VirtualService, name: triage}
`
	m, err := ParseRoutes("routes.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ro := range []string{"support-agent", "triage-agent"} {
		if !m.Has(ro) {
			t.Errorf("no route for %s", ro)
		}
	}
	if m.Has("other") {
		t.Error("a route for a rollout the file does not name")
	}
	g, ok := m.by["triage-agent"].(*Git)
	if !ok || g.routes["triage-agent"].Object == nil || g.routes["triage-agent"].Object.Kind != "VirtualService" || g.cfg.Remote != "/srv/git/routes.git" {
		t.Errorf("triage-agent's adapter %#v; want the git adapter with its object", m.by["triage-agent"])
	}
}

// A bad routes file is refused with the line that is wrong.
func TestBadRoutes(t *testing.T) {
	const git = "git: {remote: /r.git, dir: /d}\n"
	for _, tc := range []struct{ name, src, want string }{
		{"not a mapping", "- a\n", "routes.yaml:1: want a mapping"},
		{"no routes", git, "routes.yaml:1: routes: want a list"},
		{"unknown top key", "gti: {}\nroutes: []\n", `routes.yaml:1: unknown key "gti"; known: routes,`},
		{"no rollout", git + "routes:\n  - git: {file: a.yaml, baseline: a, canary: b}\n", "routes.yaml:3: route without rollout"},
		{"no kind", git + "routes:\n  - rollout: r\n", `routes.yaml:3: route of "r" names no router kind`},
		{"unknown route key", git + "routes:\n  - rollout: r\n    gitt: {}\n", `routes.yaml:4: unknown key "gitt" in a route`},
		{"duplicate rollout", git + "routes:\n  - {rollout: r, git: {file: a.yaml, baseline: a, canary: b}}\n  - {rollout: r, git: {file: b.yaml, baseline: a, canary: b}}\n", `routes.yaml:4: rollout "r" has a route already (git)`},
		{"unknown field", git + "routes:\n  - rollout: r\n    git: {file: a.yaml, baseline: a, canary: b, weight: 5}\n", "routes.yaml:4: field weight not found in type route.GitRoute"},
		{"route invalid", git + "routes:\n  - rollout: r\n    git: {file: ../a.yaml, baseline: a, canary: b}\n", `routes.yaml:4: route of "r": git route: file "../a.yaml" must be a path inside the repository`},
		{"settings missing", "routes:\n  - {rollout: r, git: {file: a.yaml, baseline: a, canary: b}}\n", "routes.yaml:1: git: remote is required"},
		{"settings invalid", "git:\n  remote: /r.git\n  dir: /d\n  command_timeout: soon\n" + "routes:\n  - {rollout: r, git: {file: a.yaml, baseline: a, canary: b}}\n", "routes.yaml:2:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRoutes("routes.yaml", []byte(tc.src), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want it to contain %q", err, tc.want)
			}
			var fe *RouteFileError
			if tc.name != "not yaml" && !errors.As(err, &fe) {
				t.Errorf("error %T; want a *RouteFileError", err)
			}
		})
	}
}
