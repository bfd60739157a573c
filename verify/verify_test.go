package verify

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmswap/vmswap/verify/sshdtest"
	"golang.org/x/crypto/ssh"
)

// TestSSHFactsFromRealSSHD reads this machine's facts through a real sshd
// and compares them with the same commands run locally.
func TestSSHFactsFromRealSSHD(t *testing.T) {
	port, key := sshdtest.Start(t)
	known := filepath.Join(t.TempDir(), "known_hosts")
	ctx := context.Background()
	cfg := SSHConfig{User: sshdtest.User(), KeyFile: key, Port: port, KnownHosts: known, HostKeyPolicy: HostKeyAcceptNew}
	c, err := DialSSH(ctx, "127.0.0.1", cfg)
	if err != nil {
		t.Fatal(err)
	}
	facts, err := c.Facts(ctx)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	local := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	mem, _ := parseMeminfo(local("cat", "/proc/meminfo"))
	disk, _ := parseDF(local("df", "-P", "-B1", "/"))
	cpus, _ := strconv.ParseFloat(strings.TrimSpace(local("nproc")), 64)
	if facts.MemoryBytes != mem || facts.DiskBytes != disk || facts.CPUs != cpus || facts.MemoryBytes < 1<<20 {
		t.Fatalf("facts over ssh %+v; local memory %v disk %v cpus %v", facts, mem, disk, cpus)
	}
	t.Logf("via sshd: memory %s, disk %s, cpus %v", HumanBytes(facts.MemoryBytes), HumanBytes(facts.DiskBytes), facts.CPUs)

	// accept-new recorded the key: strict now accepts the host.
	if b, _ := os.ReadFile(known); !strings.Contains(string(b), "[127.0.0.1]:"+strconv.Itoa(port)) {
		t.Fatalf("known_hosts after accept-new: %q", b)
	}
	cfg.HostKeyPolicy = HostKeyStrict
	c, err = DialSSH(ctx, "127.0.0.1", cfg)
	if err != nil {
		t.Fatalf("strict after accept-new: %v", err)
	}
	c.Close()

	// A changed key is refused under either policy, saying which line to remove.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	os2, _ := ssh.NewSignerFromKey(other)
	line := fmt.Sprintf("[127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(os2.PublicKey()))
	if err := os.WriteFile(known, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.HostKeyPolicy = HostKeyAcceptNew
	if _, err := DialSSH(ctx, "127.0.0.1", cfg); err == nil || !strings.Contains(err.Error(), "host key of 127.0.0.1:"+strconv.Itoa(port)+" changed") {
		t.Fatalf("changed host key: %v", err)
	}
	// Strict and an unknown host: refused with what to do.
	cfg.HostKeyPolicy, cfg.KnownHosts = HostKeyStrict, filepath.Join(t.TempDir(), "empty")
	os.WriteFile(cfg.KnownHosts, nil, 0o600)
	if _, err := DialSSH(ctx, "127.0.0.1", cfg); err == nil || !strings.Contains(err.Error(), "accept-new") {
		t.Fatalf("unknown host under strict: %v", err)
	}
	// A key the server does not accept.
	_, wrong, _ := ed25519.GenerateKey(rand.Reader)
	blk, _ := ssh.MarshalPrivateKey(wrong, "")
	wrongFile := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrongFile, pem.EncodeToMemory(blk), 0o600)
	if _, err := DialSSH(ctx, "127.0.0.1", SSHConfig{User: sshdtest.User(), KeyFile: wrongFile, Port: port, KnownHosts: known + ".2", HostKeyPolicy: HostKeyAcceptNew}); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestKeyFileErrorsNameNoKeyMaterial(t *testing.T) {
	f := filepath.Join(t.TempDir(), "garbage")
	secret := "SECRET-KEY-MATERIAL-4242"
	os.WriteFile(f, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n"+secret+"\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600)
	err := CheckKeyFile(f)
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), f) {
		t.Fatalf("CheckKeyFile = %v", err)
	}
}

// tlsServer is a real TLS server that records the Host header and SNI name
// of each request it receives.
type seen struct {
	mu        sync.Mutex
	host, sni []string
	served    int
}

