package route

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The routes file of `canaryd route` says which route each rollout's
// commands set, and how to reach each kind of router:
//
//	haproxy:                # settings of the HAProxy adapter (HAProxyConfig)
//	  runtime_api: /var/run/haproxy/admin.sock
//	routes:
//	  - rollout: support-agent
//	    haproxy: {backend: agents, baseline: stable, canary: canary}   # HAProxyRoute
//	  - rollout: triage-agent
//	    kubernetes: {...}   # KubeRoute, with a top-level kubernetes: section (KubeConfig)
//	  - rollout: billing-agent
//	    git: {...}          # GitRoute, with a top-level git: section (GitConfig)
//
// Each route names exactly one kind; a rollout has one route. deploy/routes.yaml
// is a commented example.

// RouteFileError is a bad routes file: the file, the line and what is wrong.
type RouteFileError struct {
	File string
	Line int
	Msg  string
}

func (e *RouteFileError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// kind builds the adapter of one kind from its top-level settings section
// (nil when the file has none) and its routes (rollout → the route's node).
type kind struct {
	name  string
	build func(file string, settings *yaml.Node, routes map[string]*yaml.Node, log *slog.Logger, check bool) (Adapter, error)
}

// checked stands for an adapter whose config was checked but not built
// (CheckRoutes): building one may need the environment it runs in (a
// Kubernetes service account, the git command).
type checked string

func (c checked) Kind() string { return string(c) }
func (c checked) Apply(context.Context, Target) error {
	return Permanentf("BUG: a %s route checked by CheckRoutes was applied", string(c))
}

// kinds are the adapters a routes file may use, in the order they are
// documented.
var kinds = []kind{
	kindOf("haproxy", NewHAProxy),
	kindOf("kubernetes", NewKube),

	kindOf("git", NewGit),
}

// validator is an adapter's settings or route config.
type validator interface{ Validate() error }

// kindOf returns the kind name whose settings decode into C and routes into
// R, built by newA. Each section and route is decoded strictly and
// validated on its own first, so that an error names its line; newA then
// checks what needs them together.
func kindOf[C validator, R validator, A Adapter](name string, newA func(C, map[string]R, *slog.Logger) (A, error)) kind {
	return kind{name: name, build: func(file string, settings *yaml.Node, routes map[string]*yaml.Node, log *slog.Logger, check bool) (Adapter, error) {
		var cfg C
		if settings != nil {
			if err := decodeStrict(file, settings, &cfg); err != nil {
				return nil, err
			}
		}
		if err := cfg.Validate(); err != nil {
			line := 1
			if settings != nil {
				line = settings.Line
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, name) {
				msg = name + ": " + msg
			}
			return nil, &RouteFileError{file, line, msg}
		}
		rs := make(map[string]R, len(routes))
		for ro, n := range routes {
			var r R
			if err := decodeStrict(file, n, &r); err != nil {
				return nil, err
			}
			if err := r.Validate(); err != nil {
				return nil, &RouteFileError{file, n.Line, fmt.Sprintf("route of %q: %v", ro, err)}
			}
			rs[ro] = r
		}
		if check {
			return checked(name), nil
		}
		a, err := newA(cfg, rs, log)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", file, name, err)
		}
		return a, nil
	}}
}

var lineRE = regexp.MustCompile(`^line \d+: `)

// decodeStrict decodes n into v, refusing unknown fields, and returns an
// error that names n's line.
func decodeStrict(file string, n *yaml.Node, v any) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(n); err != nil {
		return &RouteFileError{file, n.Line, err.Error()}
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		// The lines of the re-encoded node are not the file's: name the
		// section's line, and each problem without its line.
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		var te *yaml.TypeError
		if errors.As(err, &te) {
			probs := make([]string, len(te.Errors))
			for i, e := range te.Errors {
				probs[i] = lineRE.ReplaceAllString(e, "")
			}
			msg = strings.Join(probs, "; ")
		}
		return &RouteFileError{file, n.Line, msg}
	}
	return nil
}

