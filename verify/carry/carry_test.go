package carry

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// server runs OpenSSH's own sftp-server in a mount namespace of its own
// where dir is mounted at mnt: two of them see two different disks at the
// same path, as an old and a new server do.
func server(t *testing.T, dir, mnt string) *sftp.Client {
	t.Helper()
	bin := "/usr/lib/openssh/sftp-server"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("OpenSSH's sftp-server is not installed (%v): run `make deps`", err)
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", `mount --bind "$1" "$2" && exec "$3"`, "sh", dir, mnt, bin)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare (needs root, as make test runs): %v", err)
	}
	c, err := sftp.NewClientPipe(out, in, sftp.UseConcurrentWrites(true), sftp.UseConcurrentReads(true))
	if err != nil {
		t.Fatalf("sftp-server in a mount namespace: %v", err)
	}
	t.Cleanup(func() { c.Close(); cmd.Process.Kill(); cmd.Wait() })
	return c
}

type pair struct {
	old, new    string // the two disks
	mnt         string // where both are seen
	src, dst    *sftp.Client
	opt         Options
	ctx         context.Context
	t           *testing.T
	past, past2 time.Time
}

func newPair(t *testing.T) *pair {
	base := t.TempDir()
	p := &pair{old: filepath.Join(base, "old"), new: filepath.Join(base, "new"), mnt: filepath.Join(base, "srv"), ctx: context.Background(), t: t}
	for _, d := range []string{p.old, p.new, p.mnt} {
		os.MkdirAll(d, 0o755)
	}
	p.past = time.Now().Add(-time.Hour).Truncate(time.Second)
	p.write(p.old, "uploads/a.txt", "first", 0o640, p.past)
	p.write(p.old, "uploads/sub/b.bin", "bbbbbbbb", 0o644, p.past)
	p.write(p.old, "uploads/keep.txt", "kept", 0o644, p.past)
	// The image: the new disk starts as a copy of the old one.
	if out, err := exec.Command("cp", "-a", p.old+"/.", p.new).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, out)
	}
	p.src, p.dst = server(t, p.old, p.mnt), server(t, p.new, p.mnt)
	p.opt = Options{Paths: []string{filepath.Join(p.mnt, "uploads")}, Exclude: []string{"*.tmp"}}
	return p
}

func (p *pair) write(disk, rel, content string, mode os.FileMode, mtime time.Time) {
	p.t.Helper()
	f := filepath.Join(disk, rel)
	os.MkdirAll(filepath.Dir(f), 0o755)
	if err := os.WriteFile(f, []byte(content), mode); err != nil {
		p.t.Fatal(err)
	}
	os.Chmod(f, mode)
	if !mtime.IsZero() {
		os.Chtimes(f, mtime, mtime)
	}
}

