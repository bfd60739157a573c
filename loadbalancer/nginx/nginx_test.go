package nginx_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/loadbalancer/lbtest"
	"github.com/vmswap/vmswap/loadbalancer/nginx"
	"github.com/vmswap/vmswap/loadbalancer/nginx/nginxtest"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/sshdtest"
)

// backends starts one HTTP server on each address (127.0.0.x), all on one
// port, answering with their address; slow requests (/slow) take 1.5s.
func backends(t *testing.T, ips ...string) int {
	t.Helper()
	port := 0
	for _, ip := range ips {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				time.Sleep(1500 * time.Millisecond)
			}
			w.Header().Set("X-Served-By", ip)
			io.WriteString(w, ip)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	return port
}

func servedBy(t *testing.T, entry, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + entry + path)
	if err != nil {
		t.Fatalf("through nginx: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("through nginx: %s: %s", resp.Status, b)
	}
	return string(b)
}

func newProvider(t *testing.T, n *nginxtest.Nginx, host nginx.Host) *nginx.Provider {
	t.Helper()
	p, err := nginx.New(nginx.Config{Dir: n.Dir, Command: n.Command, Host: host, Address: n.Entry, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConformance: the load-balancer suite against a real nginx, on this
// machine and on a "proxy host" reached over a real sshd; after it nginx
// routes every request to the new member.
func TestConformance(t *testing.T) {
	for _, where := range []string{"local", "ssh"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			port := backends(t, "127.0.0.2", "127.0.0.3")
			n := nginxtest.Start(t, fmt.Sprintf("127.0.0.2:%d", port))
			var host nginx.Host = nginx.Local{}
			if where == "ssh" {
				sport, key := sshdtest.Start(t)
				host = nginx.NewSSH("127.0.0.1", verify.SSHConfig{User: sshdtest.User(), KeyFile: key, Port: sport,
					KnownHosts: filepath.Join(t.TempDir(), "known_hosts"), HostKeyPolicy: verify.HostKeyAcceptNew})
			}
			p := newProvider(t, n, host)
			defer p.Close()
			lbtest.Run(t, p, "app", loadbalancer.Member{Address: "127.0.0.2"}, loadbalancer.Member{Address: "127.0.0.3"})
			for range 6 {
				if got := servedBy(t, n.Entry, "/"); got != "127.0.0.3" {
					t.Fatalf("after the swap nginx sent a request to %s", got)
				}
			}
			b, _ := os.ReadFile(filepath.Join(n.Dir, "app.conf"))
			if strings.Contains(string(b), "127.0.0.2") || !strings.Contains(string(b), fmt.Sprintf("server 127.0.0.3:%d;", port)) {
				t.Fatalf("app.conf after the swap:\n%s", b)
			}
		})
	}
}

// TestRemoveWaitsForRequestsInFlight: a slow request nginx is proxying to
// the old member when it is removed completes, and RemoveMember returns
// only after the worker that held it has exited.
func TestRemoveWaitsForRequestsInFlight(t *testing.T) {
	t.Parallel()
	port := backends(t, "127.0.0.4", "127.0.0.5")
	n := nginxtest.Start(t, fmt.Sprintf("127.0.0.4:%d", port))
	p := newProvider(t, n, nil)
	ctx := context.Background()
	if err := p.AddMember(ctx, "app", loadbalancer.Member{Address: "127.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	// Requests alternate; start slow ones until one is on the old member.
	var slowDone atomic.Bool
	result := make(chan string, 2)
	for range 2 {
		go func() {
			resp, err := http.Get("http://" + n.Entry + "/slow")
			if err != nil {
				result <- "error: " + err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) == "127.0.0.4" {
				slowDone.Store(true)
			}
			result <- resp.Status + " " + string(b)
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := p.RemoveMember(ctx, "app", loadbalancer.Member{Address: "127.0.0.4"}); err != nil {
		t.Fatal(err)
	}
	done := slowDone.Load()
	got := []string{<-result, <-result}
	for _, r := range got {
		if !strings.HasPrefix(r, "200 ") {
			t.Fatalf("a request in flight failed: %v", got)
		}
	}
	if !strings.Contains(strings.Join(got, " "), "127.0.0.4") {
		t.Fatalf("no slow request was on the old member: %v", got)
	}
	if !done {
		t.Fatal("RemoveMember returned before the old member's request in flight completed")
	}
	for range 4 {
		if got := servedBy(t, n.Entry, "/"); got != "127.0.0.5" {
			t.Fatalf("after RemoveMember nginx sent a request to %s", got)
		}
	}
}

// TestShapes: two lines for one server both go; a line marked down is not
// a member and is brought back by AddMember; an IPv6 member is written in
// brackets and passes nginx -t; a change nginx -t refuses is undone; a
// file with more than server lines is refused, naming the line; a pool
// name cannot leave the directory.
func TestShapes(t *testing.T) {
	t.Parallel()
	port := backends(t, "127.0.0.6", "127.0.0.7")
	n := nginxtest.Start(t, fmt.Sprintf("127.0.0.6:%d", port), fmt.Sprintf("127.0.0.6:%d weight=2", port), fmt.Sprintf("127.0.0.7:%d down", port))
	p := newProvider(t, n, nil)
	ctx := context.Background()
	pool, err := p.Pool(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if len(pool.Members) != 1 || len(pool.Members[0].Lines) != 2 || pool.Address != n.Entry {
		t.Fatalf("pool: %+v", pool)
	}
	if err := p.AddMember(ctx, "app", loadbalancer.Member{Address: "127.0.0.7"}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddMember(ctx, "app", loadbalancer.Member{Address: "::1"}); err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveMember(ctx, "app", loadbalancer.Member{Address: "127.0.0.6"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(n.Dir, "app.conf"))
	want := fmt.Sprintf("server 127.0.0.7:%d;\nserver [::1]:%d;\n", port, port)
	if string(b) != want {
		t.Fatalf("app.conf:\n%s\nwant:\n%s", b, want)
	}
	if err := p.AddMember(ctx, "app", loadbalancer.Member{Address: "bad host"}); err == nil || !strings.Contains(err.Error(), "nginx -t failed with the new") {
		t.Fatalf("a change nginx -t refuses: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(n.Dir, "app.conf")); string(after) != want {
		t.Fatalf("the refused change was not undone:\n%s", after)
	}
	if _, err := p.Pool(ctx, "../nginx"); err == nil {
		t.Fatal("a pool name outside the directory was accepted")
	}
	os.WriteFile(filepath.Join(n.Dir, "other.conf"), []byte("server 127.0.0.6:80;\nkeepalive 16;\n"), 0o644)
	if _, err := p.Pool(ctx, "other"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a foreign line: %v", err)
	}
	if _, err := p.Pool(ctx, "missing"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("a missing pool: %v", err)
	}
}

// TestReplacementKeepsSettings: the new member gets one line for each of
// the source's, with its port and parameters (not the port of the file's
// first line, a backup on another port here), and the source put back
// gets them again; a symlinked file is written through its link; a file
// of 300 KB does not hide the pid directive.
func TestReplacementKeepsSettings(t *testing.T) {
	t.Parallel()
	port := backends(t, "127.0.0.8", "127.0.0.9")
	n := nginxtest.Start(t, "127.0.0.10:1 backup", fmt.Sprintf("127.0.0.8:%d weight=3 max_fails=2 fail_timeout=5s", port))
	// The upstream file lives elsewhere; the include path is a symlink.
	real := filepath.Join(t.TempDir(), "app.conf")
	b, _ := os.ReadFile(filepath.Join(n.Dir, "app.conf"))
	b = append(b, []byte(strings.Repeat("# a comment to make the file large\n", 9000))...)
	if err := os.WriteFile(real, b, 0o640); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(n.Dir, "app.conf")
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, n, nil)
	ctx := context.Background()
	if err := p.Check(ctx, "app"); err != nil {
		t.Fatalf("Check: %v", err)
	}
	old, neu := loadbalancer.Member{Address: "127.0.0.8"}, loadbalancer.Member{Address: "127.0.0.9"}
	neu.Like = &old
	if err := p.AddMember(ctx, "app", neu); err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveMember(ctx, "app", old); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(real)
	want := fmt.Sprintf("server 127.0.0.9:%d weight=3 max_fails=2 fail_timeout=5s;", port)
	if !strings.Contains(string(got), want) || strings.Contains(string(got), "127.0.0.8") {
		t.Fatalf("the new member's line: want %q in\n%s", want, string(got)[:200])
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced: %v %v", fi.Mode(), err)
	}
	if fi, _ := os.Stat(real); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", fi.Mode().Perm())
	}
	if got := servedBy(t, n.Entry, "/"); got != "127.0.0.9" {
		t.Fatalf("served by %s", got)
	}
	// Switching back: the source returns with its own settings.
	back := old
	back.Like = &loadbalancer.Member{Address: "127.0.0.9"}
	if err := p.AddMember(ctx, "app", back); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(real)
	if want := fmt.Sprintf("server 127.0.0.8:%d weight=3 max_fails=2 fail_timeout=5s;", port); !strings.Contains(string(got), want) {
		t.Fatalf("the source put back: want %q", want)
	}
}

// TestCheckBeforeAnyChange: Check refuses, before anything is created, an
// nginx whose configuration fails nginx -t, and one that is not running.
func TestCheckBeforeAnyChange(t *testing.T) {
	t.Parallel()
	port := backends(t, "127.0.0.11")
	n := nginxtest.Start(t, fmt.Sprintf("127.0.0.11:%d", port))
	p := newProvider(t, n, nil)
	ctx := context.Background()
	os.WriteFile(filepath.Join(n.Dir, "app.conf"), []byte(fmt.Sprintf("server 127.0.0.11:%d bogus_parameter;\n", port)), 0o644)
	if err := p.Check(ctx, "app"); err == nil || !strings.Contains(err.Error(), "nginx -t fails before any change") {
		t.Fatalf("Check with a broken configuration: %v", err)
	}
	os.WriteFile(filepath.Join(n.Dir, "app.conf"), []byte(fmt.Sprintf("server 127.0.0.11:%d;\n", port)), 0o644)
	os.Remove(n.PIDFile)
	if err := p.Check(ctx, "app"); err == nil || !strings.Contains(err.Error(), "nginx is not running: no pid file") {
		t.Fatalf("Check without nginx: %v", err)
	}
}
