package router

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/inferensys/canaryd/schemas"
)

// Buckets is the number of hash buckets: a weight of w percent sends the
// keys in buckets [0, w×100) to the canary, so weights have a resolution of
// 0.01 points.
const Buckets = 10000

// Bucket returns the bucket of a sticky key in rollout: the first 8 bytes of
// SHA-256(rollout NUL key) as a big-endian unsigned integer, modulo Buckets.
// It depends on nothing else (not on the versions nor the weight), so a key
// keeps its bucket for the whole rollout, and other routers, in any language,
// compute the same one (schemas/testdata/router-vectors.json).
func Bucket(rollout, key string) int {
	var stack [256]byte
	b := append(append(append(stack[:0], rollout...), 0), key...)
	sum := sha256.Sum256(b)
	return int(binary.BigEndian.Uint64(sum[:8]) % Buckets)
}

// Assign returns the version, Baseline or Canary, that a request with the
// sticky key (a session or user id) and attributes goes to:
//
//   - rollback: the baseline; promote: the canary, for everyone;
//   - otherwise (set_weight, hold) the canary when the request is in the
//     cohort (every request when there is none) and Bucket(rollout, key) <
//     Weight×100; the baseline otherwise.
//
// The canary set only grows with the weight: a key on the canary at 5% is
// on it at 25%, and no key flips back and forth while the weight rises.
func (s *State) Assign(key string, attrs map[string]string) string {
	if isCanary(s.Action, s.Weight, s.Cohort, s.Rollout, key, attrs) {
		return s.Canary
	}
	return s.Baseline
}

func isCanary(a schemas.Action, weight int, cohort *schemas.Cohort, rollout, key string, attrs map[string]string) bool {
	switch a {
	case schemas.ActionPromote:
		return true
	case schemas.ActionRollback:
		return false
	}
	if weight <= 0 || !cohort.Contains(attrs) {
		return false
	}
	return Bucket(rollout, key) < weight*(Buckets/100)
}