func (p *pair) read(disk, rel string) string {
	b, err := os.ReadFile(filepath.Join(disk, rel))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

func (p *pair) pass(ref Manifest) (Result, Manifest) {
	p.t.Helper()
	res, next, err := Pass(p.ctx, p.src, p.dst, ref, p.opt)
	if err != nil {
		p.t.Fatal(err)
	}
	return res, next
}

func TestPassCopiesWhatChangedWithModesMtimesAndLinks(t *testing.T) {
	p := newPair(t)
	now := time.Now().Add(-time.Minute).Truncate(time.Second)
	p.write(p.old, "uploads/a.txt", "second version", 0o600, now)
	p.write(p.old, "uploads/new/c.txt", "c", 0o604, now)
	p.write(p.old, "uploads/x.tmp", "scratch", 0o644, now)
	os.Symlink("a.txt", filepath.Join(p.old, "uploads/link"))
	os.Remove(filepath.Join(p.old, "uploads/sub/b.bin"))

	res, ref := p.pass(nil)
	if res.Copied != 3 || res.Deleted != 1 || len(res.Conflicts) != 0 {
		t.Fatalf("pass: %+v", res)
	}
	if got := p.read(p.new, "uploads/a.txt"); got != "second version" {
		t.Fatalf("a.txt on new: %q", got)
	}
	for rel, mode := range map[string]os.FileMode{"uploads/a.txt": 0o600, "uploads/new/c.txt": 0o604} {
		fi, err := os.Stat(filepath.Join(p.new, rel))
		if err != nil || fi.Mode().Perm() != mode || !fi.ModTime().Equal(now) {
			t.Fatalf("%s on new: %v, mode %v mtime %v; want %v %v", rel, err, fi.Mode().Perm(), fi.ModTime(), mode, now)
		}
	}
	if l, err := os.Readlink(filepath.Join(p.new, "uploads/link")); err != nil || l != "a.txt" {
		t.Fatalf("link on new: %q %v", l, err)
	}
	if _, err := os.Stat(filepath.Join(p.new, "uploads/sub/b.bin")); !os.IsNotExist(err) {
		t.Fatalf("b.bin deleted on old is still on new: %v", err)
	}
	if _, err := os.Stat(filepath.Join(p.new, "uploads/x.tmp")); !os.IsNotExist(err) {
		t.Fatalf("an excluded file was carried: %v", err)
	}

	// Nothing changed: the next pass copies nothing.
	res, _ = p.pass(ref)
	if res.Copied != 0 || res.Deleted != 0 || len(res.Conflicts) != 0 {
		t.Fatalf("idle pass: %+v", res)
	}
}

func TestPassReportsConflictsAndOverwritesNothing(t *testing.T) {
	p := newPair(t)
	_, ref := p.pass(nil)
	later := time.Now().Add(-30 * time.Second).Truncate(time.Second)
	p.write(p.old, "uploads/a.txt", "old side", 0o644, later)
	p.write(p.new, "uploads/a.txt", "new side wrote this", 0o644, later.Add(time.Second))
	// Deleted on the source, changed on the destination: kept.
	os.Remove(filepath.Join(p.old, "uploads/keep.txt"))
	p.write(p.new, "uploads/keep.txt", "edited on new", 0o644, later)
	// Changed on the destination only: its change stands.
	p.write(p.new, "uploads/sub/b.bin", "new only", 0o644, later)

	res, _ := p.pass(ref)
	if len(res.Conflicts) != 2 || res.Copied != 0 || res.Deleted != 0 {
		t.Fatalf("pass: %+v", res)
	}
	c := res.Conflicts[0]
	if c.Path != filepath.Join(p.mnt, "uploads/a.txt") || c.Source == nil || c.Dest == nil || c.Source.Size != 8 || c.Dest.Size != 19 {
		t.Fatalf("conflict: %+v", c)
	}
	if res.Conflicts[1].Source != nil || !strings.Contains(res.Conflicts[1].Reason, "deleted on the source") {
		t.Fatalf("deletion conflict: %+v", res.Conflicts[1])
	}
	for rel, want := range map[string]string{"uploads/a.txt": "new side wrote this", "uploads/keep.txt": "edited on new", "uploads/sub/b.bin": "new only"} {
		if got := p.read(p.new, rel); got != want {
			t.Fatalf("%s on new: %q, want %q", rel, got, want)
		}
	}
	if got := p.read(p.old, "uploads/a.txt"); got != "old side" {
		t.Fatalf("the source was changed: %q", got)
	}
}

func TestPassNeverFollowsASymlinkOut(t *testing.T) {
	p := newPair(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("not yours"), 0o600)
	// On the source, a link to a directory outside the carried path: it is
	// carried as a link, and nothing is read through it.
	os.Symlink(outside, filepath.Join(p.old, "uploads/out"))
	// On the destination, a directory of the source was replaced by a
	// symlink to elsewhere since the previous pass: nothing is written
	// through it.
	p.write(p.old, "uploads/into/first", "x", 0o644, time.Time{})
	p.write(p.new, "uploads/into/first", "x", 0o644, time.Time{})
	_, before := p.pass(nil)
	trap := t.TempDir()
	os.RemoveAll(filepath.Join(p.new, "uploads/into"))
	os.Symlink(trap, filepath.Join(p.new, "uploads/into"))
	p.write(p.old, "uploads/into/file", "x", 0o644, time.Time{})

	res, ref := p.pass(before)
	if _, ok := ref[filepath.Join(p.mnt, "uploads/out/secret")]; ok {
		t.Fatal("the walk followed a symlink out of the carried path")
	}
	if l, err := os.Readlink(filepath.Join(p.new, "uploads/out")); err != nil || l != outside {
		t.Fatalf("the link was not carried as a link: %q %v", l, err)
	}
	if ents, _ := os.ReadDir(trap); len(ents) != 0 {
		t.Fatalf("a pass wrote through the destination's symlink: %v", ents)
	}
	var blocked bool
	for _, c := range res.Conflicts {
		blocked = blocked || c.Path == filepath.Join(p.mnt, "uploads/into/file")
	}
	if !blocked {
		t.Fatalf("the blocked file is not reported: %+v", res.Conflicts)
	}

	// A carried path that is itself a symlink is refused.
	os.Symlink(outside, filepath.Join(p.old, "linked"))
	opt := p.opt
	opt.Paths = []string{filepath.Join(p.mnt, "linked")}
	if _, _, err := Pass(p.ctx, p.src, p.dst, nil, opt); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Fatalf("a symlinked carry path: %v", err)
	}
}

