//go:build tools

package tools

import _ "github.com/cloudflare/cloudflared/cmd/cloudflared"
