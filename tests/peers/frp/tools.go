//go:build tools

// Package tools pins the real frp (frps, frpc) used as test peers of the frp route.
// Built by scripts/build-test-peers.sh with -tags frpc,noweb / frps,noweb.
package tools

import (
	_ "github.com/fatedier/frp/cmd/frpc"
	_ "github.com/fatedier/frp/cmd/frps"
)
