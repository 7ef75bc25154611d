package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/productstream/productstream/config"
)

// SecurityError is a connection to the brokers that kafka.tls and
// kafka.sasl cannot make as configured: credentials the broker refuses, a
// certificate that is not trusted, a mechanism the broker does not enable,
// TLS on one side only. Retrying does not help, so the roles stop at start
// with it. Connection.Check and Connection.Diagnose return it.
type SecurityError struct {
	// Field is the configuration key to look at, such as
	// "kafka.sasl.password".
	Field string
	// Msg says what is wrong, naming the mechanism and the user, or the CA
	// file; never a password or a token.
	Msg string
	// Err is what franz-go or the broker said.
	Err error
}

func (e *SecurityError) Error() string { return "kafka: " + e.Msg + ": " + e.Err.Error() }
func (e *SecurityError) Unwrap() error { return e.Err }

// checkTimeout bounds Check's connection attempt, and probeTimeout each
// probe Diagnose makes of a broker.
const (
	checkTimeout = 15 * time.Second
	probeTimeout = 5 * time.Second
)

// Check connects once to a seed broker, as every client built on c's
// options does, and returns the *SecurityError that a failure stands for;
// nil when it connects, or fails for another reason (a broker that is not
// up yet), which the caller may retry.
func (c Connection) Check(ctx context.Context) error {
	cl, err := kgo.NewClient(c.Options()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	return c.Diagnose(ctx, cl.Ping(pctx))
}

// Diagnose returns the *SecurityError that err, from a client built on c's
// options, is the symptom of, or nil when err is no security problem. When
// err alone does not tell (franz-go sees a closed connection, or a broker
// refusing a mechanism without its list), it asks a seed broker itself:
// whether it answers TLS, which mechanisms it enables, whether it takes
// the credentials.
func (c Connection) Diagnose(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return nil
	}
	if se, ok := errors.AsType[*SecurityError](err); ok {
		return se
	}
	s := c.Security.cfg.SASL
	if te, ok := errors.AsType[*TokenError](err); ok {
		return &SecurityError{Field: te.Field, Msg: "SASL authentication failed (" + s.Describe() + ")", Err: err}
	}
	if errors.Is(err, kerr.SaslAuthenticationFailed) {
		return authFailed(s, err)
	}
	if se := c.certificateError(err); se != nil {
		return se
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil // nothing listens (yet)
	}
	if se := c.probe(ctx, err); se != nil {
		return se
	}
	if errors.Is(err, kerr.UnsupportedSaslMechanism) {
		return &SecurityError{Field: "kafka.sasl.mechanism", Msg: fmt.Sprintf("SASL mechanism %s (kafka.sasl.mechanism) is not enabled on the broker", s.Mechanism), Err: err}
	}
	return nil
}

// authFailed is the error of credentials the broker refused.
func authFailed(s config.SASL, err error) *SecurityError {
	if s.Mechanism == config.SASLOAuthBearer {
		field := "kafka.sasl.token_file"
		if s.TokenFile == "" {
			field = "kafka.sasl.token_command"
		}
		return &SecurityError{Field: field, Msg: "SASL authentication failed (" + s.Describe() + ")", Err: err}
	}
	return &SecurityError{Field: "kafka.sasl.password",
		Msg: "SASL authentication failed (" + s.Describe() + "); check kafka.sasl.username and kafka.sasl.password", Err: err}
}

// certificateError is the *SecurityError of a broker certificate that
// kafka.tls does not trust, or nil.
func (c Connection) certificateError(err error) *SecurityError {
	t := c.Security.cfg.TLS
	if ua, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		roots := "the system roots (set kafka.tls.ca_file to the CA that signed it)"
		if t.CAFile != "" {
			roots = "the CA file " + t.CAFile + " (kafka.tls.ca_file)"
		}
		subject := "the broker's certificate"
		if ua.Cert != nil {
			subject = fmt.Sprintf("the broker's certificate (issued by %q)", ua.Cert.Issuer.String())
		}
		return &SecurityError{Field: "kafka.tls.ca_file", Msg: "TLS: " + subject + " is not signed by a CA in " + roots, Err: err}
	}
	if he, ok := errors.AsType[x509.HostnameError](err); ok {
		return &SecurityError{Field: "kafka.tls.server_name",
			Msg: fmt.Sprintf("TLS: the broker's certificate is not valid for %q (set kafka.tls.server_name to a name it holds)", he.Host), Err: err}
	}
	if _, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		return &SecurityError{Field: "kafka.tls.ca_file", Msg: "TLS: the broker's certificate is not valid", Err: err}
	}
	return nil
}

