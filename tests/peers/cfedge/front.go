package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/cloudflared/connection"
)

// How long a WebSocket session may linger after one direction ended before
// the other is cut. cloudflared itself ends both directions as soon as one
// ends (stream.Pipe), so in practice this only bounds misbehaving clients.
const lingerAfterHalfClose = 10 * time.Second

// frontServer is the eyeball side of the edge: clients open
// wss://HOSTNAME/ here (HTTP/1.1 over TLS) and each request is forwarded on
// a new HTTP/2 stream of a connection cloudflared registered for HOSTNAME.
type frontServer struct {
	reg *registry
	log *log.Logger

	mu       sync.Mutex
	sessions map[net.Conn]struct{} // hijacked connections, closed on shutdown
	shutdown bool
}

func newFrontServer(reg *registry, lg *log.Logger) *frontServer {
	return &frontServer{reg: reg, log: lg, sessions: make(map[net.Conn]struct{})}
}

// hopByHop lists headers that belong to one HTTP/1.1 hop. They are not
// forwarded, and Go's HTTP/2 client refuses some of them (Connection,
// Upgrade) anyway. cloudflared re-adds the WebSocket ones when it dials an
// HTTP origin (proxy.proxyHTTPRequest).
var hopByHop = map[string]bool{
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
}

