package stream

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"go.yaml.in/yaml/v3"

	"github.com/inferensys/canaryd/schemas"
)

// OTLP rules: how the OTLP decoders resolve an event's rollout and version
// from span (log record) and resource attributes. They come from the Go API
// (OTLPConfig.Rules, NewOTLPRules) or from a YAML file (LoadOTLPRules,
// `canaryd run --otlp-rules`); otlp.md ("Rollout and version") is the format
// and the reasons behind the defaults. The decoders read the rules through a
// RulesRef, once per record, so that rules can be replaced while they run.
//
// Metrics (on OTLPConfig.Metrics; signal is "spans" or "logs"):
//
//	canaryd_otlp_resolved_total{signal,field,rule}   events emitted, by the rule that resolved their rollout or version
//	                                                 (field rollout|version; rule: the attribute key, "trace" for
//	                                                 evaluations joined through their trace, "none" when unresolved)

// Limits of OTLP rules.
const (
	// MaxOTLPRuleKeys bounds the keys of one field's rules.
	MaxOTLPRuleKeys = maxOTLPRules
	// MaxOTLPRuleMap bounds the entries of one field's map.
	MaxOTLPRuleMap = 4096
	// maxRuleRegexBytes bounds a rule's regular expression.
	maxRuleRegexBytes = 1024
)

// RuleScope tells where a rule looks its attribute key up.
type RuleScope uint8

const (
	// FromAny looks in the span's (log record's) attributes, then in its
	// resource's.
	FromAny RuleScope = iota
	// FromResource looks only in the resource's attributes.
	FromResource
	// FromSpan looks only in the span's (log record's) attributes.
	FromSpan
)

var scopeNames = [...]string{FromAny: "any", FromResource: "resource", FromSpan: "span"}

func (s RuleScope) String() string {
	if int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return "RuleScope(" + strconv.Itoa(int(s)) + ")"
}

// RuleKey is one rule of a field: an attribute key, where to look it up,
// and an optional transform of its value.
type RuleKey struct {
	// Key is the attribute name, e.g. service.name.
	Key string
	// From is where the key is looked up. Default FromAny.
	From RuleScope
	// TrimPrefix, when set, is removed from the start of the value (a value
	// without it is kept as it is): "v" turns v1.5.0 into 1.5.0.
	TrimPrefix string
	// Regex, when set, is an RE2 expression with exactly one capturing
	// group; the value becomes what the group matched. A value it does not
	// match (or where the group is empty) does not match the rule, and the
	// next key is tried. At most one of TrimPrefix and Regex.
	Regex string
	// Line of the key in its file; 0 when not from a file.
	Line int
}

// FieldRules are the rules of one field (rollout or version): the keys in
// order, the first that matches wins; then Map, which replaces a resolved
// value it lists (after the key's transform) with another.
type FieldRules struct {
	// Keys in order. Empty means the field's default keys
	// (DefaultOTLPRules).
	Keys []RuleKey
	// Map replaces resolved values, e.g. {"support-agent-eu":
	// "support-agent"} files a second deployment of one agent under the
	// rollout id of its spec. Values it does not list are kept.
	Map map[string]string
}

// OTLPRules are compiled rules: immutable once made, safe for concurrent
// use. Make them with DefaultOTLPRules, NewOTLPRules, ParseOTLPRules or
// LoadOTLPRules.
type OTLPRules struct {
	file string
	spec [numFields]FieldRules
	f    [numFields]fieldRules
	keys keyTable // knownKeys and the rules' keys
}

// The fields that rules resolve.
const (
	fRollout = iota
	fVersion
	numFields
)

var fieldNames = [numFields]string{"rollout", "version"}

// Slots of the per-rule counts beyond the rules' own indexes.
const (
	ruleTrace    = maxOTLPRules     // joined through the trace index
	ruleNone     = maxOTLPRules + 1 // unresolved
	numRuleSlots = maxOTLPRules + 2
)

type fieldRules struct {
	rules   []rule
	mapping map[string][]byte // nil when empty
}

type rule struct {
	key  string
	from RuleScope
	trim []byte
	re   *regexp.Regexp
}

// defaultRules are the default rules, compiled once; immutable.
var defaultRules = func() *OTLPRules {
	r, err := NewOTLPRules(FieldRules{}, FieldRules{})
	if err != nil {
		panic("BUG: default OTLP rules: " + err.Error())
	}
	return r
}()

