package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/cloudflare/cloudflared/connection"
)

// quickTunnelAnswer is the body of POST /tunnel. It uses the lowercase keys of
// Cloudflare's v4 API envelope; cloudflared decodes it into its own
// tunnel.QuickTunnelResponse (encoding/json matches keys case-insensitively,
// see TestAPIAnswerDecodesAsCloudflared).
type quickTunnelAnswer struct {
	Success  bool             `json:"success"`
	Result   quickTunnel      `json:"result"`
	Errors   []apiError       `json:"errors"`
	Messages []map[string]any `json:"messages"`
}

type quickTunnel struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Hostname   string `json:"hostname"`
	AccountTag string `json:"account_tag"`
	Secret     []byte `json:"secret"` // base64, as Go encodes []byte
}

type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// rateLimitBody is what Cloudflare answers a rate-limited non-browser client
// (HTTP 429): plain text, not JSON, which is why cloudflared fails to
// unmarshal it.
const rateLimitBody = "error code: 1015"

type apiServer struct {
	reg  *registry
	edge *edgeServer
	log  *log.Logger
}

func (a *apiServer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /tunnel", a.handleTunnel)
	mux.HandleFunc("POST /_control/api-mode", a.handleMode)
	mux.HandleFunc("POST /_control/drop", a.handleDrop)
	mux.HandleFunc("GET /_control/state", a.handleState)
	mux.HandleFunc("GET /_control/token", a.handleToken)
	return mux
}

func (a *apiServer) handleTunnel(w http.ResponseWriter, r *http.Request) {
	mode := a.reg.countAPIRequest()
	ua := r.Header.Get("User-Agent")
	switch mode {
	case modeRateLimit:
		a.log.Printf("api: POST /tunnel from %s (%s) -> 429 error code: 1015 (mode ratelimit)", r.RemoteAddr, ua)
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(rateLimitBody))
		return
	case modeEmpty:
		a.log.Printf("api: POST /tunnel from %s (%s) -> 200 with empty result (mode empty)", r.RemoteAddr, ua)
		writeJSON(w, http.StatusOK, quickTunnelAnswer{Success: true, Errors: []apiError{}, Messages: []map[string]any{}})
		return
	}
	t, err := a.reg.issueQuickTunnel()
	if err != nil {
		// Not something Cloudflare does; the result's empty id makes
		// cloudflared fail with "invalid UUID length: 0", and the log says why.
		a.log.Printf("api: POST /tunnel from %s -> 500: %v", r.RemoteAddr, err)
		writeJSON(w, http.StatusInternalServerError, quickTunnelAnswer{
			Errors:   []apiError{{Code: 1000, Message: "cfedge: " + err.Error()}},
			Messages: []map[string]any{},
		})
		return
	}
	a.log.Printf("api: issued %s %s (to %s, %s)", t.hostname, t.id, r.RemoteAddr, ua)
	writeJSON(w, http.StatusOK, quickTunnelAnswer{
		Success: true,
		Result: quickTunnel{
			ID:         t.id.String(),
			Name:       "qt-" + strings.SplitN(t.hostname, ".", 2)[0],
			Hostname:   t.hostname,
			AccountTag: t.accountTag,
			Secret:     t.secret,
		},
		Errors:   []apiError{},
		Messages: []map[string]any{},
	})
}

func (a *apiServer) handleMode(w http.ResponseWriter, r *http.Request) {
	m := r.URL.Query().Get("mode")
	if !validMode(m) {
		http.Error(w, "mode must be ok, ratelimit or empty", http.StatusBadRequest)
		return
	}
	a.reg.setMode(m)
	a.log.Printf("api: mode %s", m)
	writeJSON(w, http.StatusOK, map[string]string{"api_mode": m})
}

// handleDrop closes every edge connection serving a hostname, as an edge
// restart does: cloudflared reconnects and re-registers the same tunnel.
func (a *apiServer) handleDrop(w http.ResponseWriter, r *http.Request) {
	h := normHost(r.URL.Query().Get("hostname"))
	if h == "" {
		http.Error(w, "hostname required", http.StatusBadRequest)
		return
	}
	conns := a.reg.connsFor(h)
	for _, c := range conns {
		a.log.Printf("edge: dropping %s conn %s (control request)", h, c.connID)
		c.close()
	}
	writeJSON(w, http.StatusOK, map[string]any{"hostname": h, "dropped": len(conns)})
}

func (a *apiServer) handleState(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.reg.state())
}

// handleToken makes a `cloudflared tunnel run --token` value for a fresh
// tunnel ID. Any ID the API did not issue is served as --named-hostname, so
// tests may also build their own tokens; this just saves them the encoding.
func (a *apiServer) handleToken(w http.ResponseWriter, _ *http.Request) {
	secret := make([]byte, 32)
	acct := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = rand.Read(acct)
	tok := connection.TunnelToken{
		AccountTag:   fmt.Sprintf("%x", acct),
		TunnelSecret: secret,
		TunnelID:     uuid.New(),
	}
	raw, err := json.Marshal(tok)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"token":     base64.StdEncoding.EncodeToString(raw),
		"tunnel_id": tok.TunnelID.String(),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
