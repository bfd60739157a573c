// Package carry makes what a server wrote after its snapshot follow the
// traffic: it copies the changes under a list of carried paths from one
// server to another over SFTP, in passes, and lists what a server wrote
// elsewhere (the divergence report).
//
// A pass compares three views of each path: the source now, the destination
// now, and the reference, the state both sides agreed on after the previous
// pass (at first, the destination as it launched from the image). What
// changed on the source only is copied; what changed on the destination only
// is left alone; what changed on both, differently, is a conflict: it is
// reported and nothing is overwritten. Files are written to a temporary name
// beside their target and renamed into place, so a reader never sees half a
// file, and a pass cut short is simply run again.
package carry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
)

// tempPrefix starts the name of a file a pass is writing; walks skip such
// files and a later pass removes the ones a killed pass left.
const tempPrefix = ".vmswap-carry."

// Entry is what a pass knows of one path.
type Entry struct {
	// Type is "f" (regular file), "d" (directory) or "l" (symlink).
	Type  string `json:"t"`
	Size  int64  `json:"s,omitempty"`
	Mtime int64  `json:"m,omitempty"`
	Mode  uint32 `json:"p,omitempty"`
	UID   uint32 `json:"u,omitempty"`
	GID   uint32 `json:"g,omitempty"`
	Link  string `json:"l,omitempty"`
	// Hash is the content's SHA-256, when the pass compares content.
	Hash string `json:"h,omitempty"`
}

// same says whether two views hold the same thing. Directories are the same
// whatever their mtime (it changes with every file added).
func same(a Entry, aok bool, b Entry, bok bool) bool {
	if aok != bok {
		return false
	}
	if !aok || a.Type != b.Type {
		return !aok
	}
	switch a.Type {
	case "d":
		return true
	case "l":
		return a.Link == b.Link
	}
	return a.Size == b.Size && a.Mtime == b.Mtime && a.Hash == b.Hash
}

// Manifest maps absolute paths on a server to what is there.
type Manifest map[string]Entry

// Options says what a pass carries and how.
type Options struct {
	// Paths are the carried directories (or files), absolute.
	Paths []string
	// Exclude are glob patterns; one without a slash matches a base name,
	// one with a slash the whole path.
	Exclude []string
	// Checksum compares regular files by SHA-256 as well as size and mtime,
	// reading every carried file on both sides.
	Checksum bool
	// Since, when set, is a time on the source's clock (unix seconds): a
	// source file modified at or after one second before it counts as
	// changed even where size and mtime look the same, since SFTP carries
	// mtimes in whole seconds.
	Since int64
	// Workers is how many files are copied at once. Zero: 16.
	Workers int
	// OnCopied, if set, is called after each file copied, with the pass's
	// counts so far, one call at a time.
	OnCopied func(files int, bytes int64)
	// MaxEntries stops a walk that has listed this many entries. Zero: no
	// limit.
	MaxEntries int
}

// Conflict is a path changed on both sides since the previous pass.
type Conflict struct {
	Path string `json:"path"`
	// Source and Dest are the two sides; nil where the path was deleted.
	Source *Entry `json:"source,omitempty"`
	Dest   *Entry `json:"dest,omitempty"`
	Reason string `json:"reason"`
}

// Result is what one pass did.
type Result struct {
	Scanned   int           `json:"scanned"`
	Copied    int           `json:"copied"`
	Deleted   int           `json:"deleted"`
	Bytes     int64         `json:"bytes"`
	Conflicts []Conflict    `json:"conflicts,omitempty"`
	Duration  time.Duration `json:"duration_ns"`
}

// Walk lists the carried paths on a server without following symlinks.
// Temporary files of an earlier pass are returned apart.
func Walk(ctx context.Context, c *sftp.Client, opt Options) (Manifest, []string, error) {
	w := &walker{c: c, opt: opt, m: Manifest{}, sem: make(chan struct{}, 8)}
	for _, root := range opt.Paths {
		fi, err := c.Lstat(root)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("carry: %s: %w", root, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil, nil, fmt.Errorf("carry: %s is a symlink: carry the directory it points to instead", root)
		}
		w.add(root, fi)
		if fi.IsDir() {
			w.wg.Add(1)
			go w.dir(ctx, root)
		}
	}
	w.wg.Wait()
	if w.err != nil {
		return nil, nil, w.err
	}
	if opt.Checksum {
		if err := hashAll(ctx, c, w.m, opt.workers()); err != nil {
			return nil, nil, err
		}
	}
	return w.m, w.temps, nil
}

