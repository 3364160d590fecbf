package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"

	"github.com/inferensys/canaryd/sink"
)

const actUsage = `canaryd pause|resume|approve|abort|retry ROLLOUT [flags]
canaryd start ROLLOUT --canary VERSION [--deployment-id D] [--commit C] [flags]

Operator actions on a rollout, through a running canaryd's HTTP API (POST
/v1/rollouts/{id}/{action}; the server needs --http-token-file, and this
command the token: --token-file or CANARYD_TOKEN_FILE):

  pause    no step passes until resume (evidence keeps coming; rollbacks still fire)
  resume   end a pause
  approve  open the current step's approval gate (steps: approval: required)
  abort    roll back now
  retry    start a rolled-back or held release again from its first step
  start    roll out another canary version of the rollout now (the running
           release ends as superseded); its commands carry the deployment id and commit

Every action is recorded with who (--by, default the token's holder), when
and why (--reason) in the rollout's audit trail. Exit 0 when it applied, 1
when it was refused (the server says why), 3 for usage errors.

Flags:
`

// actCmd is `canaryd <action> ROLLOUT`.
func actCmd(ctx context.Context, action string, args []string, lookup func(string) (string, bool), stdout io.Writer) error {
	fs := flag.NewFlagSet(action, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cf := addClientFlags(fs, lookup)
	var req sink.ActionRequest
	fs.StringVar(&req.Reason, "reason", "", "why, for the audit trail (and an abort's command)")
	fs.StringVar(&req.By, "by", "", "who (default: the token's holder)")
	fs.StringVar(&req.Canary, "canary", "", "start: the version to roll out; other actions: act only while this canary is judged")
	fs.StringVar(&req.DeploymentID, "deployment-id", "", "start: the deployment id the commands carry")
	fs.StringVar(&req.Commit, "commit", "", "start: the commit the commands carry")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, actUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return err
		}
		return fmt.Errorf("%s: %w (see canaryd %s --help)", action, err, action)
	}
	if len(pos) != 1 {
		return fmt.Errorf("%s: one rollout, got %q (see canaryd %s --help)", action, pos, action)
	}
	c, err := cf.client()
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	reply, err := c.post(ctx, "/v1/rollouts/"+url.PathEscape(pos[0])+"/"+action, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", action, pos[0], err)
	}
	var r struct {
		By     string        `json:"by"`
		Status rolloutStatus `json:"status"`
	}
	if err := json.Unmarshal(reply, &r); err != nil {
		return fmt.Errorf("%s %s: reply: %w", action, pos[0], err)
	}
	st := r.Status
	fmt.Fprintf(stdout, "%s %s by %s: %s, %s, %s at %d%%\n", action, pos[0], r.By, st.release(), st.phase(), st.stepText(), st.Weight)
	return nil
}
