package nginx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/pkg/sftp"

	"github.com/vmswap/vmswap/verify"
)

// Host is the machine nginx runs on: vmswap reads and writes the upstream
// files there and runs nginx and ps there.
type Host interface {
	// ReadFile returns a file's content; a missing file is an error
	// wrapping fs.ErrNotExist.
	ReadFile(ctx context.Context, name string) ([]byte, error)
	// WriteFile replaces a file atomically: written beside it under a
	// temporary name, then renamed over it, so nginx never reads half a
	// file.
	WriteFile(ctx context.Context, name string, data []byte) error
	// Run runs a command and returns its output (stdout and stderr).
	Run(ctx context.Context, argv []string) (string, error)
	// Close releases the connection, if any.
	Close() error
}

// Local is the machine vmswap runs on.
type Local struct{}

// ReadFile implements Host.
func (Local) ReadFile(_ context.Context, name string) ([]byte, error) { return os.ReadFile(name) }

// WriteFile implements Host.
//
// A symlink is followed: the file it points to is replaced, and the link
// stays. The file keeps its mode and, where this process may, its owner.
func (Local) WriteFile(_ context.Context, name string, data []byte) error {
	if real, err := filepath.EvalSymlinks(name); err == nil {
		name = real
	}
	mode := fs.FileMode(0o644)
	fi, err := os.Stat(name)
	if err == nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(name), ".vmswap-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if fi != nil {
		keepOwner(f, fi)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

// Run implements Host.
func (Local) Run(ctx context.Context, argv []string) (string, error) {
	var out verify.TailBuffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Close implements Host.
func (Local) Close() error { return nil }

// SSH is a proxy host reached over SSH: commands run in the login user's
// shell, files move over SFTP. It connects on first use.
type SSH struct {
	host string
	cfg  verify.SSHConfig

	mu sync.Mutex
	c  *verify.SSHClient
	fs *sftp.Client
}

// NewSSH returns the proxy host at host (a name or IP; the port is cfg's).
func NewSSH(host string, cfg verify.SSHConfig) *SSH { return &SSH{host: host, cfg: cfg} }

func (s *SSH) dial(ctx context.Context) (*verify.SSHClient, *sftp.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		return s.c, s.fs, nil
	}
	c, err := verify.DialSSH(ctx, s.host, s.cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("nginx host: %w", err)
	}
	fsc, err := c.SFTP()
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("nginx host: %w", err)
	}
	s.c, s.fs = c, fsc
	return c, fsc, nil
}

// ReadFile implements Host.
func (s *SSH) ReadFile(ctx context.Context, name string) ([]byte, error) {
	_, fsc, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	f, err := fsc.Open(name)
	if err != nil {
		return nil, err // *sftp.StatusError for a missing file is fs.ErrNotExist
	}
	defer f.Close()
	return io.ReadAll(f)
}

// WriteFile implements Host.
func (s *SSH) WriteFile(ctx context.Context, name string, data []byte) error {
	_, fsc, err := s.dial(ctx)
	if err != nil {
		return err
	}
	if fi, err := fsc.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		// The link stays; the file it points to is replaced.
		if real, err := fsc.RealPath(name); err == nil {
			name = real
		}
	}
	mode := fs.FileMode(0o644)
	var owner *sftp.FileStat
	if fi, err := fsc.Stat(name); err == nil {
		mode = fi.Mode().Perm()
		owner, _ = fi.Sys().(*sftp.FileStat)
	}
	tmp := path.Join(path.Dir(name), ".vmswap-"+path.Base(name)+".tmp")
	f, err := fsc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return err
	}
	defer fsc.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if owner != nil {
		fsc.Chown(tmp, int(owner.UID), int(owner.GID)) // as far as the login may
	}
	return fsc.PosixRename(tmp, name)
}

// Run implements Host: the words are quoted for the remote shell.
func (s *SSH) Run(ctx context.Context, argv []string) (string, error) {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	c, _, err := s.dial(ctx)
	if err != nil {
		return "", err
	}
	return c.Combined(ctx, strings.Join(q, " "))
}

// Close implements Host.
func (s *SSH) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil
	}
	err := errors.Join(s.fs.Close(), s.c.Close())
	s.c, s.fs = nil, nil
	return err
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:@,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// notExist reports whether err says a file is missing, locally or over SFTP.
func notExist(err error) bool {
	var se *sftp.StatusError
	return errors.Is(err, fs.ErrNotExist) || (errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxNoSuchFile)
}
