package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/net/http2"

	"github.com/cloudflare/cloudflared/connection"
	"github.com/cloudflare/cloudflared/tunnelrpc"
	"github.com/cloudflare/cloudflared/tunnelrpc/pogs"
)

// location is the colo name the stand-in reports; cloudflared logs it as
// location=TST in "Registered tunnel connection".
const location = "TST"

// edgeServer accepts cloudflared's edge connections (protocol http2).
//
// On such a connection cloudflared is the HTTP/2 *server*
// (connection.HTTP2Connection runs http2.Server.ServeConn on the TLS conn)
// and the edge is the client: it opens one long-lived control stream for
// the registration RPC and one stream per proxied eyeball request.
type edgeServer struct {
	reg     *registry
	log     *log.Logger
	tlsConf *tls.Config
	// How long a connection may stay open after UnregisterConnection.
	drainTimeout time.Duration

	wg sync.WaitGroup // one per accepted connection
}

func (e *edgeServer) serve(ctx context.Context, ln net.Listener) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				e.log.Printf("edge: accept: %v", err)
			}
			return
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.handleConn(ctx, raw)
		}()
	}
}

func (e *edgeServer) handleConn(ctx context.Context, raw net.Conn) {
	remote := raw.RemoteAddr().String()
	tc := tls.Server(raw, e.tlsConf)
	hsCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := tc.HandshakeContext(hsCtx)
	cancel()
	if err != nil {
		e.log.Printf("edge: TLS handshake from %s: %v", remote, err)
		_ = raw.Close()
		return
	}
	sni := tc.ConnectionState().ServerName

	t := &http2.Transport{
		// Request and response bodies must pass untouched: no
		// transparent gzip.
		DisableCompression: true,
		// Notice a dead cloudflared (the real edge pings too).
		ReadIdleTimeout: 30 * time.Second,
		PingTimeout:     15 * time.Second,
	}
	// Watch above TLS: cloudflared's Close sends close_notify, which ends
	// tls.Conn.Read without the TCP read failing.
	wc := &watchedConn{Conn: tc, done: make(chan struct{})}
	cc, err := t.NewClientConn(wc)
	if err != nil {
		e.log.Printf("edge: HTTP/2 with %s: %v", remote, err)
		_ = tc.Close()
		return
	}
	c := &edgeConn{connID: uuid.New(), raw: tc, cc: cc, remote: remote, protocol: "http2"}
	e.reg.addConn(c)
	e.log.Printf("edge: connection %s from %s (sni %q)", c.connID, remote, sni)

	// The control stream's life is the connection's life: cloudflared
	// treats a failed control stream as a lost connection and vice versa.
	// The exception is a graceful shutdown: after UnregisterConnection
	// cloudflared ends the control stream but keeps serving the requests in
	// flight, and only closes the connection itself when its --grace-period
	// ends. What users of the real edge see (cloudflared#437, #472) is that
	// cloudflared stops at once when nothing is in flight, and after about
	// 30 s at most otherwise. So: close when the last request in flight
	// ends, or after --drain-timeout (30 s), whichever comes first.
	// (A tcp-over-WebSocket request lasts as long as its session.)
	err = e.serveControlStream(ctx, c)
	if e.reg.isDraining(c) {
		e.log.Printf("edge: %s conn %s control stream ended after unregister; %d requests in flight, closing when they end or after %s",
			e.reg.hostOf(c), c.connID, c.streams.Load(), e.drainTimeout)
		e.waitDrained(ctx, c, wc.done)
	}
	c.close()
	e.reg.removeConn(c)
	host := e.reg.hostOf(c)
	if err != nil && ctx.Err() == nil {
		e.log.Printf("edge: closed %s conn %s: %v", host, c.connID, err)
	} else {
		e.log.Printf("edge: closed %s conn %s", host, c.connID)
	}
}

// waitDrained waits until c has no request in flight, cloudflared closed
// it, or drainTimeout passed.
func (e *edgeServer) waitDrained(ctx context.Context, c *edgeConn, closed <-chan struct{}) {
	deadline := time.NewTimer(e.drainTimeout)
	defer deadline.Stop()
	// Polling keeps the stream counter a plain atomic; 50 ms is far below
	// anything a test measures.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for c.streams.Load() > 0 {
		select {
		case <-closed:
			return
		case <-ctx.Done():
			return
		case <-deadline.C:
			e.log.Printf("edge: %s conn %s still has %d requests in flight %s after unregister: closing it",
				e.reg.hostOf(c), c.connID, c.streams.Load(), e.drainTimeout)
			return
		case <-tick.C:
		}
	}
}

