package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// security is how canaryd authenticates to Kafka: the flags --tls* and
// --sasl-*, and CANARYD_SASL_PASSWORD.
type security struct {
	TLS        bool   // --tls: TLS with the system roots, unless CAFile
	CAFile     string // --tls-ca-file: PEM bundle of the CAs that sign the brokers' certificates
	CertFile   string // --tls-cert-file: client certificate (PEM), for mTLS
	KeyFile    string // --tls-key-file: its private key (PEM)
	ServerName string // --tls-server-name: name to verify instead of each broker's host

	Mechanism    string // --sasl-mechanism: plain, scram-sha-256, scram-sha-512 or oauthbearer
	User         string // --sasl-user
	Password     string // CANARYD_SASL_PASSWORD
	PasswordFile string // --sasl-password-file, read at each authentication
	TokenFile    string // --sasl-oauth-token-file, read at each authentication
}

// securityFlags defines the flags of s on fs (CANARYD_SASL_PASSWORD is read
// by the caller).
func securityFlags(fs *flag.FlagSet, s *security) {
	fs.Var((*boolValue)(&s.TLS), "tls", "connect to Kafka with TLS (implied by any --tls-* flag)")
	fs.StringVar(&s.CAFile, "tls-ca-file", "", "PEM bundle of the CAs that sign the brokers' certificates (default: the system roots)")
	fs.StringVar(&s.CertFile, "tls-cert-file", "", "client certificate (PEM) for mTLS; needs --tls-key-file")
	fs.StringVar(&s.KeyFile, "tls-key-file", "", "private key (PEM) of --tls-cert-file")
	fs.StringVar(&s.ServerName, "tls-server-name", "", "name the brokers' certificates must carry (default: the host dialled)")
	fs.StringVar(&s.Mechanism, "sasl-mechanism", "", "SASL mechanism: plain, scram-sha-256, scram-sha-512 or oauthbearer")
	fs.StringVar(&s.User, "sasl-user", "", "SASL user (plain, scram-*)")
	fs.StringVar(&s.PasswordFile, "sasl-password-file", "", "file with the SASL password, read at each authentication (or set CANARYD_SASL_PASSWORD)")
	fs.StringVar(&s.TokenFile, "sasl-oauth-token-file", "", "file with the OAUTHBEARER token (a JWT), read at each authentication")
}

// securityOpts returns the franz-go options of s. Any TLS file or name
// implies TLS. Files are read once here, so a bad one is a start error
// naming its flag; the SASL password and token files are read again at each
// authentication, so a rotated secret (a Kubernetes projected token) is
// picked up without a restart.
func securityOpts(s security) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if s.TLS || s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != "" {
		cfg, err := s.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	mech, err := s.saslMechanism()
	if err != nil {
		return nil, err
	}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	return opts, nil
}

func (s security) tlsConfig() (*tls.Config, error) {
	// franz-go sets ServerName to each broker's host when it is empty.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.ServerName}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca-file %s: no PEM certificate in it", s.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case s.CertFile != "" && s.KeyFile == "":
		return nil, errors.New("--tls-cert-file without --tls-key-file: a client certificate needs its key")
	case s.CertFile == "" && s.KeyFile != "":
		return nil, errors.New("--tls-key-file without --tls-cert-file: a client key needs its certificate")
	case s.CertFile != "":
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert-file %s / --tls-key-file %s: %w", s.CertFile, s.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (s security) saslMechanism() (sasl.Mechanism, error) {
	mech := strings.ToLower(s.Mechanism)
	if mech == "" {
		if s.User != "" || s.Password != "" || s.PasswordFile != "" || s.TokenFile != "" {
			return nil, errors.New("--sasl-user, --sasl-password-file, --sasl-oauth-token-file or CANARYD_SASL_PASSWORD given without --sasl-mechanism")
		}
		return nil, nil
	}
	if mech == "oauthbearer" {
		if s.TokenFile == "" {
			return nil, errors.New("--sasl-mechanism oauthbearer needs --sasl-oauth-token-file")
		}
		if s.User != "" || s.Password != "" || s.PasswordFile != "" {
			return nil, errors.New("--sasl-mechanism oauthbearer takes a token (--sasl-oauth-token-file), not --sasl-user or a password")
		}
		if _, err := readSecret("--sasl-oauth-token-file", s.TokenFile); err != nil {
			return nil, err
		}
		file := s.TokenFile
		return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
			tok, err := readSecret("--sasl-oauth-token-file", file)
			return oauth.Auth{Token: tok}, err
		}), nil
	}
	if s.TokenFile != "" {
		return nil, fmt.Errorf("--sasl-oauth-token-file is for --sasl-mechanism oauthbearer, not %s", s.Mechanism)
	}
	if s.User == "" {
		return nil, fmt.Errorf("--sasl-mechanism %s needs --sasl-user", s.Mechanism)
	}
	if s.Password != "" && s.PasswordFile != "" {
		return nil, errors.New("both CANARYD_SASL_PASSWORD and --sasl-password-file are set: give one")
	}
	if s.Password == "" && s.PasswordFile == "" {
		return nil, fmt.Errorf("--sasl-mechanism %s needs a password: CANARYD_SASL_PASSWORD or --sasl-password-file", s.Mechanism)
	}
	if s.PasswordFile != "" {
		if _, err := readSecret("--sasl-password-file", s.PasswordFile); err != nil {
			return nil, err
		}
	}
	user, pass, file := s.User, s.Password, s.PasswordFile
	password := func() (string, error) {
		if file == "" {
			return pass, nil
		}
		return readSecret("--sasl-password-file", file)
	}
	switch mech {
	case "plain":
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			p, err := password()
			return plain.Auth{User: user, Pass: p}, err
		}), nil
	case "scram-sha-256", "scram-sha-512":
		auth := func(context.Context) (scram.Auth, error) {
			p, err := password()
			return scram.Auth{User: user, Pass: p}, err
		}
		if mech == "scram-sha-256" {
			return scram.Sha256(auth), nil
		}
		return scram.Sha512(auth), nil
	}
	return nil, fmt.Errorf("--sasl-mechanism %q: want plain, scram-sha-256, scram-sha-512 or oauthbearer", s.Mechanism)
}

// readSecret reads a password or token file, without its surrounding
// white space (a trailing newline), and refuses an empty one.
func readSecret(flagName, file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s: the file is empty", flagName, file)
	}
	return s, nil
}
