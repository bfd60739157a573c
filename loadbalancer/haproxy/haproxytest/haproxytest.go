// Package haproxytest starts a real haproxy (Debian's package) on loopback
// for tests: one HTTP frontend, one backend with health checks, and the
// runtime API on a unix socket.
package haproxytest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// HAProxy is a running haproxy.
type HAProxy struct {
	// Entry is the frontend's host:port.
	Entry string
	// Socket is the runtime API, as a driver endpoint (unix://...).
	Socket string
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start runs haproxy with backend "be" over servers (host:port), checking
// GET /health every 100ms (rise 2, fall 3).
func Start(t testing.TB, servers ...string) *HAProxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr != nil {
			t.Fatalf("haproxy not installed (%v): run `make deps`", err)
		}
		bin = "/usr/sbin/haproxy"
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	port := freePort(t)
	var b strings.Builder
	fmt.Fprintf(&b, `global
    stats socket %s mode 600 level admin
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch
frontend fe
    bind 127.0.0.1:%d
    default_backend be
backend be
    balance roundrobin
    option httpchk GET /health
    default-server inter 100ms rise 2 fall 3
`, sock, port)
	for i, s := range servers {
		fmt.Fprintf(&b, "    server web%d %s check\n", i+1, s)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not start: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &HAProxy{Entry: fmt.Sprintf("127.0.0.1:%d", port), Socket: "unix://" + sock}
}