type walker struct {
	c     *sftp.Client
	opt   Options
	sem   chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	m     Manifest
	temps []string
	err   error
	cut   bool
}

func (w *walker) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m)
}

func (w *walker) add(p string, fi fs.FileInfo) {
	e := entryOf(fi)
	if e.Type == "l" {
		if t, err := w.c.ReadLink(p); err == nil {
			e.Link = t
		}
	}
	w.mu.Lock()
	w.m[p] = e
	w.mu.Unlock()
}

func (w *walker) dir(ctx context.Context, p string) {
	defer w.wg.Done()
	w.sem <- struct{}{}
	ents, err := w.c.ReadDirContext(ctx, p)
	<-w.sem
	if err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = fmt.Errorf("carry: list %s: %w", p, err)
		}
		w.mu.Unlock()
		return
	}
	for _, fi := range ents {
		if w.opt.MaxEntries > 0 && w.count() >= w.opt.MaxEntries {
			w.mu.Lock()
			w.cut = true
			w.mu.Unlock()
			return
		}
		child := path.Join(p, fi.Name())
		if strings.HasPrefix(fi.Name(), tempPrefix) {
			w.mu.Lock()
			w.temps = append(w.temps, child)
			w.mu.Unlock()
			continue
		}
		if excluded(child, w.opt.Exclude, w.opt.Paths) {
			continue
		}
		if t := entryOf(fi).Type; t == "" {
			continue // sockets, devices, fifos: not data
		}
		w.add(child, fi)
		if fi.IsDir() {
			w.wg.Add(1)
			go w.dir(ctx, child)
		}
	}
}

func entryOf(fi fs.FileInfo) Entry {
	e := Entry{Mode: uint32(fi.Mode().Perm())}
	if st, ok := fi.Sys().(*sftp.FileStat); ok {
		e.UID, e.GID = st.UID, st.GID
	}
	switch {
	case fi.Mode().IsRegular():
		e.Type, e.Size, e.Mtime = "f", fi.Size(), fi.ModTime().Unix()
	case fi.IsDir():
		e.Type = "d"
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type, e.Mode = "l", 0
	}
	return e
}

// excluded matches a path against exclude patterns. A pattern without a
// slash matches a base name ("*.tmp"); one starting with a slash, the whole
// path ("/var/www/html/uploads/cache/*"), and without glob characters also
// everything under it ("/var/log"); any other, the path relative to the
// root it is under ("cache/*" in a carried /var/www/html/uploads).
func excluded(p string, patterns, roots []string) bool {
	for _, pat := range patterns {
		switch {
		case strings.HasPrefix(pat, "/") && !strings.ContainsAny(pat, "*?["):
			if p == pat || strings.HasPrefix(p, strings.TrimSuffix(pat, "/")+"/") {
				return true
			}
		case strings.HasPrefix(pat, "/"):
			if ok, _ := path.Match(pat, p); ok {
				return true
			}
		case strings.Contains(pat, "/"):
			for _, r := range roots {
				if rel, ok := strings.CutPrefix(p, strings.TrimSuffix(r, "/")+"/"); ok {
					if m, _ := path.Match(pat, rel); m {
						return true
					}
				}
			}
		default:
			if ok, _ := path.Match(pat, path.Base(p)); ok {
				return true
			}
		}
	}
	return false
}

func (o Options) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return 16
}

func hashAll(ctx context.Context, c *sftp.Client, m Manifest, workers int) error {
	var files []string
	for p, e := range m {
		if e.Type == "f" {
			files = append(files, p)
		}
	}
	var mu sync.Mutex
	return each(ctx, files, workers, func(p string) error {
		f, err := c.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := f.WriteTo(h); err != nil {
			return fmt.Errorf("carry: read %s: %w", p, err)
		}
		mu.Lock()
		e := m[p]
		e.Hash = hex.EncodeToString(h.Sum(nil))
		m[p] = e
		mu.Unlock()
		return nil
	})
}

