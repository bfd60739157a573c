package lab_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/verify"
)

// TestDropletSFTPIsRootedAtItsDisk: a droplet's sftp subsystem sees its
// disk as "/" and nothing above it, through ".." or through a symlink.
func TestDropletSFTPIsRootedAtItsDisk(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	dir := t.TempDir()
	key, pub := labtest.NewKey(t, dir)
	ctx := context.Background()
	kid, err := l.Seeder().AddKey(ctx, "t", pub)
	if err != nil {
		t.Fatal(err)
	}
	id, ip, err := l.Seeder().Droplet(ctx, "web-1", "s-1vcpu-1gb", []int{kid}, map[string]string{"index.html": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := verify.DialSSH(ctx, ip, verify.SSHConfig{User: "root", KeyFile: key, Port: l.SSHPort(), KnownHosts: filepath.Join(dir, "kh"), HostKeyPolicy: verify.HostKeyAcceptNew, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if out, err := c.Run(ctx, "date +%s"); err != nil || len(strings.TrimSpace(out)) < 10 {
		t.Fatalf("date +%%s: %q %v", out, err)
	}
	fs, err := c.SFTP()
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()

	f, err := fs.Open("/var/www/html/index.html")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "hi" {
		t.Fatalf("index.html over sftp: %q", b)
	}
	// Above the disk is the disk.
	if f, err := fs.Open("/../../../../etc/hostname"); err == nil {
		b, _ := io.ReadAll(f)
		f.Close()
		if strings.TrimSpace(string(b)) != "web-1" {
			t.Fatalf("/../../etc/hostname read %q, which is not the droplet's", b)
		}
	}
	// A symlink out of the disk leads nowhere.
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host file"), 0o644)
	if err := fs.Symlink(outside, "/escape"); err != nil {
		t.Fatal(err)
	}
	if f, err := fs.Open("/escape/secret"); err == nil {
		f.Close()
		t.Fatal("read a host file through a symlink out of the droplet's disk")
	}
	if w, err := fs.Create("/escape/planted"); err == nil {
		w.Close()
		t.Fatal("created a file through a symlink out of the droplet's disk")
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Fatal("a file was planted outside the droplet's disk")
	}
	// Writes land on the disk, with the mode and mtime asked for.
	w, err := fs.Create("/srv/new.txt")
	if err == nil {
		t.Fatal("created a file in a directory that does not exist")
	}
	fs.MkdirAll("/srv")
	if w, err = fs.Create("/srv/new.txt"); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("carried"))
	w.Close()
	mt := time.Unix(1700000000, 0)
	if err := fs.Chtimes("/srv/new.txt", mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := fs.Chmod("/srv/new.txt", 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := l.ReadFile(id, "srv/new.txt"); err != nil || got != "carried" {
		t.Fatalf("the file on the disk: %q %v", got, err)
	}
	st, err := fs.Lstat("/srv/new.txt")
	if err != nil || st.Mode().Perm() != 0o600 || !st.ModTime().Equal(mt) {
		t.Fatalf("stat: %v %v %v", st.Mode(), st.ModTime(), err)
	}
}
