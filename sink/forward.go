package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
)

// OwnerSource is a StatusSource whose rollouts may be judged by another
// instance: with two-stage aggregation each rollout's one judge runs on the
// instance that owns its partition of the partials topic. The rollout's
// endpoints (its status, windows, history, actions, and the controllers'
// judge calls) are then forwarded to that instance, so that a controller or
// an operator may call any instance behind a Service.
type OwnerSource interface {
	// Owner returns where rollout is judged: here, or the base URL of the
	// instance that judges it ("" and not here: not known at the moment,
	// as while the partials topic's partitions are being reassigned). It
	// may ask the broker, within ctx.
	Owner(ctx context.Context, rollout string) (base string, here bool)
}

// Headers of forwarded requests and their replies.
const (
	// ForwardedHeader marks a request one instance forwarded to another;
	// such a request is never forwarded again.
	ForwardedHeader = "X-Canaryd-Forwarded"
	// JudgedByHeader names, on a forwarded request's reply, the instance
	// whose judge answered.
	JudgedByHeader = "X-Canaryd-Judged-By"
)

// forwardByPath forwards a request on a rollout's path ({id}) to the
// rollout's owner; h serves it when the owner is this instance.
func forwardByPath(os OwnerSource, ref refuser, h http.HandlerFunc) http.HandlerFunc {
	if os == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		forwardTo(os, ref, r.PathValue("id"), h, w, r)
	}
}

// forwardFlagger forwards a Flagger webhook to the owner of the rollout its
// payload names; a payload that names none is served here (and refused).
func forwardFlagger(os OwnerSource, ref refuser, h http.HandlerFunc) http.HandlerFunc {
	if os == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxActionBody+1))
		if err != nil {
			ref.refuse(w, http.StatusBadRequest, "bad_request", "Flagger payload: "+err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var p FlaggerPayload
		if json.Unmarshal(body, &p) != nil {
			h(w, r)
			return
		}
		id := p.Metadata["rollout"]
		if id == "" {
			id = p.Name
		}
		forwardTo(os, ref, id, h, w, r)
	}
}

func forwardTo(os OwnerSource, ref refuser, id string, h http.HandlerFunc, w http.ResponseWriter, r *http.Request) {
	base, here := os.Owner(r.Context(), id)
	switch {
	case here:
		h(w, r)
		return
	case base == "" || r.Header.Get(ForwardedHeader) != "":
		// Not known, or forwarded here by an instance that took this one
		// for the owner: the partition is moving. The callers retry.
		w.Header().Set("Retry-After", "2")
		ref.refuse(w, http.StatusServiceUnavailable, "owner_moving",
			fmt.Sprintf("rollout %s is being handed to another canaryd instance (two-stage aggregation); retry in a few seconds", quoteID(id)))
		return
	}
	target, err := url.Parse(base)
	if err != nil {
		ref.refuse(w, http.StatusInternalServerError, "bad_owner", fmt.Sprintf("owner of rollout %s has a bad URL %q: %v", quoteID(id), base, err))
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(ForwardedHeader, "1")
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set(JudgedByHeader, base)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			w.Header().Set("Retry-After", "2")
			ref.refuse(w, http.StatusBadGateway, "owner_unreachable",
				fmt.Sprintf("rollout %s is judged by %s, which did not answer: %v", quoteID(id), base, err))
		},
	}
	rp.ServeHTTP(w, r)
}