// each runs fn over items with a bounded number of goroutines and returns
// the first error.
func each(ctx context.Context, items []string, workers int, fn func(string) error) error {
	ch := make(chan string)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(workers, max(len(items), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				if err := fn(it); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for _, it := range items {
		if ctx.Err() != nil || first != nil {
			break
		}
		ch <- it
	}
	close(ch)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// Pass makes dst catch up with what changed on src since ref, and returns
// what it did and the reference for the next pass. ref nil means the
// destination as it is now is the reference (the first pass after launch).
func Pass(ctx context.Context, src, dst *sftp.Client, ref Manifest, opt Options) (Result, Manifest, error) {
	start := time.Now()
	var res Result
	var S, D Manifest
	var dtemps []string
	var serr, derr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); S, _, serr = Walk(ctx, src, opt) }()
	go func() { defer wg.Done(); D, dtemps, derr = Walk(ctx, dst, opt) }()
	wg.Wait()
	if err := errors.Join(serr, derr); err != nil {
		return res, nil, err
	}
	for _, t := range dtemps {
		dst.Remove(t) // what a pass cut short left
	}
	if ref == nil {
		ref = maps(D)
	}
	next := maps(ref)
	paths := union(S, D, ref)
	res.Scanned = len(paths)

	var mkdirs, files, removes []string
	blocked := map[string]bool{} // directories that are not directories on dst
	for _, p := range paths {
		if isUnder(p, blocked) {
			s, sok := S[p]
			if sok {
				res.Conflicts = append(res.Conflicts, Conflict{Path: p, Source: &s, Reason: "a parent directory is not a directory on the destination"})
			}
			continue
		}
		s, sok := S[p]
		d, dok := D[p]
		r, rok := ref[p]
		// A file the source wrote in the second of the previous look may
		// have changed with its size and mtime alike.
		recent := sok && s.Type == "f" && opt.Since > 0 && s.Mtime >= opt.Since-1
		dstChanged := !same(d, dok, r, rok)
		if same(s, sok, d, dok) && !(recent && !dstChanged) {
			if sok {
				next[p] = s
			} else {
				delete(next, p)
			}
			continue
		}
		srcChanged := recent || !same(s, sok, r, rok)
		switch {
		case !srcChanged:
			// The destination's own change stands.
		case dstChanged:
			c := Conflict{Path: p, Reason: "changed on both sides since the previous pass; the destination's copy was kept"}
			if sok {
				c.Source = &s
			} else {
				c.Reason = "deleted on the source but changed on the destination; the destination's copy was kept"
			}
			if dok {
				c.Dest = &d
			}
			res.Conflicts = append(res.Conflicts, c)
		case !sok:
			removes = append(removes, p)
		case dok && d.Type == "d" && s.Type != "d":
			// A directory replaced by a file: what is in it on the
			// destination is not the pass's to delete.
			res.Conflicts = append(res.Conflicts, Conflict{Path: p, Source: &s, Dest: &d, Reason: "a directory on the destination is a file on the source; the destination's was kept"})
		case s.Type == "d":
			// (A file or symlink the destination has unchanged there is
			// replaced by the directory.)
			mkdirs = append(mkdirs, p)
		default:
			files = append(files, p)
		}
		// Nothing is written under a directory the destination does not
		// have as a directory (a symlink there could lead anywhere).
		if sok && s.Type == "d" && !(dok && d.Type == "d") && !(len(mkdirs) > 0 && mkdirs[len(mkdirs)-1] == p) {
			blocked[p] = true
		}
	}

	// Directories first, parents before children (paths are sorted).
	for _, p := range mkdirs {
		mkdir := dst.Mkdir
		if slices.Contains(opt.Paths, p) {
			mkdir = dst.MkdirAll // a carried path's parents may be missing
		}
		if d, ok := D[p]; ok && d.Type != "d" {
			if err := dst.Remove(p); err != nil {
				return res, nil, fmt.Errorf("carry: replace %s by a directory: %w", p, err)
			}
		}
		if err := mkdir(p); err != nil && !isExist(dst, p) {
			return res, nil, fmt.Errorf("carry: mkdir %s: %w", p, err)
		}
		s := S[p]
		dst.Chmod(p, fs.FileMode(s.Mode))
		next[p] = s
	}
	var mu sync.Mutex
	err := each(ctx, files, opt.workers(), func(p string) error {
		s := S[p]
		var n int64
		var err error
		if s.Type == "l" {
			err = putLink(dst, p, s.Link)
		} else {
			n, err = copyFile(src, dst, p, s)
		}
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		res.Copied++
		res.Bytes += n
		if s.Type == "f" && n != s.Size {
			s.Size = n // it changed while copied: the next pass copies it again
		}
		next[p] = s
		if opt.OnCopied != nil {
			opt.OnCopied(res.Copied, res.Bytes)
		}
		return nil
	})
	if err != nil {
		return res, nil, err
	}
	// Deletions, children before parents.
	slices.Reverse(removes)
	for _, p := range removes {
		if err := dst.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			if D[p].Type == "d" {
				// Not empty: something the destination wrote is inside.
				res.Conflicts = append(res.Conflicts, Conflict{Path: p, Reason: "deleted on the source, but not empty on the destination; kept"})
				continue
			}
			return res, nil, fmt.Errorf("carry: remove %s: %w", p, err)
		}
		res.Deleted++
		delete(next, p)
	}
	res.Duration = time.Since(start)
	return res, next, nil
}