func startTLS(t *testing.T, status int, body string) (*httptest.Server, *seen) {
	s := &seen{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.host = append(s.host, r.Host)
		s.sni = append(s.sni, r.TLS.ServerName)
		s.served++
		s.mu.Unlock()
		w.Header().Set("X-App", "shop")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the wrong-name case is expected to fail its handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, s
}

func caFile(t *testing.T, srv *httptest.Server) string {
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestHTTPCheckSendsHostAndSNI sends a check for https://example.com/ to a
// server on loopback: the server must see Host example.com and SNI
// example.com, and the certificate (made for example.com) must verify.
func TestHTTPCheckSendsHostAndSNI(t *testing.T) {
	srv, s := startTLS(t, 200, "ok: shop")
	addr := srv.Listener.Addr().String()
	client, err := Pinned(addr, caFile(t, srv), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc  string
		check HTTPCheck
		want  []string
	}{
		{"passes", HTTPCheck{URL: "https://example.com/health", Status: 200, BodyContains: "ok", Headers: map[string]string{"X-App": "shop"}}, nil},
		{"every failure reported", HTTPCheck{URL: "https://example.com/health", Status: 204, BodyContains: "healthy", Headers: map[string]string{"X-App": "blog"}},
			[]string{
				"GET https://example.com/health: status 200, want 204",
				`GET https://example.com/health: body does not contain "healthy" (starts "ok: shop")`,
				`GET https://example.com/health: header X-App is "shop", want "blog"`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			errs := tt.check.Check(context.Background(), client)
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.host {
		if s.host[i] != "example.com" || s.sni[i] != "example.com" {
			t.Fatalf("request %d arrived with Host %q and SNI %q", i, s.host[i], s.sni[i])
		}
	}
	if s.served != 2 {
		t.Fatalf("served %d", s.served)
	}

	// A certificate for another name fails verification: SNI is not a bypass.
	client2, _ := Pinned(addr, caFile(t, srv), 5*time.Second)
	errs := HTTPCheck{URL: "https://other.test/"}.Check(context.Background(), client2)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "certificate") {
		t.Fatalf("wrong name: %v", errs)
	}
}

func TestCompare(t *testing.T) {
	oldSrv, _ := startTLS(t, 200, "<h1>shop</h1>")
	newSrv, _ := startTLS(t, 200, "<h1>It works!</h1>")
	sameSrv, _ := startTLS(t, 200, "<h1>shop</h1>")
	pin := func(s *httptest.Server) *http.Client {
		c, err := Pinned(s.Listener.Addr().String(), "", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		return c
	}
	if errs := Compare(context.Background(), pin(oldSrv), pin(sameSrv), "https://example.com/", []string{"/", "/about"}); len(errs) != 0 {
		t.Fatalf("same content: %v", errs)
	}
	errs := Compare(context.Background(), pin(oldSrv), pin(newSrv), "https://example.com/", []string{"/"})
	if len(errs) != 1 || errs[0].Error() != `compare /: bodies differ (old 13 bytes "<h1>shop</h1>", new 18 bytes "<h1>It works!</h1>")` {
		t.Fatalf("different content: %v", errs)
	}
}

func TestThreshold(t *testing.T) {
	tests := []struct {
		desc string
		in   string
		v    float64
		ok   bool
		err  string
	}{
		{"binary unit", ">= 7.5GiB", 7.5 * (1 << 30), true, ""},
		{"just under", ">= 7.5GiB", 7.5*(1<<30) - 1, false, ""},
		{"decimal unit", "> 150GB", 150e9 + 1, true, ""},
		{"bare count", ">= 4", 4, true, ""},
		{"default operator", "2", 3, true, ""},
		{"bad unit", ">= 4 parsecs", 0, false, `threshold ">= 4 parsecs": unknown unit "parsecs" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)`},
		{"no number", ">= lots", 0, false, `threshold ">= lots": want an operator and a number, like ">= 7.5GiB" or ">= 4"`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			th, err := ParseThreshold(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil || th.Holds(tt.v) != tt.ok {
				t.Fatalf("%q holds(%v) = %v (%v)", tt.in, tt.v, th.Holds(tt.v), err)
			}
		})
	}
}