// defaultKeys returns the default keys of a field (fresh slices). Resource
// attributes come first: they describe the deployed service, the thing a
// rollout ships, and every span of one process carries the same ones. Span
// attributes (gen_ai.agent.*) are only fallbacks, since the GenAI conventions
// put them on some spans of a trace (invoke_agent) and not on others (chat).
// otlp.md, "Rollout and version", gives the full reasoning.
func defaultKeys(field int) []RuleKey {
	if field == fRollout {
		return []RuleKey{
			{Key: "service.name", From: FromResource},
			{Key: "gen_ai.agent.name"},
		}
	}
	return []RuleKey{
		{Key: "service.version", From: FromResource},
		{Key: "k8s.pod.label.app.kubernetes.io/version", From: FromResource},
		{Key: "container.image.tag", From: FromResource},
		{Key: "k8s.pod.label.rollouts-pod-template-hash", From: FromResource},
		{Key: "gen_ai.agent.version"},
		{Key: "traceloop.entity.version"},
	}
}

// DefaultOTLPRules returns the default rules:
//
//	rollout: service.name (resource), gen_ai.agent.name (any)
//	version: service.version, k8s.pod.label.app.kubernetes.io/version,
//	         container.image.tag, k8s.pod.label.rollouts-pod-template-hash
//	         (all resource), gen_ai.agent.version, traceloop.entity.version (any)
func DefaultOTLPRules() *OTLPRules { return defaultRules }

// OTLPRulesError is a rule set that cannot be used: it names the file (empty
// for rules made in Go), the line, the field and what is wrong
// ("otlp-rules.yaml:7: version.keys.1.from: "pod": want resource, span or
// any").
type OTLPRulesError struct {
	File   string
	Line   int
	Field  string
	Reason string
}

func (e *OTLPRulesError) Error() string {
	loc := e.File
	if loc == "" {
		loc = "otlp rules"
	}
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field == "" {
		return loc + ": " + e.Reason
	}
	return loc + ": " + e.Field + ": " + e.Reason
}

// NewOTLPRules compiles rules made in Go. A field with no keys gets its
// default keys (its Map still applies). The checks are those of
// ParseOTLPRules.
func NewOTLPRules(rollout, version FieldRules) (*OTLPRules, error) {
	return compileRules("", [numFields]FieldRules{rollout, version})
}

// LoadOTLPRules reads rules from a YAML file (format in otlp.md, example in
// deploy/otlp-rules.yaml).
func LoadOTLPRules(path string) (*OTLPRules, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("otlp rules: %w", err)
	}
	return ParseOTLPRules(path, b)
}

// ParseOTLPRules parses rules; name is the file name used in errors.
//
//	rollout:
//	  keys:
//	    - key: service.name
//	      from: resource          # resource, span or any (default)
//	    - gen_ai.agent.name       # a plain key: from any
//	  map:                        # optional: resolved value → rollout id
//	    support-agent-eu: support-agent
//	version:
//	  keys:
//	    - key: service.version
//	      from: resource
//	      trim_prefix: v          # optional: v1.5.0 → 1.5.0
//	    - key: container.image.tag
//	      from: resource
//	      regex: '^v?(\d+\.\d+\.\d+)'   # optional: the one group is the value
//
// Both fields are optional (a missing one keeps its defaults), as is keys
// (the default keys, with the field's map). Refused: unknown fields, a field
// given twice, an empty keys list, a key listed twice in one field, more
// than MaxOTLPRuleKeys keys, a key that is empty, longer than 255 bytes or
// holds a control character, a quote or a backslash, an unknown from, both
// trim_prefix and regex, a regex that does not compile or has other than
// one capturing group, map values that are empty, longer than
// schemas.MaxStringBytes or not UTF-8, more than MaxOTLPRuleMap map entries.
func ParseOTLPRules(name string, b []byte) (*OTLPRules, error) {
	bad := func(line int, field, reason string) error {
		return &OTLPRulesError{File: name, Line: line, Field: field, Reason: reason}
	}
	root, line, reason := yamlMapping(b, "rollout: and/or version:")
	if root == nil {
		return nil, bad(line, "", reason)
	}
	var fields [numFields]FieldRules
	var seen [numFields]bool
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		f := -1
		for j, n := range fieldNames {
			if k.Value == n {
				f = j
			}
		}
		if f < 0 {
			return nil, bad(k.Line, k.Value, "unknown field (want rollout, version)")
		}
		if seen[f] {
			return nil, bad(k.Line, k.Value, "given twice")
		}
		seen[f] = true
		fr, err := parseFieldRules(name, k.Value, v)
		if err != nil {
			return nil, err
		}
		fields[f] = fr
	}
	if !seen[fRollout] && !seen[fVersion] {
		return nil, bad(root.Line, "", "want rollout: and/or version:")
	}
	return compileRules(name, fields)
}