// probe connects to each seed broker in turn as c's clients do, and
// returns the *SecurityError of the first that refuses c's security, or
// nil when one accepts it or none can tell. err is what franz-go saw.
func (c Connection) probe(ctx context.Context, err error) *SecurityError {
	for _, addr := range c.Brokers {
		se := c.probeOne(ctx, addr, err)
		if se != nil && errors.Is(se, errClosedOnCredentials) {
			// A broker going down at that moment closes connections
			// too: only a second refusal is taken for one.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			se = c.probeOne(ctx, addr, err)
		}
		if se != nil {
			return se
		}
	}
	return nil
}

// errClosedOnCredentials is a broker that closed the connection on the
// credentials of a SASL authentication, as kfake and brokers before Kafka
// 1.0 do where later ones answer SASL_AUTHENTICATION_FAILED.
var errClosedOnCredentials = errors.New("the broker closed the connection on the credentials")

func (c Connection) probeOne(ctx context.Context, addr string, seen error) *SecurityError {
	conn, err := dial(ctx, addr, c.Security.tls)
	if err != nil {
		if se := c.certificateError(err); se != nil {
			return se
		}
		if c.Security.tls != nil && !errors.Is(err, syscall.ECONNREFUSED) && answersPlaintext(ctx, addr) {
			return &SecurityError{Field: "kafka.tls.enabled", Msg: "the broker at " + addr + " answers without TLS on this port, but kafka.tls.enabled is true", Err: err}
		}
		return nil
	}
	defer conn.Close()
	pc := &probeConn{Conn: conn}
	// ApiVersions first, as every client does: it tells a Kafka listener.
	if _, err := pc.roundTrip(&kmsg.ApiVersionsRequest{Version: 0}); err != nil {
		if c.Security.tls == nil && answersTLS(ctx, addr) {
			return &SecurityError{Field: "kafka.tls.enabled", Msg: "the broker at " + addr + " answers TLS on this port, but kafka.tls.enabled is false", Err: err}
		}
		return nil
	}
	mech := c.Security.sasl
	if mech == nil {
		// franz-go's guess when a broker closes the connection on the
		// first request: TLS or SASL missing. A SASL listener refuses
		// a mechanism nobody enables, with the list of those it does.
		if _, ok := errors.AsType[*kgo.ErrFirstReadEOF](seen); !ok {
			return nil
		}
		hs := kmsg.NewPtrSASLHandshakeRequest()
		hs.Version, hs.Mechanism = 1, "NONE"
		resp, err := pc.roundTrip(hs)
		if err != nil {
			return nil
		}
		if hr := resp.(*kmsg.SASLHandshakeResponse); hr.ErrorCode == kerr.UnsupportedSaslMechanism.Code {
			return &SecurityError{Field: "kafka.sasl.mechanism", Msg: fmt.Sprintf("the broker's listener at %s requires SASL (it enables: %s), but kafka.sasl.mechanism is not set",
				addr, strings.Join(hr.SupportedMechanisms, ", ")), Err: seen}
		}
		return nil
	}
	s := c.Security.cfg.SASL
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, mech.Name()
	resp, err := pc.roundTrip(hs)
	if err != nil {
		return nil
	}
	switch herr := kerr.ErrorForCode(resp.(*kmsg.SASLHandshakeResponse).ErrorCode); {
	case errors.Is(herr, kerr.UnsupportedSaslMechanism):
		return &SecurityError{Field: "kafka.sasl.mechanism", Msg: fmt.Sprintf("SASL mechanism %s (kafka.sasl.mechanism) is not enabled on the broker at %s; it enables: %s",
			s.Mechanism, addr, strings.Join(resp.(*kmsg.SASLHandshakeResponse).SupportedMechanisms, ", ")), Err: herr}
	case errors.Is(herr, kerr.IllegalSaslState):
		return &SecurityError{Field: "kafka.sasl.mechanism", Msg: "the broker's listener at " + addr + " does not take SASL, but kafka.sasl.mechanism is " + s.Mechanism, Err: herr}
	case herr != nil:
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	session, msg, err := mech.Authenticate(actx, addr)
	if err != nil {
		if _, ok := errors.AsType[*TokenError](err); ok {
			return &SecurityError{Field: "kafka.sasl.token_file", Msg: "SASL authentication failed (" + s.Describe() + ")", Err: err}
		}
		return nil
	}
	// As franz-go does: write until the session is done and nothing is
	// left to write.
	for done := false; !done || len(msg) > 0; {
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.Version, req.SASLAuthBytes = 1, msg
		resp, err := pc.roundTrip(req)
		if err != nil {
			// A broker that closes the connection on the
			// credentials refused them.
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				return authFailed(s, fmt.Errorf("%w: %w", errClosedOnCredentials, err))
			}
			return nil
		}
		ar := resp.(*kmsg.SASLAuthenticateResponse)
		if code := ar.ErrorCode; code != 0 {
			aerr := kerr.ErrorForCode(code)
			if ar.ErrorMessage != nil {
				aerr = fmt.Errorf("%w: %s", aerr, *ar.ErrorMessage)
			}
			if errors.Is(aerr, kerr.SaslAuthenticationFailed) {
				return authFailed(s, aerr)
			}
			return nil
		}
		msg = nil
		if !done {
			if done, msg, err = session.Challenge(ar.SASLAuthBytes); err != nil {
				return authFailed(s, err)
			}
		}
	}
	return nil
}

