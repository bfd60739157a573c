package carry

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/pkg/sftp"
)

// DefaultWatch is where the divergence report looks by default.
var DefaultWatch = []string{"/etc", "/home", "/opt", "/root", "/srv", "/var"}

// DefaultIgnore is what the divergence report skips by default: logs,
// caches, temporary files, package state and the journal, which every
// running server writes and no user misses.
var DefaultIgnore = []string{
	"/var/log", "/var/cache", "/var/tmp", "/tmp", "/var/backups",
	"/var/lib/apt", "/var/lib/dpkg", "/var/lib/systemd", "/var/lib/dhcp",
	"/var/lib/logrotate", "/var/lib/ucf", "/var/lib/private", "/var/spool/postfix",
	"/root/.cache", "/home/*/.cache", "/var/lib/cloud/instance",
	"*.log", "*.tmp", "*.swp", "*.pid", "*.lock",
}

// MaxListed is how many files a divergence report names.
const MaxListed = 50

// maxScanned bounds a divergence walk.
const maxScanned = 200_000

// ChangedFile is a file a server modified after its snapshot.
type ChangedFile struct {
	Path  string    `json:"path"`
	Size  int64     `json:"size"`
	Mtime time.Time `json:"mtime"`
}

// Divergence is what a server wrote after its snapshot outside the carried
// paths: files no pass copied.
type Divergence struct {
	Count int `json:"count"`
	// Files are the first MaxListed, newest first.
	Files []ChangedFile `json:"files,omitempty"`
	// Cut says what the report left out, when it did.
	Cut string `json:"cut,omitempty"`
}

// Diverged lists regular files under watch modified after since (unix
// seconds on the server's own clock), except under ignore and the carried
// paths, without following symlinks.
func Diverged(ctx context.Context, c *sftp.Client, watch, ignore, carried []string, since int64) (Divergence, error) {
	w := &walker{c: c, opt: Options{Paths: watch, Exclude: append(slices.Clone(ignore), carried...), MaxEntries: maxScanned}, m: Manifest{}, sem: make(chan struct{}, 8)}
	for _, root := range watch {
		fi, err := c.Lstat(root)
		if err != nil || !fi.IsDir() || excluded(root, w.opt.Exclude, nil) {
			continue
		}
		w.wg.Add(1)
		go w.dir(ctx, root)
	}
	w.wg.Wait()
	if w.err != nil {
		return Divergence{}, w.err
	}
	var d Divergence
	for p, e := range w.m {
		if e.Type == "f" && e.Mtime > since {
			d.Count++
			d.Files = append(d.Files, ChangedFile{Path: p, Size: e.Size, Mtime: time.Unix(e.Mtime, 0).UTC()})
		}
	}
	slices.SortFunc(d.Files, func(a, b ChangedFile) int {
		if c := b.Mtime.Compare(a.Mtime); c != 0 {
			return c
		}
		return cmp.Compare(a.Path, b.Path)
	})
	if len(d.Files) > MaxListed {
		d.Files = d.Files[:MaxListed]
		d.Cut = "listing the newest 50"
	}
	if w.cut {
		d.Cut = joinCut(d.Cut, "the walk stopped after 200000 entries; narrow divergence.watch or add to divergence.ignore")
	}
	return d, nil
}

func joinCut(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