func parseFieldRules(file, path string, n *yaml.Node) (FieldRules, error) {
	var fr FieldRules
	bad := func(line int, field, reason string) error {
		return &OTLPRulesError{File: file, Line: line, Field: field, Reason: reason}
	}
	if n.Kind != yaml.MappingNode {
		return fr, bad(n.Line, path, "want a mapping (keys, map)")
	}
	var haveKeys, haveMap bool
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := path + "." + k.Value
		switch k.Value {
		case "keys":
			if haveKeys {
				return fr, bad(k.Line, field, "given twice")
			}
			haveKeys = true
			if v.Kind != yaml.SequenceNode {
				return fr, bad(v.Line, field, "want a list of keys")
			}
			if len(v.Content) == 0 {
				return fr, bad(v.Line, field, "empty: leave keys out for the default keys")
			}
			if len(v.Content) > MaxOTLPRuleKeys {
				return fr, bad(v.Line, field, fmt.Sprintf("%d keys, at most %d", len(v.Content), MaxOTLPRuleKeys))
			}
			for j, item := range v.Content {
				rk, err := parseRuleKey(file, field+"."+strconv.Itoa(j), item)
				if err != nil {
					return fr, err
				}
				fr.Keys = append(fr.Keys, rk)
			}
		case "map":
			if haveMap {
				return fr, bad(k.Line, field, "given twice")
			}
			haveMap = true
			if v.Kind != yaml.MappingNode {
				return fr, bad(v.Line, field, "want a mapping of resolved value: replacement")
			}
			if len(v.Content)/2 > MaxOTLPRuleMap {
				return fr, bad(v.Line, field, fmt.Sprintf("%d entries, at most %d", len(v.Content)/2, MaxOTLPRuleMap))
			}
			fr.Map = make(map[string]string, len(v.Content)/2)
			for j := 0; j+1 < len(v.Content); j += 2 {
				mk, mv := v.Content[j], v.Content[j+1]
				if mk.Kind != yaml.ScalarNode || mv.Kind != yaml.ScalarNode {
					return fr, bad(mk.Line, field+"."+mk.Value, "want a single value")
				}
				if _, dup := fr.Map[mk.Value]; dup {
					return fr, bad(mk.Line, field+"."+mk.Value, "given twice")
				}
				if err := checkMapEntry(mk.Value, mv.Value); err != "" {
					return fr, bad(mv.Line, field+"."+mk.Value, err)
				}
				fr.Map[mk.Value] = mv.Value
			}
		default:
			return fr, bad(k.Line, field, "unknown field (want keys, map)")
		}
	}
	return fr, nil
}

func parseRuleKey(file, path string, n *yaml.Node) (RuleKey, error) {
	rk := RuleKey{Line: n.Line}
	bad := func(line int, field, reason string) error {
		return &OTLPRulesError{File: file, Line: line, Field: field, Reason: reason}
	}
	switch n.Kind {
	case yaml.ScalarNode:
		rk.Key = n.Value
		return rk, nil
	case yaml.MappingNode:
	default:
		return rk, bad(n.Line, path, "want an attribute key, or a mapping (key, from, trim_prefix, regex)")
	}
	var seen []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := path + "." + k.Value
		for _, s := range seen {
			if s == k.Value {
				return rk, bad(k.Line, field, "given twice")
			}
		}
		seen = append(seen, k.Value)
		if v.Kind != yaml.ScalarNode {
			return rk, bad(v.Line, field, "want a single value")
		}
		switch k.Value {
		case "key":
			rk.Key = v.Value
		case "from":
			switch v.Value {
			case "any":
				rk.From = FromAny
			case "resource":
				rk.From = FromResource
			case "span":
				rk.From = FromSpan
			default:
				return rk, bad(v.Line, field, fmt.Sprintf("%q: want resource, span or any", v.Value))
			}
		case "trim_prefix":
			rk.TrimPrefix = v.Value
			if v.Value == "" {
				return rk, bad(v.Line, field, "empty")
			}
		case "regex":
			rk.Regex = v.Value
			if v.Value == "" {
				return rk, bad(v.Line, field, "empty")
			}
		default:
			return rk, bad(k.Line, field, "unknown field (want key, from, trim_prefix, regex)")
		}
	}
	if rk.Key == "" {
		return rk, bad(n.Line, path+".key", "required: the attribute name")
	}
	return rk, nil
}