func TestPassResumesAfterBeingCutShort(t *testing.T) {
	p := newPair(t)
	_, ref := p.pass(nil)
	// What a killed pass leaves: a temporary file, and one file already in
	// place though the reference does not know it.
	p.write(p.new, "uploads/"+tempPrefix+"a.txt.123", "half", 0o600, time.Time{})
	later := time.Now().Add(-10 * time.Second).Truncate(time.Second)
	p.write(p.old, "uploads/a.txt", "after snapshot", 0o644, later)
	p.write(p.new, "uploads/a.txt", "after snapshot", 0o644, later)
	p.write(p.old, "uploads/d.txt", "d", 0o644, later)

	res, _ := p.pass(ref)
	if res.Copied != 1 || len(res.Conflicts) != 0 {
		t.Fatalf("resumed pass: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(p.new, "uploads/"+tempPrefix+"a.txt.123")); !os.IsNotExist(err) {
		t.Fatal("the killed pass's temporary file is still there")
	}
}

func TestRecentFilesAreComparedBeyondSizeAndMtime(t *testing.T) {
	p := newPair(t)
	mid := p.past.Add(30 * time.Minute)
	p.write(p.old, "uploads/a.txt", "first", 0o640, mid)
	_, ref := p.pass(nil)
	// Rewritten in the same second with the same size: size and mtime
	// cannot tell; the source's clock at the previous look can.
	st, _ := os.Stat(filepath.Join(p.old, "uploads/a.txt"))
	p.write(p.old, "uploads/a.txt", "FIRST", 0o640, st.ModTime())
	p.opt.Since = mid.Unix()
	res, _ := p.pass(ref)
	if res.Copied != 1 || p.read(p.new, "uploads/a.txt") != "FIRST" {
		t.Fatalf("recent pass: %+v, new has %q", res, p.read(p.new, "uploads/a.txt"))
	}
	// The checksum option tells without the clock.
	p.opt.Since = 0
	p.opt.Checksum = true
	_, ref = p.pass(nil)
	p.write(p.old, "uploads/a.txt", "fIrSt", 0o640, st.ModTime())
	res, _ = p.pass(ref)
	if res.Copied != 1 || p.read(p.new, "uploads/a.txt") != "fIrSt" {
		t.Fatalf("checksum pass: %+v, new has %q", res, p.read(p.new, "uploads/a.txt"))
	}
}

func TestDivergedListsWritesOutsideCarriedPaths(t *testing.T) {
	p := newPair(t)
	since := time.Now().Add(-5 * time.Minute).Unix()
	p.write(p.old, "etc/app.conf", "changed", 0o644, time.Time{})
	p.write(p.old, "log/app.log", "noise", 0o644, time.Time{})
	p.write(p.old, "uploads/new.png", "carried", 0o644, time.Time{})
	p.write(p.old, "etc/old.conf", "before", 0o644, p.past)
	d, err := Diverged(p.ctx, p.src, []string{p.mnt}, []string{"*.log"}, p.opt.Paths, since)
	if err != nil {
		t.Fatal(err)
	}
	if d.Count != 1 || d.Files[0].Path != filepath.Join(p.mnt, "etc/app.conf") || d.Files[0].Size != 7 {
		t.Fatalf("divergence: %+v", d)
	}
}

// TestPassExcludesAndTypeChanges: a relative pattern with a slash is
// matched under the carried path; a symlink the source replaced by a
// directory (the destination's link unchanged) becomes that directory.
func TestPassExcludesAndTypeChanges(t *testing.T) {
	p := newPair(t)
	os.Symlink("sub", filepath.Join(p.old, "uploads/alias"))
	os.Symlink("sub", filepath.Join(p.new, "uploads/alias"))
	_, ref := p.pass(nil)
	os.Remove(filepath.Join(p.old, "uploads/alias"))
	p.write(p.old, "uploads/alias/new.png", "png", 0o644, time.Time{})
	p.write(p.old, "uploads/cache/page.html", "regenerated", 0o644, time.Time{})
	p.write(p.old, "uploads/sub/cache.bin", "kept out too", 0o644, time.Time{})
	p.opt.Exclude = []string{"cache/*", "sub/cache.*"}
	res, _ := p.pass(ref)
	if len(res.Conflicts) != 0 || p.read(p.new, "uploads/alias/new.png") != "png" {
		t.Fatalf("symlink replaced by a directory: %+v, new has %q", res, p.read(p.new, "uploads/alias/new.png"))
	}
	for _, rel := range []string{"uploads/cache/page.html", "uploads/sub/cache.bin"} {
		if _, err := os.Stat(filepath.Join(p.new, rel)); !os.IsNotExist(err) {
			t.Fatalf("%s was carried though excluded: %v", rel, err)
		}
	}
}
