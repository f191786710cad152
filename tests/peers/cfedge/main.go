// Command cfedge is a local stand-in for Cloudflare's quick-tunnel API and
// edge, so that tests can run a real cloudflared (protocol http2) and carry
// real traffic through it without the internet.
//
//	cfedge --api-listen 127.0.0.1:8080 \
//	       --edge-listen 127.0.0.1:7844,127.0.0.1:7845 \
//	       --wss-listen 127.0.0.1:443 --cert leaf.pem --key leaf.key \
//	       --hostnames a.trycloudflare.com,b.trycloudflare.com \
//	       [--named-hostname ssh.example.test] [--api-mode ok|ratelimit|empty] \
//	       [--drain-timeout 30s]
//
// cloudflared then runs with
//
//	--quick-service http://API --edge EDGE1 --edge EDGE2 --cacert CA.pem --protocol http2
//
// and must trust the leaf for SNI h2.cftunnel.com (what it sends to the edge
// in http2 mode). Clients open wss://HOSTNAME/ on the wss listener. See
// README.md next to this file.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "cfedge:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flag := flag.NewFlagSet("cfedge", flag.ExitOnError)
	var (
		apiListen  = flag.String("api-listen", "", "ADDR:PORT of the plain-HTTP quick-tunnel API and /_control endpoints")
		edgeListen = flag.String("edge-listen", "", "ADDR:PORT[,ADDR:PORT...] where cloudflared connects (TLS, HTTP/2)")
		wssListen  = flag.String("wss-listen", "", "ADDR:PORT where clients open wss://HOSTNAME/ (TLS, HTTP/1.1)")
		certFile   = flag.String("cert", "", "PEM certificate (chain) for all TLS listeners")
		keyFile    = flag.String("key", "", "PEM private key of --cert")
		hostnames  = flag.String("hostnames", "", "comma-separated pool of quick-tunnel hostnames, handed out in order")
		namedHost  = flag.String("named-hostname", "", "hostname served by tunnels the API did not issue (tunnel run --token)")
		apiMode    = flag.String("api-mode", modeOK, "initial API behaviour: ok, ratelimit or empty")
		drain      = flag.Duration("drain-timeout", 30*time.Second, "how long an edge connection may stay open after cloudflared unregistered it")
	)
	_ = flag.Parse(args) // ExitOnError: exits with the usage on a bad flag
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	for name, v := range map[string]string{"api-listen": *apiListen, "edge-listen": *edgeListen, "wss-listen": *wssListen, "cert": *certFile, "key": *keyFile} {
		if v == "" {
			return fmt.Errorf("--%s is required", name)
		}
	}
	if !validMode(*apiMode) {
		return fmt.Errorf("--api-mode must be ok, ratelimit or empty, not %q", *apiMode)
	}
	var pool []string
	for _, h := range strings.Split(*hostnames, ",") {
		if h = normHost(strings.TrimSpace(h)); h != "" {
			pool = append(pool, h)
		}
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("loading --cert/--key: %w", err)
	}

	lg := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	reg := newRegistry(*apiMode, pool, normHost(*namedHost))

	// Listen on everything first, so a test that waits for the log line
	// "cfedge: ready" can connect to any of the three at once.
	apiLn, err := net.Listen("tcp", *apiListen)
	if err != nil {
		return err
	}
	// Several edge addresses are allowed because cloudflared given a
	// single --edge address never backs off: when that address fails it
	// retries at once, forever (100% CPU with a refused TCP dial). With two
	// or more it rotates and backs off as it does against the real edge.
	var edgeLns []net.Listener
	for _, a := range strings.Split(*edgeListen, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		edgeLns = append(edgeLns, ln)
	}
	wssLn, err := net.Listen("tcp", *wssListen)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	baseCtx := func(net.Listener) context.Context { return ctx }
	errLog := log.New(&prefixWriter{lg: lg, prefix: "http: "}, "", 0)

	edge := &edgeServer{
		reg: reg,
		log: lg,
		// cloudflared sends SNI h2.cftunnel.com and no ALPN (it speaks
		// HTTP/2 without negotiating it).
		tlsConf:      &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		drainTimeout: *drain,
	}
	api := &apiServer{reg: reg, edge: edge, log: lg}
	apiSrv := &http.Server{Handler: api.routes(), BaseContext: baseCtx, ErrorLog: errLog, ReadHeaderTimeout: 10 * time.Second}
	front := newFrontServer(reg, lg)
	wssSrv := &http.Server{
		Handler:     front,
		BaseContext: baseCtx,
		ErrorLog:    errLog,
		// HTTP/1.1 only: WebSocket clients upgrade over HTTP/1.1.
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: 10 * time.Second,
	}

	done := make(chan error, 2+len(edgeLns))
	go func() { done <- serveHTTP(apiSrv.Serve(apiLn)) }()
	go func() { done <- serveHTTP(wssSrv.ServeTLS(wssLn, "", "")) }()
	var edgeAddrs []string
	for _, ln := range edgeLns {
		go func() { edge.serve(ctx, ln); done <- nil }()
		edgeAddrs = append(edgeAddrs, ln.Addr().String())
	}
	lg.Printf("cfedge: ready api=http://%s edge=%s wss=%s pool=%d named=%q mode=%s",
		apiLn.Addr(), strings.Join(edgeAddrs, ","), wssLn.Addr(), len(pool), reg.namedHost, *apiMode)

	var runErr error
	select {
	case <-ctx.Done():
		lg.Printf("cfedge: stopping (signal)")
	case runErr = <-done:
		lg.Printf("cfedge: stopping: listener ended: %v", runErr)
	}
	stop()

	// Tear down: stop accepting, cut cloudflared's connections and the
	// relayed sessions, then give the HTTP servers a moment.
	for _, ln := range edgeLns {
		_ = ln.Close()
	}
	front.closeAll()
	for _, c := range reg.allConns() {
		c.close()
	}
	shCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = apiSrv.Shutdown(shCtx)
	_ = wssSrv.Shutdown(shCtx)
	waitC := make(chan struct{})
	go func() { edge.wg.Wait(); close(waitC) }()
	select {
	case <-waitC:
	case <-shCtx.Done():
	}
	lg.Printf("cfedge: stopped")
	return runErr
}

func serveHTTP(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// prefixWriter routes net/http's own error log (TLS handshake failures and
// the like) into our log with a prefix.
type prefixWriter struct {
	lg     *log.Logger
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.lg.Print(p.prefix + strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