func isExist(c *sftp.Client, p string) bool {
	fi, err := c.Lstat(p)
	return err == nil && fi.IsDir()
}

func isUnder(p string, dirs map[string]bool) bool {
	for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
		if dirs[d] {
			return true
		}
	}
	return false
}

func maps(m Manifest) Manifest {
	out := make(Manifest, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// union returns every path of the manifests, sorted so that a directory
// comes before what is inside it.
func union(ms ...Manifest) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		for p := range m {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return pathLess(out[i], out[j]) })
	return out
}

// pathLess orders paths component by component, so "/a/b" sorts right
// after "/a" and before "/a-b".
func pathLess(a, b string) bool {
	return slices.Compare(strings.Split(a, "/"), strings.Split(b, "/")) < 0
}

func tempName(p string) string {
	return path.Join(path.Dir(p), fmt.Sprintf("%s%s.%d", tempPrefix, path.Base(p), time.Now().UnixNano()))
}

// copyFile copies one regular file through a temporary name renamed into
// place, with its mode, owner and mtime.
func copyFile(src, dst *sftp.Client, p string, s Entry) (int64, error) {
	in, err := src.Open(p)
	if err != nil {
		return 0, fmt.Errorf("carry: read %s: %w", p, err)
	}
	defer in.Close()
	tmp := tempName(p)
	out, err := dst.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return 0, fmt.Errorf("carry: write %s: %w", tmp, err)
	}
	n, err := in.WriteTo(out)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = finish(dst, tmp, s)
	}
	if err == nil {
		err = rename(dst, tmp, p)
	}
	if err != nil {
		dst.Remove(tmp)
		return n, fmt.Errorf("carry: copy %s: %w", p, err)
	}
	return n, nil
}

// finish gives a written file the source's mode, owner and mtime.
func finish(dst *sftp.Client, tmp string, s Entry) error {
	if err := dst.Chmod(tmp, fs.FileMode(s.Mode)); err != nil {
		return err
	}
	if fi, err := dst.Lstat(tmp); err == nil {
		if st, ok := fi.Sys().(*sftp.FileStat); ok && (st.UID != s.UID || st.GID != s.GID) {
			if err := dst.Chown(tmp, int(s.UID), int(s.GID)); err != nil {
				return fmt.Errorf("owner %d:%d: %w", s.UID, s.GID, err)
			}
		}
	}
	t := time.Unix(s.Mtime, 0)
	return dst.Chtimes(tmp, t, t)
}

func putLink(dst *sftp.Client, p, target string) error {
	tmp := tempName(p)
	if err := dst.Symlink(target, tmp); err != nil {
		return fmt.Errorf("carry: symlink %s: %w", p, err)
	}
	if err := rename(dst, tmp, p); err != nil {
		dst.Remove(tmp)
		return fmt.Errorf("carry: symlink %s: %w", p, err)
	}
	return nil
}

// rename replaces p with tmp: atomically where the server has OpenSSH's
// posix-rename, else by removing p first.
func rename(dst *sftp.Client, tmp, p string) error {
	if _, ok := dst.HasExtension("posix-rename@openssh.com"); ok {
		return dst.PosixRename(tmp, p)
	}
	if err := dst.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return dst.Rename(tmp, p)
}
