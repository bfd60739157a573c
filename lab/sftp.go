package lab

import (
	"io"
	"io/fs"
	"os"
	"path"
	"time"

	"github.com/pkg/sftp"
)

// This file: the sftp subsystem of a droplet, rooted at its disk.

// diskFS serves a droplet's disk over SFTP. Every path goes through os.Root,
// which refuses any path, symlinks included, that leaves the disk: a client
// sees the disk as "/" and nothing above it.
type diskFS struct{ root *os.Root }

func newSFTPHandlers(root *os.Root) sftp.Handlers {
	fsys := &diskFS{root: root}
	return sftp.Handlers{FileGet: fsys, FilePut: fsys, FileCmd: fsys, FileList: fsys}
}

// rel turns a client path into one relative to the disk root.
func rel(p string) string {
	r := path.Clean("/" + p)[1:]
	if r == "" {
		return "."
	}
	return r
}

func (d *diskFS) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return d.root.Open(rel(r.Filepath))
}

func (d *diskFS) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	return d.open(r, os.O_WRONLY)
}

func (d *diskFS) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	return d.open(r, os.O_RDWR)
}

func (d *diskFS) open(r *sftp.Request, mode int) (*os.File, error) {
	fl := r.Pflags()
	if fl.Creat {
		mode |= os.O_CREATE
	}
	if fl.Trunc {
		mode |= os.O_TRUNC
	}
	if fl.Excl {
		mode |= os.O_EXCL
	}
	perm := fs.FileMode(0o644)
	if r.AttrFlags().Permissions {
		perm = r.Attributes().FileMode().Perm()
	}
	return d.root.OpenFile(rel(r.Filepath), mode, perm)
}

func (d *diskFS) Filecmd(r *sftp.Request) error {
	p := rel(r.Filepath)
	switch r.Method {
	case "Setstat":
		return d.setstat(r, p)
	case "Rename":
		// SFTP's rename never replaces (posix-rename does).
		if _, err := d.root.Lstat(rel(r.Target)); err == nil {
			return os.ErrExist
		}
		return d.root.Rename(p, rel(r.Target))
	case "Rmdir", "Remove":
		return d.root.Remove(p)
	case "Mkdir":
		return d.root.Mkdir(p, 0o755)
	case "Symlink":
		// As in pkg/sftp: Filepath is the link's target, Target the link.
		return d.root.Symlink(r.Filepath, rel(r.Target))
	case "Link":
		return d.root.Link(p, rel(r.Target))
	}
	return sftp.ErrSSHFxOpUnsupported
}

func (d *diskFS) PosixRename(r *sftp.Request) error {
	return d.root.Rename(rel(r.Filepath), rel(r.Target))
}

func (d *diskFS) setstat(r *sftp.Request, p string) error {
	fl, a := r.AttrFlags(), r.Attributes()
	if fl.Size {
		f, err := d.root.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		err = f.Truncate(int64(a.Size))
		f.Close()
		if err != nil {
			return err
		}
	}
	if fl.UidGid {
		if err := d.root.Lchown(p, int(a.UID), int(a.GID)); err != nil {
			return err
		}
	}
	if fl.Permissions {
		if err := d.root.Chmod(p, a.FileMode().Perm()); err != nil {
			return err
		}
	}
	if fl.Acmodtime {
		return d.root.Chtimes(p, time.Unix(int64(a.Atime), 0), time.Unix(int64(a.Mtime), 0))
	}
	return nil
}

func (d *diskFS) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	p := rel(r.Filepath)
	switch r.Method {
	case "List":
		f, err := d.root.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		ents, err := f.ReadDir(-1)
		if err != nil {
			return nil, err
		}
		infos := make([]fs.FileInfo, 0, len(ents))
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				infos = append(infos, fi)
			}
		}
		return lister(infos), nil
	case "Stat":
		fi, err := d.root.Stat(p)
		if err != nil {
			return nil, err
		}
		return lister{fi}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

func (d *diskFS) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	fi, err := d.root.Lstat(rel(r.Filepath))
	if err != nil {
		return nil, err
	}
	return lister{fi}, nil
}

func (d *diskFS) Readlink(p string) (string, error) {
	return d.root.Readlink(rel(p))
}

func (d *diskFS) RealPath(p string) (string, error) {
	return path.Clean("/" + p), nil
}

type lister []fs.FileInfo

func (l lister) ListAt(out []fs.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	if n < len(out) {
		return n, io.EOF
	}
	return n, nil
}