// serveControlStream opens the control stream and serves cloudflared's
// RegistrationServer RPCs on it with cloudflared's own capnp server glue.
func (e *edgeServer) serveControlStream(ctx context.Context, c *edgeConn) error {
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+connection.HTTP2.TLSSettings().ServerName+"/", pr)
	if err != nil {
		return err
	}
	// This header is what connection.determineHTTP2Type looks at.
	req.Header.Set(connection.InternalUpgradeHeader, connection.ControlStreamUpgrade)
	stream := newDuplexStream(pw)
	go func() {
		// RoundTrip returns once cloudflared sends the response headers,
		// which it does on its first write (the capnp bootstrap). Until then
		// Read on the stream waits, while Write already works.
		resp, err := c.cc.RoundTrip(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			_ = resp.Body.Close()
			err = errors.New("control stream answered " + resp.Status)
		}
		stream.setResponse(resp, err)
	}()
	srv := tunnelrpc.NewRegistrationServer(&registrationHandler{edge: e, conn: c})
	return srv.Serve(ctx, stream)
}

// registrationHandler is the edge side of pogs.RegistrationServer for one
// connection.
type registrationHandler struct {
	edge *edgeServer
	conn *edgeConn
}

var _ pogs.RegistrationServer = (*registrationHandler)(nil)

func (h *registrationHandler) RegisterConnection(_ context.Context, auth pogs.TunnelAuth, tunnelID uuid.UUID, connIndex byte, options *pogs.ConnectionOptions) (*pogs.ConnectionDetails, error) {
	c := h.conn
	version := options.Client.Version
	t, replaced, err := h.edge.reg.register(c, tunnelID, auth.AccountTag, auth.TunnelSecret, connIndex, version)
	if err != nil {
		h.edge.log.Printf("edge: refused registration of tunnel %s conn %s connIndex=%d: %v", tunnelID, c.connID, connIndex, err)
		// A plain error is permanent for cloudflared (serverRegistrationErrorFromRPC).
		return nil, err
	}
	for _, o := range replaced {
		h.edge.log.Printf("edge: %s conn %s replaced by %s (same connIndex=%d)", t.hostname, o.connID, c.connID, connIndex)
		o.close()
	}
	h.edge.log.Printf("edge: registered %s conn %s tunnel=%s (%s) connIndex=%d client=%s features=%v replaceExisting=%t previousAttempts=%d remote=%s",
		t.hostname, c.connID, tunnelID, t.kind, connIndex, version, options.Client.Features,
		options.ReplaceExisting, options.NumPreviousAttempts, c.remote)
	return &pogs.ConnectionDetails{
		UUID:     c.connID,
		Location: location,
		// false: cloudflared keeps its local ingress (--url) and pushes it
		// to us with UpdateLocalConfiguration, as with a locally managed tunnel.
		TunnelIsRemotelyManaged: false,
	}, nil
}

func (h *registrationHandler) UnregisterConnection(context.Context) {
	h.edge.reg.unregister(h.conn)
	host := h.edge.reg.hostOf(h.conn)
	h.edge.log.Printf("edge: unregistered %s conn %s (graceful shutdown; no new requests)", host, h.conn.connID)
}

func (h *registrationHandler) UpdateLocalConfiguration(_ context.Context, config []byte) error {
	const max = 300
	s := string(config)
	if len(s) > max {
		s = s[:max] + "..."
	}
	h.edge.log.Printf("edge: local configuration from conn %s: %s", h.conn.connID, s)
	return nil
}

// watchedConn closes done when a Read fails: the HTTP/2 client reads the
// connection all the time, so this is when cloudflared closed it (or it died).
type watchedConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.once.Do(func() { close(w.done) })
	}
	return n, err
}

// duplexStream joins an HTTP/2 request body (edge -> cloudflared) and its
// response body (cloudflared -> edge) into the io.ReadWriteCloser the capnp
// transport wants.
type duplexStream struct {
	pw    *io.PipeWriter
	ready chan struct{}
	resp  *http.Response
	err   error

	mu     sync.Mutex
	closed bool
}

func newDuplexStream(pw *io.PipeWriter) *duplexStream {
	return &duplexStream{pw: pw, ready: make(chan struct{})}
}

func (s *duplexStream) setResponse(resp *http.Response, err error) {
	s.mu.Lock()
	s.resp, s.err = resp, err
	closed := s.closed
	s.mu.Unlock()
	close(s.ready)
	if closed && resp != nil && err == nil {
		_ = resp.Body.Close()
	}
}

func (s *duplexStream) Read(p []byte) (int, error) {
	<-s.ready
	if s.err != nil {
		return 0, s.err
	}
	return s.resp.Body.Read(p)
}

func (s *duplexStream) Write(p []byte) (int, error) { return s.pw.Write(p) }

func (s *duplexStream) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	_ = s.pw.Close()
	select {
	case <-s.ready:
		if s.err == nil {
			_ = s.resp.Body.Close()
		}
	default: // setResponse closes the body when it comes
	}
	return nil
}
