// Package mototest runs moto's server (a real AWS emulator from PyPI,
// installed by `make deps` into .tools/venv) on a free loopback port for
// tests, and records the AWS operations a test's clients call.
package mototest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// Server is a running moto_server.
type Server struct {
	URL string
}

// Env is the environment a client of the server needs (fake credentials).
func (s *Server) Env() map[string]string {
	return map[string]string{"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s.URL}
}

func binary(t testing.TB) string {
	if p := os.Getenv("MOTO_SERVER"); p != "" {
		return p
	}
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if p := filepath.Join(d, ".tools", "venv", "bin", "moto_server"); fileExists(p) {
			return p
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	if p, err := exec.LookPath("moto_server"); err == nil {
		return p
	}
	t.Fatal("moto_server not found: run `make deps` (it installs moto[server] into .tools/venv)")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Start runs moto_server on 127.0.0.1.
func Start(t testing.TB) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(binary(t), "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port)}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(s.URL + "/moto-api/"); err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server did not start: %s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Recorder records the IAM actions (service:Operation) the clients call.
type Recorder struct {
	mu  sync.Mutex
	ops map[string]bool
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{ops: map[string]bool{}} }

var iamPrefix = map[string]string{"EC2": "ec2", "Elastic Load Balancing v2": "elasticloadbalancing", "Route 53": "route53"}

// APIOption adds the recorder to a client's middleware stack.
func (r *Recorder) APIOption(st *middleware.Stack) error {
	return st.Initialize.Add(middleware.InitializeMiddlewareFunc("vmswapRecordOperation", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
		svc := awsmw.GetServiceID(ctx)
		p, ok := iamPrefix[svc]
		if !ok {
			p = strings.ToLower(svc)
		}
		r.mu.Lock()
		r.ops[p+":"+awsmw.GetOperationName(ctx)] = true
		r.mu.Unlock()
		return next.HandleInitialize(ctx, in)
	}), middleware.After)
}

// Actions returns the recorded actions, sorted.
func (r *Recorder) Actions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.ops))
	for k := range r.ops {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
