package verify

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func newHostKey(t *testing.T) ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestHostKeyAlias: a cloud reuses an address for a new server with a new
// host key. Recorded under the server's alias (its ID), the new server is
// a new host; recorded under the address, it is a changed key.
func TestHostKeyAlias(t *testing.T) {
	file := filepath.Join(t.TempDir(), "known_hosts")
	remote := &net.TCPAddr{IP: net.ParseIP("127.0.0.5"), Port: 22}
	first, second := newHostKey(t), newHostKey(t)
	for _, tc := range []struct {
		alias string
		key   ssh.PublicKey
	}{{"vmswap-server-do-1005", first}, {"vmswap-server-do-1007", second}, {"vmswap-server-do-1005", first}} {
		cb, err := hostKeyCallback(file, HostKeyAcceptNew, tc.alias)
		if err != nil {
			t.Fatal(err)
		}
		if err := cb("127.0.0.5:22", remote, tc.key); err != nil {
			t.Fatalf("%s: %v", tc.alias, err)
		}
	}
	// The same server answering with another key is still refused.
	cb, _ := hostKeyCallback(file, HostKeyAcceptNew, "vmswap-server-do-1005")
	if err := cb("127.0.0.5:22", remote, second); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("a changed key under the same alias: %v", err)
	}
	// Without an alias the reused address is a changed key.
	cb, _ = hostKeyCallback(file+"2", HostKeyAcceptNew, "")
	cb("127.0.0.5:22", remote, first)
	cb, _ = hostKeyCallback(file+"2", HostKeyAcceptNew, "")
	if err := cb("127.0.0.5:22", remote, second); err == nil {
		t.Fatal("a reused address with another key was accepted without an alias")
	}
}
