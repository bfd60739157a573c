// Package labtest starts a lab for tests: validated against the vendored
// OpenAPI specs, with every spec violation failing the test, and a godo
// client pointed at it.
package labtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"

	"github.com/digitalocean/godo"

	"github.com/vmswap/vmswap/lab"
)

// Start starts a lab that validates every request and response against
// shared/specs. It fails the test if the specs cannot be found, and at cleanup
// if the lab saw any spec violation.
func Start(t testing.TB, cfg lab.Config) *lab.Lab {
	t.Helper()
	if cfg.SpecsDir == "" {
		cfg.SpecsDir = lab.FindSpecs()
		if cfg.SpecsDir == "" {
			t.Fatal("labtest: shared/specs not found beside the checkout; set VMSWAP_SPECS")
		}
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	l, err := lab.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, v := range l.Violations() {
			t.Errorf("lab spec violation: %s", v)
		}
		l.Close()
	})
	return l
}

// Godo returns a godo client for the lab's DigitalOcean API.
func Godo(t testing.TB, l *lab.Lab) *godo.Client {
	t.Helper()
	ep := l.Endpoints()
	hc := oauth2.NewClient(context.Background(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: ep.Token}))
	c, err := godo.New(hc, godo.SetBaseURL(ep.DigitalOceanAPI))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewKey writes a fresh ed25519 private key into dir and returns its file
// and its authorized_keys line, for a droplet to accept.
func NewKey(t testing.TB, dir string) (file, authorized string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(file, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return file, string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
}
