// Package nginxtest starts a real nginx (Debian's package) on loopback for
// tests: one HTTP server proxying to an upstream whose server lines are in
// an include file, everything (pid file, logs, temp files) in the test's
// own directory.
package nginxtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Nginx is a running nginx.
type Nginx struct {
	// Entry is the HTTP server's host:port.
	Entry string
	// Dir is the directory of the upstream files (the driver's endpoint);
	// the upstream is "app", its file Dir/app.conf.
	Dir string
	// Command is the command line that reaches this nginx (-p, -c, -e).
	Command []string
	// PIDFile is the master's pid file.
	PIDFile string
}

// Start runs nginx with upstream "app" over servers (host:port), two worker
// processes, proxying every request to it with failover to the next server
// on a connection error.
func Start(t testing.TB, servers ...string) *Nginx {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Fatalf("nginx not installed (%v): run `make deps`", err)
		}
		bin = "/usr/sbin/nginx"
	}
	dir := t.TempDir()
	up := filepath.Join(dir, "upstreams")
	if err := os.Mkdir(up, 0o755); err != nil {
		t.Fatal(err)
	}
	var lines strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&lines, "server %s;\n", s)
	}
	if err := os.WriteFile(filepath.Join(up, "app.conf"), []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entry := ln.Addr().String()
	ln.Close()
	userLine := ""
	if os.Geteuid() == 0 {
		// Workers would otherwise run as nobody, who cannot enter the
		// test's directory.
		if u, err := user.Current(); err == nil {
			userLine = "user " + u.Username + ";"
		}
	}
	pid := filepath.Join(dir, "nginx.pid")
	conf := fmt.Sprintf(`%s
pid %s;
error_log %s/error.log info;
worker_processes 2;
worker_shutdown_timeout 30s;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[3]s/tmp/body;
    proxy_temp_path %[3]s/tmp/proxy;
    fastcgi_temp_path %[3]s/tmp/fastcgi;
    uwsgi_temp_path %[3]s/tmp/uwsgi;
    scgi_temp_path %[3]s/tmp/scgi;
    upstream app {
        include %s/app.conf;
        keepalive 16;
    }
    server {
        listen %s;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }
    }
}
`, userLine, pid, dir, up, entry)
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	command := []string{bin, "-p", dir, "-c", cfg, "-e", filepath.Join(dir, "error.log")}
	cmd := exec.Command(command[0], append(command[1:], "-g", "daemon off;")...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) // SIGINT: fast shutdown, workers too
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", entry); err == nil {
			c.Close()
			if _, err := os.Stat(pid); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start: %s %s", logs.String(), b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &Nginx{Entry: entry, Dir: up, Command: command, PIDFile: pid}
}
