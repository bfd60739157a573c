package plans

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmswap/vmswap/verify/probe"
)

// JournalVersion is the journal format; other versions are refused.
const JournalVersion = 1

// Run statuses.
const (
	StatusRunning     = "running"
	StatusSucceeded   = "succeeded"
	StatusRolledBack  = "rolled_back"
	StatusFailed      = "failed" // needs attention
	StatusInterrupted = "interrupted"
)

// Journal is the state of one run of a plan, written atomically after every
// state change. The IDs of created resources are recorded before any wait
// on them, so a run killed at any point resumes without creating twins.
type Journal struct {
	Version  int       `json:"version"`
	Plan     string    `json:"plan"`
	PlanHash string    `json:"plan_hash"`
	PlanID   string    `json:"plan_id"`
	RunID    string    `json:"run_id"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	Status   string    `json:"status"`
	// Seq counts the journal's writes, over every run of the plan.
	Seq   int          `json:"seq"`
	Swaps []*SwapState `json:"swaps"`

	path string
	// saves counts this process's writes (for Runner.AfterSave).
	saves int
}

// SwapState is one swap's progress.
type SwapState struct {
	Index  int    `json:"index"`
	Status string `json:"status"`
	// Done lists completed steps and cutover sub-steps, in order.
	Done  []string            `json:"done"`
	Steps map[string]*StepLog `json:"steps"`

	SourceID   string `json:"source_id,omitempty"`
	SourceName string `json:"source_name,omitempty"`
	SourceIP   string `json:"source_ip,omitempty"`
	ImageName  string `json:"image_name,omitempty"`
	SnapshotOp string `json:"snapshot_op,omitempty"`
	ImageID    string `json:"image_id,omitempty"`
	LaunchName string `json:"launch_name,omitempty"`
	Token      string `json:"launch_token,omitempty"`
	NewID      string `json:"new_id,omitempty"`
	NewName    string `json:"new_name,omitempty"`
	NewIP      string `json:"new_ip,omitempty"`

	OldValues   []string  `json:"old_values,omitempty"`
	OldTTL      int       `json:"old_ttl,omitempty"`
	OldAssignee string    `json:"old_assignee,omitempty"`
	DrainUntil  time.Time `json:"drain_until,omitempty"`
	ObserveFrom time.Time `json:"observe_from,omitempty"`
	KeepUntil   time.Time `json:"keep_until,omitempty"`

	Checks []CheckResult  `json:"checks,omitempty"`
	Probe  *probe.Summary `json:"probe,omitempty"`
	Error  string         `json:"error,omitempty"`
	Left   []string       `json:"left,omitempty"` // resources left behind
}

// StepLog is when a step ran.
type StepLog struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitempty"`
	// Status is running, ok, failed or skipped.
	Status string `json:"status"`
}

// CheckResult is one verification check.
type CheckResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// has reports whether a step or sub-step is done.
func (s *SwapState) has(step string) bool { return slices.Contains(s.Done, step) }

// JournalPath is where a plan's journal lives: beside it.
func JournalPath(planFile string) string { return planFile + ".journal.json" }

// LockPath is where a plan's lock lives: beside the journal.
func LockPath(planFile string) string { return planFile + ".lock" }

// LoadJournal reads a journal; (nil, nil) if there is none.
func LoadJournal(path string) (*Journal, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	var j Journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("journal %s is damaged (%v): move it aside to start over, after checking what the run created", path, err)
	}
	if j.Version != JournalVersion {
		return nil, fmt.Errorf("journal %s has format version %d; this vmswap reads %d", path, j.Version, JournalVersion)
	}
	j.path = path
	return &j, nil
}

// Save writes the journal atomically: a temporary file, fsync, rename, and
// an fsync of the directory so the rename itself survives a crash.
func (j *Journal) Save() error {
	j.Updated = time.Now().UTC()
	j.Seq++
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(j.path, b); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	j.saves++
	return nil
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

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

// LockedError is returned when another run holds the lock.
type LockedError struct {
	Path  string
	Info  LockInfo
	Stale bool // the holding process is gone
}

func (e *LockedError) Error() string {
	if e.Stale {
		return fmt.Sprintf("lock %s is held by %s, which is no longer running: if no other vmswap works on this plan, run again with --break-lock", e.Path, e.Info)
	}
	return fmt.Sprintf("another vmswap is applying this plan: %s holds %s", e.Info, e.Path)
}

// Lock is a held lock file.
type Lock struct{ path string }

// AcquireLock creates the lock file exclusively. A lock held by a live
// process, or by a dead one without breakStale, is a *LockedError; a stale
// lock is only broken when asked.
func AcquireLock(path, command string, breakStale bool) (*Lock, error) {
	host, _ := os.Hostname()
	info := LockInfo{Host: host, PID: os.Getpid(), Started: time.Now().UTC(), Command: command}
	b, _ := json.Marshal(info)
	for attempt := 0; attempt < 2; attempt++ {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			_, werr := f.Write(b)
			serr := f.Sync()
			f.Close()
			if werr != nil || serr != nil {
				os.Remove(path)
				return nil, fmt.Errorf("lock %s: %v", path, errors.Join(werr, serr))
			}
			return &Lock{path: path}, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var held LockInfo
		raw, rerr := os.ReadFile(path)
		if rerr == nil {
			json.Unmarshal(raw, &held)
		}
		stale := held.Host == host && !processAlive(held.PID)
		if !stale || !breakStale {
			return nil, &LockedError{Path: path, Info: held, Stale: stale}
		}
		os.Remove(path)
	}
	return nil, fmt.Errorf("lock %s: could not acquire", path)
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err == nil || errors.Is(err, syscall.EPERM) {
		// A zombie still answers kill(0); check its state.
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
			if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
				return false
			}
		}
		return true
	}
	return false
}

// Release removes the lock.
func (l *Lock) Release() error {
	if l == nil {
		return nil
	}
	return os.Remove(l.path)
}

// NextRun starts a new run of doc after old ended without finishing (rolled
// back, or refused in preflight). Swaps old completed stay completed: a
// plan's later swap failing does not make its earlier ones run again.
func NextRun(old *Journal, path string, doc *Document, runID string) *Journal {
	j := NewJournal(path, doc, runID)
	if old == nil {
		return j
	}
	for i, st := range old.Swaps {
		if i < len(j.Swaps) && (st.Status == StatusSucceeded || st.Status == StatusReverted) {
			j.Swaps[i] = st
		}
	}
	return j
}
