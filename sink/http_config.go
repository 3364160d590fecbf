package sink

import (
	"errors"
	"log/slog"
)

// ServerOpt configures the HTTP API (NewServer, NewHandler).
type ServerOpt func(*serverCfg)

// serverCfg holds the HTTP API's settings; defaultServerCfg is the one place
// their defaults are written, validate only checks.
type serverCfg struct {
	tokenFile       string
	protectReads    bool
	tlsCert, tlsKey string
	log             *slog.Logger
}

func defaultServerCfg() serverCfg {
	return serverCfg{log: slog.New(slog.DiscardHandler)}
}

func (c *serverCfg) validate() error {
	var errs []error
	if c.protectReads && c.tokenFile == "" {
		errs = append(errs, errors.New("protecting reads needs a token file (--http-token-file)"))
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		errs = append(errs, errors.New("TLS needs both a certificate and its key (--http-tls-cert and --http-tls-key)"))
	}
	return errors.Join(errs...)
}

// TokenFile names the file that holds the bearer tokens the mutating
// endpoints accept (see Auth for its format). The file is read again when
// it changes, so a rotated Kubernetes Secret takes effect without a
// restart. Default "": the mutating endpoints are off (403 naming the flag
// that turns them on), never open.
func TokenFile(path string) ServerOpt { return func(c *serverCfg) { c.tokenFile = path } }

// ProtectReads makes every GET endpoint other than /healthz and /readyz
// (which probes must reach) require a token too. Needs TokenFile. Default
// false: reads are open.
func ProtectReads(on bool) ServerOpt { return func(c *serverCfg) { c.protectReads = on } }

// TLSFiles serves HTTPS with the PEM certificate (chain) and key in these
// files, read again when either changes (a failed read keeps the last good
// pair). Default "", "": plain HTTP.
func TLSFiles(certFile, keyFile string) ServerOpt {
	return func(c *serverCfg) { c.tlsCert, c.tlsKey = certFile, keyFile }
}

// HTTPLogger logs token and certificate reloads and failed actions. Default
// (or nil): no logging.
func HTTPLogger(l *slog.Logger) ServerOpt {
	return func(c *serverCfg) {
		if l != nil {
			c.log = l
		}
	}
}
