package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/net/http2"
)

// API behaviours selectable with --api-mode and POST /_control/api-mode.
const (
	modeOK        = "ok"
	modeRateLimit = "ratelimit"
	modeEmpty     = "empty"
)

func validMode(m string) bool {
	return m == modeOK || m == modeRateLimit || m == modeEmpty
}

// tunnelInfo is what the edge knows about one tunnel ID: the hostname it
// serves and, for quick tunnels, the credentials the API handed out.
type tunnelInfo struct {
	id         uuid.UUID
	hostname   string
	kind       string // "quick" (issued by our API) or "named" (unknown ID -> --named-hostname)
	accountTag string
	secret     []byte // nil for named tunnels: we cannot know their secret
}

// edgeConn is one TLS connection from cloudflared, driven by us as the
// HTTP/2 client (on a tunnel connection the edge opens the streams).
type edgeConn struct {
	connID    uuid.UUID // the "connection=" UUID cloudflared logs
	raw       net.Conn
	cc        *http2.ClientConn
	remote    string
	protocol  string
	closeOnce sync.Once

	// Filled by RegisterConnection; guarded by registry.mu.
	tunnel    *tunnelInfo
	connIndex uint8
	version   string
	draining  bool // UnregisterConnection received: no new streams
	closed    bool

	streams atomic.Int64 // live proxied requests on this connection
}

func (c *edgeConn) close() {
	c.closeOnce.Do(func() {
		_ = c.raw.Close()
		_ = c.cc.Close()
	})
}

// registry holds all shared state of the stand-in. One mutex is plenty: the
// traffic path only touches it once per proxied request.
type registry struct {
	mu          sync.Mutex
	mode        string
	pool        []string
	next        int
	apiRequests int
	namedHost   string
	tunnels     map[uuid.UUID]*tunnelInfo
	issued      []*tunnelInfo // quick tunnels in issue order, for /_control/state
	conns       map[*edgeConn]struct{}
	rr          map[string]int // round-robin cursor per hostname
	wssRequests int
}

func newRegistry(mode string, pool []string, namedHost string) *registry {
	return &registry{
		mode:      mode,
		pool:      pool,
		namedHost: namedHost,
		tunnels:   make(map[uuid.UUID]*tunnelInfo),
		conns:     make(map[*edgeConn]struct{}),
		rr:        make(map[string]int),
	}
}

func (r *registry) setMode(m string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mode = m
}

var errPoolExhausted = errors.New("hostname pool exhausted")

// issueQuickTunnel serves one POST /tunnel in mode "ok": it takes the next
// hostname of the pool and makes fresh credentials for it.
func (r *registry) issueQuickTunnel() (*tunnelInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next >= len(r.pool) {
		return nil, errPoolExhausted
	}
	host := r.pool[r.next]
	r.next++
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	acct := make([]byte, 16)
	if _, err := rand.Read(acct); err != nil {
		return nil, err
	}
	t := &tunnelInfo{
		id:         uuid.New(),
		hostname:   host,
		kind:       "quick",
		accountTag: fmt.Sprintf("%x", acct), // account tags are 32 hex digits
		secret:     secret,
	}
	r.tunnels[t.id] = t
	r.issued = append(r.issued, t)
	return t, nil
}

// countAPIRequest records one POST /tunnel and returns the mode to answer in.
func (r *registry) countAPIRequest() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.apiRequests++
	return r.mode
}

func (r *registry) addConn(c *edgeConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns[c] = struct{}{}
}

func (r *registry) removeConn(c *edgeConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.closed = true
	delete(r.conns, c)
}

// register binds an edge connection to a tunnel, checking credentials the
// way the edge would. It returns the replaced connections (same tunnel and
// connIndex: cloudflared reconnecting after we lost it) for the caller to close.
func (r *registry) register(c *edgeConn, tunnelID uuid.UUID, acct string, secret []byte, connIndex uint8, version string) (*tunnelInfo, []*edgeConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tunnels[tunnelID]
	switch {
	case ok && t.kind == "quick":
		if t.accountTag != acct || !bytes.Equal(t.secret, secret) {
			return nil, nil, errors.New("Unauthorized: tunnel credentials do not match")
		}
	case ok: // a named tunnel seen before
	case r.namedHost != "":
		t = &tunnelInfo{id: tunnelID, hostname: r.namedHost, kind: "named", accountTag: acct}
		r.tunnels[tunnelID] = t
	default:
		return nil, nil, errors.New("Unauthorized: Tunnel not found")
	}
	var replaced []*edgeConn
	for o := range r.conns {
		if o != c && o.tunnel == t && o.connIndex == connIndex && !o.closed {
			replaced = append(replaced, o)
			o.draining = true
		}
	}
	c.tunnel = t
	c.connIndex = connIndex
	c.version = version
	return t, replaced, nil
}