func checkMapEntry(k, v string) string {
	switch {
	case k == "":
		return "empty value to map"
	case v == "":
		return "empty replacement"
	case len(v) > schemas.MaxStringBytes || !utf8.ValidString(v):
		return fmt.Sprintf("replacement longer than %d bytes or not UTF-8", schemas.MaxStringBytes)
	}
	return ""
}

// checkRuleKey says what is wrong with an attribute key named in a rule, or
// "". Keys become metric label values, hence no quote, backslash or control
// character.
func checkRuleKey(k string) string {
	if k == "" || len(k) > maxRuleKeyBytes {
		return fmt.Sprintf("empty or longer than %d bytes", maxRuleKeyBytes)
	}
	if !utf8.ValidString(k) {
		return "not UTF-8"
	}
	for _, c := range k {
		if c < 0x20 || c == 0x7f || c == '"' || c == '\\' {
			return fmt.Sprintf("%q: holds a control character, a quote or a backslash", k)
		}
	}
	return ""
}

// compileRules checks fields (defaults filled in for empty key lists) and
// builds the key table and the rule lists the decoders run.
func compileRules(file string, fields [numFields]FieldRules) (*OTLPRules, error) {
	r := &OTLPRules{file: file}
	keys := map[string]keyInfo{}
	for k, id := range knownKeys {
		keys[k] = keyInfo{id: id, f: [numFields]int8{-1, -1}}
	}
	for f, fr := range fields {
		bad := func(line int, field, reason string) error {
			return &OTLPRulesError{File: file, Line: line, Field: field, Reason: reason}
		}
		if len(fr.Keys) == 0 {
			fr.Keys = defaultKeys(f)
		}
		if len(fr.Keys) > MaxOTLPRuleKeys {
			return nil, bad(0, fieldNames[f]+".keys", fmt.Sprintf("%d keys, at most %d", len(fr.Keys), MaxOTLPRuleKeys))
		}
		if len(fr.Map) > MaxOTLPRuleMap {
			return nil, bad(0, fieldNames[f]+".map", fmt.Sprintf("%d entries, at most %d", len(fr.Map), MaxOTLPRuleMap))
		}
		spec := FieldRules{Keys: append([]RuleKey(nil), fr.Keys...)}
		cf := fieldRules{}
		for i, rk := range fr.Keys {
			path := fieldNames[f] + ".keys." + strconv.Itoa(i)
			if why := checkRuleKey(rk.Key); why != "" {
				return nil, bad(rk.Line, path+".key", why)
			}
			if rk.From > FromSpan {
				return nil, bad(rk.Line, path+".from", rk.From.String()+": want resource, span or any")
			}
			ki, ok := keys[rk.Key]
			if !ok {
				ki = keyInfo{f: [numFields]int8{-1, -1}}
			}
			if ki.f[f] >= 0 {
				return nil, bad(rk.Line, path+".key", fmt.Sprintf("%q is already keys.%d of %s", rk.Key, ki.f[f], fieldNames[f]))
			}
			ki.f[f] = int8(i)
			keys[rk.Key] = ki
			ru := rule{key: rk.Key, from: rk.From}
			if rk.TrimPrefix != "" && rk.Regex != "" {
				return nil, bad(rk.Line, path, "both trim_prefix and regex: give one (a regex can drop a prefix too)")
			}
			if rk.TrimPrefix != "" {
				ru.trim = []byte(rk.TrimPrefix)
			}
			if rk.Regex != "" {
				if len(rk.Regex) > maxRuleRegexBytes {
					return nil, bad(rk.Line, path+".regex", fmt.Sprintf("longer than %d bytes", maxRuleRegexBytes))
				}
				re, err := regexp.Compile(rk.Regex)
				if err != nil {
					return nil, bad(rk.Line, path+".regex", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
				}
				if re.NumSubexp() != 1 {
					return nil, bad(rk.Line, path+".regex", fmt.Sprintf("%q has %d capturing groups: want exactly one, the value (use (?:…) for the others)", rk.Regex, re.NumSubexp()))
				}
				ru.re = re
			}
			cf.rules = append(cf.rules, ru)
		}
		if len(fr.Map) > 0 {
			spec.Map = make(map[string]string, len(fr.Map))
			cf.mapping = make(map[string][]byte, len(fr.Map))
			for k, v := range fr.Map {
				if why := checkMapEntry(k, v); why != "" {
					return nil, bad(0, fieldNames[f]+".map."+k, why)
				}
				spec.Map[k] = v
				cf.mapping[k] = []byte(v)
			}
		}
		r.spec[f], r.f[f] = spec, cf
	}
	r.keys = newKeyTable(keys)
	return r, nil
}

// File returns the file the rules were read from; "" for rules made in Go.
func (r *OTLPRules) File() string { return r.file }

// Rollout returns the rollout rules (with the default keys filled in).
func (r *OTLPRules) Rollout() FieldRules { return r.field(fRollout) }

// Version returns the version rules (with the default keys filled in).
func (r *OTLPRules) Version() FieldRules { return r.field(fVersion) }

func (r *OTLPRules) field(f int) FieldRules {
	fr := FieldRules{Keys: append([]RuleKey(nil), r.spec[f].Keys...)}
	if r.spec[f].Map != nil {
		fr.Map = make(map[string]string, len(r.spec[f].Map))
		for k, v := range r.spec[f].Map {
			fr.Map[k] = v
		}
	}
	return fr
}

// String summarises the rules on one line, e.g. "rollout: service.name
// (resource), gen_ai.agent.name (any); version: service.version (resource,
// trim_prefix v), …", as `canaryd validate` prints them.
func (r *OTLPRules) String() string {
	var sb strings.Builder
	for f := range numFields {
		if f > 0 {
			sb.WriteString("; ")
		}
		sb.WriteString(fieldNames[f] + ": ")
		for i, k := range r.spec[f].Keys {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString(k.Key + " (" + k.From.String())
			if k.TrimPrefix != "" {
				sb.WriteString(", trim_prefix " + strconv.Quote(k.TrimPrefix))
			}
			if k.Regex != "" {
				sb.WriteString(", regex " + strconv.Quote(k.Regex))
			}
			sb.WriteString(")")
		}
		if n := len(r.spec[f].Map); n > 0 {
			sb.WriteString(", map of " + strconv.Itoa(n))
		}
	}
	return sb.String()
}

// RulesRef holds the rules the OTLP decoders use and lets them be replaced
// while the decoders run: each decoder loads the pointer once per record, so
// a record is decoded whole under one rule set and the next record under the
// newest. The zero value holds DefaultOTLPRules. Safe for concurrent use.
type RulesRef struct {
	p atomic.Pointer[OTLPRules]
}

// NewRulesRef returns a RulesRef holding r (nil: DefaultOTLPRules).
func NewRulesRef(r *OTLPRules) *RulesRef {
	ref := &RulesRef{}
	ref.Store(r)
	return ref
}

// Load returns the current rules, never nil.
func (x *RulesRef) Load() *OTLPRules {
	if r := x.p.Load(); r != nil {
		return r
	}
	return defaultRules
}

// Store replaces the rules (nil: DefaultOTLPRules). Decoders use them from
// their next record on.
func (x *RulesRef) Store(r *OTLPRules) {
	if r == nil {
		r = defaultRules
	}
	x.p.Store(r)
}

// Reload reads the current rules' file again (LoadOTLPRules) and stores
// the result. When the file cannot be read or is invalid, the current rules
// stay and the error says why; rules not read from a file cannot be
// reloaded (ErrRulesNoFile). It returns the rules in force.
func (x *RulesRef) Reload() (*OTLPRules, error) {
	cur := x.Load()
	if cur.file == "" {
		return cur, ErrRulesNoFile
	}
	r, err := LoadOTLPRules(cur.file)
	if err != nil {
		return cur, err
	}
	x.Store(r)
	return r, nil
}

// ErrRulesNoFile is returned by RulesRef.Reload when the rules in force were
// not read from a file.
var ErrRulesNoFile = errors.New("otlp rules: not read from a file: nothing to reload")

// resolve applies field f's rules to the item's attributes t and the
// current resource's: for each rule in order, the item's value then the
// resource's, as its scope allows. Empty and non-scalar values do not
// match; the first matching value that is longer than
// schemas.MaxStringBytes or not UTF-8 makes the result unknown (nil) rather
// than falling through to a later rule, which could file the event under
// another version. It returns the value (transformed, then mapped) and the
// index of the rule that gave it, or ruleNone.
func (d *otlpDecoder) resolve(f int, t *attrTab) ([]byte, int) {
	itemHas, resHas := t.fHas[f], d.res.fHas[f]
	if itemHas|resHas == 0 {
		return nil, ruleNone
	}
	fr := &d.rs.f[f]
	for i := range fr.rules {
		r := &fr.rules[i]
		var v anyVal
		switch bit := uint64(1) << i; {
		case r.from != FromResource && itemHas&bit != 0:
			v = t.fv[f][i]
		case r.from != FromSpan && resHas&bit != 0:
			v = d.res.fv[f][i]
		default:
			continue
		}
		s := d.text(v)
		if len(s) == 0 {
			continue
		}
		if len(s) > schemas.MaxStringBytes || !utf8.Valid(s) {
			return nil, ruleNone
		}
		if r.trim != nil {
			s = bytes.TrimPrefix(s, r.trim)
		} else if r.re != nil {
			s = d.group(f, i, r.re, s)
		}
		if len(s) == 0 {
			continue
		}
		if fr.mapping != nil {
			if m, ok := fr.mapping[string(s)]; ok {
				s = m
			}
		}
		return s, i
	}
	return nil, ruleNone
}

// reEntry caches a regex rule's result for one value: regexp's
// FindSubmatchIndex allocates its result, and a partition sees few distinct
// versions, so the decoder runs it once per new value.
type reEntry struct {
	id     int // 1 + f*maxOTLPRules + rule index; 0: empty
	in     []byte
	lo, hi int32 // the group in in; lo == hi: no match
}

// group returns what re's group matched in s (a sub-slice of s), or nil.
func (d *otlpDecoder) group(f, i int, re *regexp.Regexp, s []byte) []byte {
	id := 1 + f*maxOTLPRules + i
	h := uint32(2166136261) ^ uint32(id)
	for _, c := range s {
		h = (h ^ uint32(c)) * 16777619
	}
	e := &d.reCache[h%uint32(len(d.reCache))]
	if e.id != id || !bytes.Equal(e.in, s) {
		e.id, e.in, e.lo, e.hi = id, append(e.in[:0], s...), 0, 0
		if m := re.FindSubmatchIndex(s); m != nil && m[2] >= 0 {
			e.lo, e.hi = int32(m[2]), int32(m[3])
		}
	}
	return s[e.lo:e.hi:e.hi]
}

// useRules switches the decoder to rules rs (between records): sizes the
// attribute tables, empties the regex cache and looks up the counters.
func (d *otlpDecoder) useRules(rs *OTLPRules) {
	d.rs = rs
	for _, t := range [...]*attrTab{&d.res, &d.sp.attrs, &d.evTab, &d.lr.attrs} {
		for f := range numFields {
			if n := len(rs.f[f].rules); cap(t.fv[f]) < n {
				t.fv[f] = make([]anyVal, n)
			} else {
				t.fv[f] = t.fv[f][:n]
			}
		}
		t.reset()
	}
	for i := range d.reCache {
		d.reCache[i].id = 0
	}
	d.resolvedC = [numFields][numRuleSlots]*metrics.Counter{}
	for f := range numFields {
		for i := range rs.f[f].rules {
			d.resolvedC[f][i] = d.c.resolvedCounter(f, rs.f[f].rules[i].key)
		}
		d.resolvedC[f][ruleNone] = d.c.resolvedCounter(f, "none")
		if d.c.logs && d.c.traces != nil {
			d.resolvedC[f][ruleTrace] = d.c.resolvedCounter(f, "trace")
		}
	}
}

func (c *otlpShared) resolvedCounter(f int, rule string) *metrics.Counter {
	return c.set.GetOrCreateCounter(`canaryd_otlp_resolved_total{signal="` + c.signal + `",field="` + fieldNames[f] + `",rule="` + rule + `"}`)
}

// flushResolved adds the record's per-rule counts to the counters and
// zeroes them.
func (d *otlpDecoder) flushResolved() {
	for f := range numFields {
		n, c := &d.resolved[f], &d.resolvedC[f]
		add := func(i int) {
			if n[i] > 0 {
				c[i].Add(n[i]) // a nil counter here is a BUG: useRules made every one that can count
				n[i] = 0
			}
		}
		for i := range d.rs.f[f].rules {
			add(i)
		}
		add(ruleTrace)
		add(ruleNone)
	}
}