// LoadRoutes reads a routes file and builds the adapters it names: a Mux
// over every rollout's route. A bad file is a *RouteFileError naming its
// line.
func LoadRoutes(file string, log *slog.Logger) (*Mux, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	return ParseRoutes(file, src, log)
}

// CheckRoutes reads a routes file and checks every section and route
// without building the adapters (canaryd validate --routes): what it finds
// wrong, LoadRoutes would too; LoadRoutes may also fail on what only the
// running environment has (the in-cluster service account, git).
func CheckRoutes(file string) (*Mux, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	return parseRoutes(file, src, nil, true)
}

// ParseRoutes is LoadRoutes on src, read from file.
func ParseRoutes(file string, src []byte, log *slog.Logger) (*Mux, error) {
	return parseRoutes(file, src, log, false)
}

func parseRoutes(file string, src []byte, log *slog.Logger, check bool) (*Mux, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, &RouteFileError{file, max(doc.Line, 1), "want a mapping with routes: and the settings of the adapters it uses"}
	}
	top := doc.Content[0]
	settings := map[string]*yaml.Node{}
	var routes *yaml.Node
	known := []string{"routes"}
	for _, k := range kinds {
		known = append(known, k.name)
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		key, val := top.Content[i], top.Content[i+1]
		switch {
		case key.Value == "routes":
			routes = val
		case slices.ContainsFunc(kinds, func(k kind) bool { return k.name == key.Value }):
			settings[key.Value] = val
		default:
			return nil, &RouteFileError{file, key.Line, fmt.Sprintf("unknown key %q; known: %s", key.Value, strings.Join(known, ", "))}
		}
	}
	if routes == nil || routes.Kind != yaml.SequenceNode || len(routes.Content) == 0 {
		line := top.Line
		if routes != nil {
			line = routes.Line
		}
		return nil, &RouteFileError{file, line, "routes: want a list of {rollout: NAME, <kind>: {...}} with at least one route"}
	}

	byKind := map[string]map[string]*yaml.Node{}
	kindOf := map[string]string{}
	for _, r := range routes.Content {
		if r.Kind != yaml.MappingNode {
			return nil, &RouteFileError{file, r.Line, "a route is a mapping {rollout: NAME, <kind>: {...}}"}
		}
		var rollout string
		var kindName string
		var body *yaml.Node
		for i := 0; i+1 < len(r.Content); i += 2 {
			key, val := r.Content[i], r.Content[i+1]
			switch {
			case key.Value == "rollout":
				rollout = val.Value
			case slices.ContainsFunc(kinds, func(k kind) bool { return k.name == key.Value }):
				if kindName != "" {
					return nil, &RouteFileError{file, key.Line, fmt.Sprintf("route of %q names both %s and %s; one route per rollout", rollout, kindName, key.Value)}
				}
				kindName, body = key.Value, val
			default:
				return nil, &RouteFileError{file, key.Line, fmt.Sprintf("unknown key %q in a route; known: rollout, %s", key.Value, strings.Join(known[1:], ", "))}
			}
		}
		switch {
		case rollout == "":
			return nil, &RouteFileError{file, r.Line, "route without rollout"}
		case kindName == "":
			return nil, &RouteFileError{file, r.Line, fmt.Sprintf("route of %q names no router kind (%s)", rollout, strings.Join(known[1:], ", "))}
		}
		if prev, dup := kindOf[rollout]; dup {
			return nil, &RouteFileError{file, r.Line, fmt.Sprintf("rollout %q has a route already (%s); one route per rollout per router", rollout, prev)}
		}
		kindOf[rollout] = kindName
		if byKind[kindName] == nil {
			byKind[kindName] = map[string]*yaml.Node{}
		}
		byKind[kindName][rollout] = body
	}

	by := map[string]Adapter{}
	var errs []error
	for _, k := range kinds {
		rs := byKind[k.name]
		if len(rs) == 0 {
			if n := settings[k.name]; n != nil {
				log.Warn("routes file has settings for an adapter no route uses", "file", file, "line", n.Line, "kind", k.name)
			}
			continue
		}
		a, err := k.build(file, settings[k.name], rs, log, check)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for ro := range rs {
			by[ro] = a
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return NewMux(by), nil
}