// unregister handles UnregisterConnection: cloudflared is shutting down
// gracefully, so the edge stops sending new requests on this connection.
func (r *registry) unregister(c *edgeConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.draining = true
}

func (r *registry) isDraining(c *edgeConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return c.draining
}

// hostOf names the hostname a connection serves, for logs.
func (r *registry) hostOf(c *edgeConn) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.tunnel == nil {
		return "(unregistered)"
	}
	return c.tunnel.hostname
}

// pick returns a live, registered connection serving host (round robin when
// there are several, e.g. a named tunnel with 4 HA connections), or nil.
func (r *registry) pick(host string) (*edgeConn, *tunnelInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wssRequests++
	var live []*edgeConn
	for c := range r.conns {
		if c.tunnel != nil && c.tunnel.hostname == host && !c.draining && !c.closed {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		return nil, nil
	}
	// Map iteration order is random: sort so round robin is meaningful.
	sort.Slice(live, func(i, j int) bool { return live[i].connIndex < live[j].connIndex })
	i := r.rr[host] % len(live)
	r.rr[host] = i + 1
	return live[i], live[i].tunnel
}

// connsFor returns every connection (registered or draining) serving host.
func (r *registry) connsFor(host string) []*edgeConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*edgeConn
	for c := range r.conns {
		if c.tunnel != nil && c.tunnel.hostname == host {
			out = append(out, c)
		}
	}
	return out
}

func (r *registry) allConns() []*edgeConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*edgeConn, 0, len(r.conns))
	for c := range r.conns {
		out = append(out, c)
	}
	return out
}

// State is the JSON answer of GET /_control/state.
type State struct {
	APIMode     string                  `json:"api_mode"`
	APIRequests int                     `json:"api_requests"`
	PoolLeft    int                     `json:"pool_left"`
	Issued      []IssuedTunnel          `json:"issued"`
	Tunnels     map[string]*TunnelState `json:"tunnels"`
	WSSRequests int                     `json:"wss_requests"`
	Time        string                  `json:"time"`
}

type IssuedTunnel struct {
	Hostname string `json:"hostname"`
	ID       string `json:"id"`
}

// TunnelState describes one hostname: connections counts registered,
// non-draining edge connections (what routing uses).
type TunnelState struct {
	TunnelID    string         `json:"tunnel_id"`
	Kind        string         `json:"kind"`
	Connections int            `json:"connections"`
	Draining    int            `json:"draining"`
	Protocol    string         `json:"protocol"`
	Streams     int64          `json:"streams"`
	Conns       []ConnectionSt `json:"conns"`
}

type ConnectionSt struct {
	ID        string `json:"id"`
	ConnIndex uint8  `json:"conn_index"`
	Remote    string `json:"remote"`
	Version   string `json:"version"`
	Draining  bool   `json:"draining"`
	Streams   int64  `json:"streams"`
}

func (r *registry) state() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := State{
		APIMode:     r.mode,
		APIRequests: r.apiRequests,
		PoolLeft:    len(r.pool) - r.next,
		Issued:      []IssuedTunnel{},
		Tunnels:     map[string]*TunnelState{},
		WSSRequests: r.wssRequests,
		Time:        time.Now().UTC().Format(time.RFC3339Nano),
	}
	for _, t := range r.issued {
		s.Issued = append(s.Issued, IssuedTunnel{Hostname: t.hostname, ID: t.id.String()})
		s.Tunnels[t.hostname] = &TunnelState{TunnelID: t.id.String(), Kind: t.kind, Protocol: "http2", Conns: []ConnectionSt{}}
	}
	for c := range r.conns {
		if c.tunnel == nil {
			continue
		}
		ts := s.Tunnels[c.tunnel.hostname]
		if ts == nil { // a named tunnel (quick ones were added above)
			ts = &TunnelState{TunnelID: c.tunnel.id.String(), Kind: c.tunnel.kind, Protocol: c.protocol, Conns: []ConnectionSt{}}
			s.Tunnels[c.tunnel.hostname] = ts
		}
		if c.draining {
			ts.Draining++
		} else {
			ts.Connections++
		}
		n := c.streams.Load()
		ts.Streams += n
		ts.Conns = append(ts.Conns, ConnectionSt{
			ID: c.connID.String(), ConnIndex: c.connIndex, Remote: c.remote,
			Version: c.version, Draining: c.draining, Streams: n,
		})
	}
	for _, ts := range s.Tunnels {
		sort.Slice(ts.Conns, func(i, j int) bool { return ts.Conns[i].ConnIndex < ts.Conns[j].ConnIndex })
	}
	return s
}

// normHost lowercases a Host header value and strips any port: the real
// edge is reached on 443, so cloudflared never sees a port there.
func normHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}