func isWebSocketUpgrade(h http.Header) bool {
	return headerHasToken(h, "Connection", "upgrade") && strings.EqualFold(h.Get("Upgrade"), "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func newRay() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b) + "-" + location
}

func (f *frontServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := normHost(r.Host)
	ray := newRay()
	w.Header().Set("Server", "cloudflare")
	w.Header().Set("Cf-Ray", ray)

	ec, t := f.reg.pick(host)
	if ec == nil {
		// Cloudflare's answer when a tunnel hostname has no healthy
		// connection (error 1033), in its plain-text form for non-browsers.
		f.log.Printf("wss: %s %s -> 530 (no live tunnel connection)", host, r.URL.Path)
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		w.WriteHeader(530)
		_, _ = io.WriteString(w, "error code: 1033")
		return
	}
	ws := isWebSocketUpgrade(r.Header)

	// Headers as the edge forwards them: the client's end-to-end headers as
	// ordinary HTTP/2 fields, plus the edge's own.
	hdr := make(http.Header, len(r.Header)+8)
	for k, vv := range r.Header {
		if hopByHop[k] || strings.HasPrefix(strings.ToLower(k), "cf-cloudflared-") {
			continue
		}
		hdr[k] = append([]string(nil), vv...)
	}
	for _, k := range r.Header.Values("Connection") {
		for _, t := range strings.Split(k, ",") {
			if t = strings.TrimSpace(t); t != "" && !strings.EqualFold(t, "upgrade") {
				hdr.Del(t)
			}
		}
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		hdr["User-Agent"] = []string{""} // stops Go's client adding its own
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	hdr.Set("Cf-Ray", ray)
	hdr.Set("Cf-Connecting-Ip", ip)
	hdr.Set("X-Forwarded-For", ip)
	hdr.Set("X-Forwarded-Proto", "https")
	hdr.Set("Cf-Visitor", `{"scheme":"https"}`)
	hdr.Set("Cdn-Loop", "cloudflare")
	hdr.Set("Cf-Warp-Tag-Id", t.id.String())
	if ws {
		// What makes cloudflared treat the stream as a WebSocket
		// (connection.determineHTTP2Type -> TypeWebsocket).
		hdr.Set(connection.InternalUpgradeHeader, connection.WebsocketUpgrade)
	}

	out := &http.Request{
		Method: r.Method,
		URL:    &url.URL{Scheme: "https", Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
		Host:   host,
		Header: hdr,
	}
	out = out.WithContext(r.Context())
	var upW *io.PipeWriter
	if ws {
		// The request body is the client->origin byte stream, fed after
		// the 101; ContentLength 0 with a body means "unknown length".
		var upR *io.PipeReader
		upR, upW = io.Pipe()
		out.Body = upR
		defer upW.Close()
	} else if r.Body != nil && r.Body != http.NoBody {
		out.Body = r.Body
		out.ContentLength = r.ContentLength
	}

	ec.streams.Add(1)
	defer ec.streams.Add(-1)
	resp, err := ec.cc.RoundTrip(out)
	if err != nil {
		f.log.Printf("wss: %s %s -> 502 (stream to cloudflared conn %s failed: %v)", host, r.URL.Path, ec.connID, err)
		http.Error(w, "error code: 502", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()

	userHdrs, err := connection.DeserializeHeaders(resp.Header.Get(connection.CanonicalResponseUserHeaders))
	if err != nil {
		f.log.Printf("wss: %s: bad %s from cloudflared: %v", host, connection.CanonicalResponseUserHeaders, err)
	}
	meta := resp.Header.Get(connection.CanonicalResponseMetaHeader)

	// cloudflared sends a 101 as 200 (HTTP/2 has no 101), with the
	// WebSocket headers (Upgrade, Connection, Sec-Websocket-Accept) among
	// the serialized user headers.
	if ws && resp.StatusCode == http.StatusOK && hasUpgrade(userHdrs) {
		f.relayWebSocket(w, host, ray, ec, userHdrs, resp, upW)
		return
	}

	for _, h := range userHdrs {
		if !hopByHop[http.CanonicalHeaderKey(h.Name)] && !strings.EqualFold(h.Name, "Content-Length") {
			w.Header().Add(h.Name, h.Value)
		}
	}
	if cl := resp.Header.Get("Content-Length"); cl != "" && !ws {
		w.Header().Set("Content-Length", cl)
	}
	src := "origin"
	if strings.Contains(meta, `"cloudflared"`) {
		src = "cloudflared"
	}
	f.log.Printf("wss: %s %s -> %d (from %s via conn %s)", host, r.URL.Path, resp.StatusCode, src, ec.connID)
	if src == "cloudflared" {
		// cloudflared's own errors (origin unreachable: 502) come without
		// a body; answer like Cloudflare does to non-browsers.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if len(body) == 0 {
			body = []byte(fmt.Sprintf("error code: %d", resp.StatusCode))
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
		return
	}
	w.WriteHeader(resp.StatusCode)
	buf := make([]byte, 32*1024)
	fl, _ := w.(http.Flusher)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if rerr != nil {
			return
		}
	}
}

func hasUpgrade(hs []connection.HTTPHeader) bool {
	for _, h := range hs {
		if strings.EqualFold(h.Name, "Upgrade") && strings.EqualFold(h.Value, "websocket") {
			return true
		}
	}
	return false
}

type copyResult struct {
	n   int64
	err error
}

// relayWebSocket answers 101 to the client and then copies raw bytes both
// ways. Like the real edge it does not look at WebSocket frames: cloudflared
// terminates the WebSocket.
func (f *frontServer) relayWebSocket(w http.ResponseWriter, host, ray string, ec *edgeConn, userHdrs []connection.HTTPHeader, resp *http.Response, upW *io.PipeWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		f.log.Printf("wss: %s: hijack: %v", host, err)
		return
	}
	if !f.track(conn) {
		_ = conn.Close()
		return
	}
	defer f.untrack(conn)
	defer conn.Close()

	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	for _, h := range userHdrs {
		switch strings.ToLower(h.Name) {
		case "content-length", "transfer-encoding":
			continue
		}
		fmt.Fprintf(&b, "%s: %s\r\n", h.Name, h.Value)
	}
	fmt.Fprintf(&b, "Server: cloudflare\r\nCf-Ray: %s\r\n\r\n", ray)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		f.log.Printf("wss: %s: writing 101: %v", host, err)
		return
	}
	f.log.Printf("wss: %s -> 101 (via conn %s)", host, ec.connID)
	start := time.Now()

	// Bytes the HTTP server already read past the request head belong to
	// the stream (a client may pipeline its first frame).
	pre, _ := brw.Reader.Peek(brw.Reader.Buffered())
	pre = append([]byte(nil), pre...)

	upC := make(chan copyResult, 1)
	go func() { // client -> cloudflared
		n, err := io.CopyBuffer(upW, io.MultiReader(bytes.NewReader(pre), conn), make([]byte, 64*1024))
		if err != nil {
			_ = upW.CloseWithError(err)
		} else {
			_ = upW.Close() // END_STREAM: cloudflared reads EOF
		}
		upC <- copyResult{n, err}
	}()
	downC := make(chan copyResult, 1)
	go func() { // cloudflared -> client
		n, err := io.CopyBuffer(conn, resp.Body, make([]byte, 64*1024))
		closeWrite(conn) // close_notify + FIN: the client reads EOF
		downC <- copyResult{n, err}
	}()

	var up, down copyResult
	select {
	case up = <-upC:
		if up.err != nil {
			_ = resp.Body.Close() // client broke off: reset the stream
		}
		select {
		case down = <-downC:
		case <-time.After(lingerAfterHalfClose):
			_ = resp.Body.Close()
			down = <-downC
		}
	case down = <-downC:
		select {
		case up = <-upC:
		case <-time.After(lingerAfterHalfClose):
			_ = conn.Close()
			up = <-upC
		}
	}
	f.log.Printf("wss: %s session closed after %s: client->origin %d bytes (%s), origin->client %d bytes (%s)",
		host, time.Since(start).Round(time.Millisecond), up.n, errText(up.err), down.n, errText(down.err))
}

func errText(err error) string {
	if err == nil || errors.Is(err, net.ErrClosed) {
		return "ended"
	}
	return err.Error()
}

// closeWrite half-closes a TLS connection: close_notify, then TCP FIN.
func closeWrite(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.CloseWrite()
		c = tc.NetConn()
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

func (f *frontServer) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shutdown {
		return false
	}
	f.sessions[c] = struct{}{}
	return true
}

func (f *frontServer) untrack(c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sessions, c)
}

// closeAll ends every relayed WebSocket (http.Server.Shutdown does not see
// hijacked connections).
func (f *frontServer) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdown = true
	for c := range f.sessions {
		_ = c.Close()
	}
}
