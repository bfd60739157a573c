package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// LockPath is the lock file of a plan file.
func LockPath(planFile string) string { return planFile + ".lock" }

// LockInfo is who holds a lock.
type LockInfo struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Command string    `json:"command"`
}

func (li LockInfo) String() string {
	return fmt.Sprintf("%s pid %d since %s (%s)", li.Host, li.PID, li.Started.Format(time.RFC3339), li.Command)
}

// LockedError is returned when a live process holds the lock.
type LockedError struct {
	Path string
	Info LockInfo
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("another vmswap is applying this plan: %s holds %s", e.Info, e.Path)
}

// errHeld is what tryLock returns when another process holds the lock.
var errHeld = errors.New("lock held")

// Lock is a held lock: an OS lock (flock; LockFileEx on Windows) on the
// lock file, which the kernel drops when the process ends, however it ends:
// a vmswap killed with -9 leaves nothing to break. The file's content says
// who holds it, for the messages of those who find it held.
type Lock struct {
	path string
	f    *os.File
}

// AcquireLock takes the lock of a plan, or returns a *LockedError naming
// the live process that holds it. breakLock is accepted for remote state,
// where a lease can outlive its holder; a local lock is never stale.
func AcquireLock(path, command string, breakLock bool) (*Lock, error) {
	_ = breakLock
	host, _ := os.Hostname()
	info, _ := json.Marshal(LockInfo{Host: host, PID: os.Getpid(), Started: time.Now().UTC(), Command: command})
	for attempt := 0; attempt < 5; attempt++ {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if err := tryLock(f); err != nil {
			held := readInfo(f)
			f.Close()
			if errors.Is(err, errHeld) {
				return nil, &LockedError{Path: path, Info: held}
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		// The holder before us may have removed the file between our open
		// and our lock: then we hold a lock on a file nobody else sees.
		fi, ferr := f.Stat()
		pi, perr := os.Stat(path)
		if ferr != nil || perr != nil || !os.SameFile(fi, pi) {
			unlock(f)
			f.Close()
			continue
		}
		if err := f.Truncate(0); err == nil {
			_, err = f.WriteAt(info, 0)
			if err == nil {
				err = f.Sync()
			}
			if err != nil {
				unlock(f)
				f.Close()
				return nil, fmt.Errorf("lock %s: %w", path, err)
			}
		}
		return &Lock{path: path, f: f}, nil
	}
	return nil, fmt.Errorf("lock %s: could not acquire it (it kept being replaced)", path)
}

func readInfo(f *os.File) LockInfo {
	var li LockInfo
	if b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<16)); err == nil {
		json.Unmarshal(b, &li)
	}
	return li
}

// Release removes the lock file, then drops the OS lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := os.Remove(l.path)
	unlock(l.f)
	l.f.Close()
	l.f = nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// Windows removes no open file: remove it now it is closed.
		err = os.Remove(l.path)
	}
	return err
}

// LockHeld reports whether a live process holds the lock.
func LockHeld(path string) bool {
	li, err := ReadLock(path)
	return err == nil && li != nil && li.Held
}

// LockState is what a lock file says, and whether its holder still runs.
type LockState struct {
	LockInfo
	// Held: a live process holds the OS lock. A file that is not held was
	// left by a process that was killed; the next command takes it over.
	Held bool
}

// ReadLock returns the lock's state (nil when there is no lock file).
func ReadLock(path string) (*LockState, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st := &LockState{LockInfo: readInfo(f)}
	switch err := tryLock(f); {
	case errors.Is(err, errHeld):
		st.Held = true
	case err == nil:
		unlock(f)
	default:
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return st, nil
}
