// Package bindtest runs a real BIND 9 (Debian's package) on loopback for
// tests: one primary zone that accepts TSIG-signed dynamic updates.
package bindtest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BIND is a running named.
type BIND struct {
	Addr   string // host:port
	Key    string // TSIG key name
	Secret string // base64
}

// Start serves zone with the A records given (name relative to the zone ->
// IP), all with ttl.
func Start(t testing.TB, zone string, records map[string]string, ttl int) *BIND {
	t.Helper()
	bin := "/usr/sbin/named"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("named not installed (%v): run `make deps`", err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o777) // named may drop to the bind user
	port := freePort(t)
	secret := make([]byte, 32)
	rand.Read(secret)
	b := &BIND{Addr: fmt.Sprintf("127.0.0.1:%d", port), Key: "vmswap-test", Secret: base64.StdEncoding.EncodeToString(secret)}
	var z strings.Builder
	fmt.Fprintf(&z, "$TTL %d\n@ IN SOA ns1.%s. hostmaster.%s. 1 3600 600 86400 30\n@ IN NS ns1.%s.\nns1 IN A 127.0.0.1\n", ttl, zone, zone, zone)
	for name, ip := range records {
		fmt.Fprintf(&z, "%s %d IN A %s\n", name, ttl, ip)
	}
	zf := filepath.Join(dir, zone+".zone")
	os.WriteFile(zf, []byte(z.String()), 0o666)
	conf := fmt.Sprintf(`key "%s" { algorithm hmac-sha256; secret "%s"; };
options {
    directory "%s";
    pid-file "%s/named.pid";
    session-keyfile "%s/session.key";
    listen-on port %d { 127.0.0.1; };
    listen-on-v6 { none; };
    recursion no;
    dnssec-validation no;
    notify no;
};
zone "%s" { type primary; file "%s"; allow-update { key "%s"; }; };
`, b.Key, b.Secret, dir, dir, dir, port, zone, zf, b.Key)
	cf := filepath.Join(dir, "named.conf")
	os.WriteFile(cf, []byte(conf), 0o644)
	cmd := exec.Command(bin, "-g", "-c", cf, "-u", "root")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		// Ready once it answers over UDP and over TCP (updates and the
		// driver's reads use TCP; named opens the two one after the other).
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
		r, err := dns.Exchange(m, b.Addr)
		if err == nil && len(r.Answer) == 1 {
			if r, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(m, b.Addr); err == nil && len(r.Answer) == 1 {
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("named did not start: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback port free for both UDP and TCP: named
// listens on both.
func freePort(t testing.TB) int {
	for range 20 {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		tl.Close()
		if err == nil {
			ul.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return 0
}
