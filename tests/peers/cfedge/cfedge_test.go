package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/cloudflare/cloudflared/cmd/cloudflared/tunnel"
	"github.com/cloudflare/cloudflared/connection"
)

func testAPI(t *testing.T, mode string, pool ...string) (*registry, *httptest.Server) {
	t.Helper()
	reg := newRegistry(mode, pool, "")
	lg := log.New(io.Discard, "", 0)
	srv := httptest.NewServer((&apiServer{reg: reg, edge: &edgeServer{reg: reg, log: lg}, log: lg}).routes())
	t.Cleanup(srv.Close)
	return reg, srv
}

// postTunnel does what cloudflared's RunQuickTunnel does with the answer.
func postTunnel(t *testing.T, base string) (int, []byte, tunnel.QuickTunnelResponse, error) {
	t.Helper()
	resp, err := http.Post(base+"/tunnel", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var data tunnel.QuickTunnelResponse
	return resp.StatusCode, body, data, json.Unmarshal(body, &data)
}

func TestAPIAnswerDecodesAsCloudflared(t *testing.T) {
	_, srv := testAPI(t, modeOK, "a.trycloudflare.com", "b.trycloudflare.com")
	for _, want := range []string{"a.trycloudflare.com", "b.trycloudflare.com"} {
		code, body, data, err := postTunnel(t, srv.URL)
		if code != 200 || err != nil {
			t.Fatalf("status %d, unmarshal error %v, body %s", code, err, body)
		}
		if _, err := uuid.Parse(data.Result.ID); err != nil {
			t.Errorf("id %q: %v", data.Result.ID, err)
		}
		if data.Result.Hostname != want || len(data.Result.Secret) != 32 || data.Result.AccountTag == "" || !data.Success {
			t.Errorf("unexpected result %+v", data)
		}
	}
	// Pool exhausted: cloudflared fails on the empty id.
	_, _, data, err := postTunnel(t, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(data.Result.ID); err == nil {
		t.Error("exhausted pool still gave an id")
	}
}

func TestAPIRateLimitAndEmpty(t *testing.T) {
	reg, srv := testAPI(t, modeRateLimit, "a.trycloudflare.com")
	code, body, _, err := postTunnel(t, srv.URL)
	if code != http.StatusTooManyRequests || string(body) != "error code: 1015" {
		t.Errorf("ratelimit: %d %q", code, body)
	}
	if err == nil || !strings.Contains(err.Error(), "invalid character 'e'") {
		t.Errorf("ratelimit: cloudflared would see %v", err)
	}

	resp, err := http.Post(srv.URL+"/_control/api-mode?mode=empty", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	code, _, data, err := postTunnel(t, srv.URL)
	if code != 200 || err != nil {
		t.Fatalf("empty: %d %v", code, err)
	}
	if _, err := uuid.Parse(data.Result.ID); err == nil || err.Error() != "invalid UUID length: 0" {
		t.Errorf("empty: cloudflared would see %v", err)
	}
	if st := reg.state(); st.APIRequests != 2 || st.APIMode != modeEmpty || st.PoolLeft != 1 {
		t.Errorf("state %+v", st)
	}
}

func TestTokenIsAcceptedByCloudflared(t *testing.T) {
	_, srv := testAPI(t, modeOK)
	resp, err := http.Get(srv.URL + "/_control/token")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Token    string `json:"token"`
		TunnelID string `json:"tunnel_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	tok, err := tunnel.ParseToken(out.Token)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TunnelID.String() != out.TunnelID || len(tok.TunnelSecret) != 32 {
		t.Errorf("token %+v", tok)
	}
}

func TestNormHost(t *testing.T) {
	for in, want := range map[string]string{"A.TryCloudflare.com:8443": "a.trycloudflare.com", "x.example.": "x.example", "h": "h"} {
		if got := normHost(in); got != want {
			t.Errorf("normHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// ---- End to end with a real cloudflared (skipped unless CFEDGE_CLOUDFLARED is set) ----

// testPKI writes a CA and a leaf for the names cloudflared and clients use.
func testPKI(t *testing.T, dir string, names ...string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cfedge test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cfedge"}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caTmpl, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(leafKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("leaf.pem", "CERTIFICATE", leafDER), write("leaf.key", "EC PRIVATE KEY", keyDER)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// bannerOrigin is an SSH-like origin: a banner, then echo.
func bannerOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "SSH-2.0-test\r\n")
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// waitHTTP waits up to 30 s for url to answer 200.
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not answering 200", url)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRealCloudflared(t *testing.T) {
	bin := os.Getenv("CFEDGE_CLOUDFLARED")
	if bin == "" {
		t.Skip("set CFEDGE_CLOUDFLARED to a cloudflared 2026.3.0 binary to run")
	}
	dir := t.TempDir()
	const host = "e2e-test.trycloudflare.com"
	caFile, certFile, keyFile := testPKI(t, dir, connection.HTTP2.TLSSettings().ServerName, "*.trycloudflare.com")
	apiAddr, edgeAddr, wssAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfedge := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "--",
		"--api-listen", apiAddr, "--edge-listen", edgeAddr, "--wss-listen", wssAddr,
		"--cert", certFile, "--key", keyFile, "--hostnames", host)
	cfedge.Env = append(os.Environ(), "CFEDGE_HELPER=1")
	cfedge.Stderr = os.Stderr
	if err := cfedge.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cfedge.Process.Signal(os.Interrupt); _ = cfedge.Wait() }()
	waitHTTP(t, "http://"+apiAddr+"/_control/state")

	emptyCfg := filepath.Join(dir, "empty.yml")
	_ = os.WriteFile(emptyCfg, nil, 0o600)
	cfd := exec.CommandContext(ctx, bin, "tunnel", "--no-autoupdate", "--url", "ssh://"+bannerOrigin(t),
		"--quick-service", "http://"+apiAddr, "--edge", edgeAddr, "--cacert", caFile, "--protocol", "http2",
		"--metrics", metricsAddr, "--config", emptyCfg)
	cfdLog, _ := os.Create(filepath.Join(dir, "cloudflared.log"))
	cfd.Stderr, cfd.Stdout = cfdLog, cfdLog
	if err := cfd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cfd.Process.Signal(os.Interrupt)
		_ = cfd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(cfdLog.Name())
			t.Logf("cloudflared log:\n%s", b)
		}
	}()

	waitHTTP(t, "http://"+metricsAddr+"/ready")

	pem, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	dialer := websocket.Dialer{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host},
		NetDial:         func(string, string) (net.Conn, error) { return net.Dial("tcp", wssAddr) },
	}
	ws, resp, err := dialer.Dial("wss://"+host+"/", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	_, banner, err := ws.ReadMessage()
	if err != nil || string(banner) != "SSH-2.0-test\r\n" {
		t.Fatalf("banner %q, %v", banner, err)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	_, echo, err := ws.ReadMessage()
	if err != nil || string(echo) != "ping\n" {
		t.Fatalf("echo %q, %v", echo, err)
	}

	// An unknown hostname gets Cloudflare's 1033.
	dialer.TLSClientConfig.ServerName = "nobody.trycloudflare.com"
	_, resp, err = dialer.Dial("wss://nobody.trycloudflare.com/", nil)
	if err == nil || resp == nil || resp.StatusCode != 530 {
		t.Fatalf("unknown host: %v %v", err, resp)
	}
	body, _ := io.ReadAll(bufio.NewReader(resp.Body))
	if string(body) != "error code: 1033" {
		t.Errorf("1033 body %q", body)
	}
	fmt.Fprintln(os.Stderr, "real cloudflared round trip OK")
}

// TestHelperProcess runs cfedge's main when started by TestRealCloudflared.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("CFEDGE_HELPER") != "1" {
		t.Skip("helper process")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	if err := run(args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}