// dial opens a connection to addr, over TLS when tlsConfig is set, within
// probeTimeout.
func dial(ctx context.Context, addr string, tlsConfig *tls.Config) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	d := &net.Dialer{}
	if tlsConfig == nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	cfg := tlsConfig.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	return (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", addr)
}

// answersTLS reports whether addr completes a TLS handshake: a probe that
// sends nothing else and trusts any certificate, to tell a TLS port from a
// broker that is down.
func answersTLS(ctx context.Context, addr string) bool {
	conn, err := dial(ctx, addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a probe: nothing is sent over it
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// answersPlaintext reports whether addr answers a Kafka ApiVersions
// request sent without TLS.
func answersPlaintext(ctx context.Context, addr string) bool {
	conn, err := dial(ctx, addr, nil)
	if err != nil {
		return false
	}
	defer conn.Close()
	_, err = (&probeConn{Conn: conn}).roundTrip(&kmsg.ApiVersionsRequest{Version: 0})
	return err == nil
}

// probeConn is a connection that Diagnose's probes send single Kafka
// requests on.
type probeConn struct {
	net.Conn
	corr int32
}

// errNotKafka is an answer that is no Kafka response frame.
var errNotKafka = errors.New("the answer is no Kafka response")

// roundTrip writes req and reads its response.
func (p *probeConn) roundTrip(req kmsg.Request) (kmsg.Response, error) {
	_ = p.SetDeadline(time.Now().Add(probeTimeout))
	p.corr++
	if _, err := p.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("productstream")).AppendRequest(nil, req, p.corr)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(p, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 4 || n > 1<<20 {
		return nil, errNotKafka
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(p, body); err != nil {
		return nil, err
	}
	if int32(binary.BigEndian.Uint32(body)) != p.corr {
		return nil, errNotKafka
	}
	body = body[4:]
	// Flexible responses have a tag section in their header, except
	// ApiVersions'; the probes' requests are not flexible.
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		return nil, err
	}
	return resp, nil
}
