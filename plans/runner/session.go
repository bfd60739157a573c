package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/state"
)

// Session is what a command acting on a plan file's runs holds: the plan to
// run or undo, the journal, the lock, and what Decide said to do. It is the
// one owner of what a journal means for a command: apply, apply --finish,
// rollback, cleanup and upgrade all open one.
type Session struct {
	// File is the plan file as the user named it.
	File string
	// Doc is the plan to act on: the file's for a new run, the one the last
	// run recorded for a resume or an undo.
	Doc *plans.Document
	// Journal is the run to act on: a new one for ActStart; nil when the plan
	// was never applied and the command starts nothing.
	Journal  *Journal
	Lock     *Lock
	Decision Decision
	// PlanChanged is whether the plan file differs from the plan the last
	// run recorded (a resume goes on with the recorded one).
	PlanChanged bool

	// remoteLock and remote are the plan's remote state, when it has one.
	remoteLock *state.Lock
	remote     *remoteCopy
}

// Close releases the locks.
func (s *Session) Close() error {
	err := s.remoteLock.Release()
	return errors.Join(s.Lock.Release(), err)
}

// SessionOptions are how a command opens a session.
type SessionOptions struct {
	// BreakLock takes over a remote lock whose lease still runs.
	BreakLock bool
	// NewRunID names a new run.
	NewRunID func() string
	// Getenv reads the credentials of remote state. Nil: os.Getenv.
	Getenv func(string) string
	// Note receives lines worth telling the user (a lock taken over).
	Note func(string)
}

// OpenSession is OpenSessionWith the process's environment.
func OpenSession(file string, cmd Command, breakLock bool, newRunID func() string) (*Session, error) {
	return OpenSessionWith(file, cmd, SessionOptions{BreakLock: breakLock, NewRunID: newRunID})
}

// OpenSessionWith loads a plan file's journal under its lock and decides
// what cmd does. A plan file that does not load is an error for commands
// that start runs; finishing or undoing a run uses the plan that run
// recorded, so they work even if the file was rewritten or removed. A plan
// whose state is remote (state: s3) is locked and read there, so that a
// run started on one machine is seen, and resumed, from any other.
func OpenSessionWith(file string, cmd Command, o SessionOptions) (*Session, error) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	fileDoc, ferr := plans.Load(file)
	if ferr != nil {
		if _, err := os.Stat(JournalPath(file)); err != nil || cmd == CmdApply || cmd == CmdCleanup || cmd == CmdReplan {
			return nil, ferr
		}
	}
	lock, err := AcquireLock(LockPath(file), string(cmd)+" "+file, o.BreakLock)
	if err != nil {
		return nil, err
	}
	s := &Session{File: file, Lock: lock}
	fail := func(err error) (*Session, error) {
		s.Close()
		return nil, err
	}
	jpath := JournalPath(file)
	var j *Journal
	if fileDoc != nil && fileDoc.Plan.State != nil {
		if j, err = s.openRemote(fileDoc, cmd, jpath, o); err != nil {
			return fail(err)
		}
	} else if j, err = LoadJournal(jpath); err != nil {
		return fail(err)
	}
	if j != nil && j.Status == StatusRunning {
		// We hold the lock, so the process that wrote "running" is gone.
		j.Status = StatusInterrupted
	}
	if j == nil && ferr != nil {
		return fail(ferr)
	}
	changed := j != nil && fileDoc != nil && j.PlanHash != fileDoc.Hash()
	s.PlanChanged = changed
	s.Decision = Decide(cmd, j, changed, file)
	switch s.Decision.Action {
	case ActStart:
		s.Doc = fileDoc
		s.Journal = NextRun(j, jpath, fileDoc, o.NewRunID())
		if s.remote != nil {
			s.Journal.remote = s.remote
		}
	case ActResume, ActUndo:
		s.Journal = j
		if s.Doc, err = j.Doc(); err != nil {
			if fileDoc == nil || changed {
				return fail(err)
			}
			s.Doc = fileDoc // a version 1 journal of this very plan
		}
	case ActProceed:
		s.Doc, s.Journal = fileDoc, j
	default:
		s.Journal = j
		s.Close()
		s.Lock, s.remoteLock = nil, nil
	}
	return s, nil
}

// openRemote takes the plan's remote lock and reads its journal there; the
// local file becomes a copy of it. A plan with no journal there yet starts
// from the local one, if any: the first save puts it there.
func (s *Session) openRemote(doc *plans.Document, cmd Command, jpath string, o SessionOptions) (*Journal, error) {
	cfg := doc.Plan.State.S3
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	unavailable := func(err error) error {
		var le *state.LockedError
		if errors.As(err, &le) || errors.Is(err, state.ErrConflict) {
			return err
		}
		return fmt.Errorf("%w: %w", state.ErrUnavailable, err)
	}
	st, err := state.Open(ctx, cfg, doc.PlanID(), o.Getenv)
	if err != nil {
		return nil, unavailable(err)
	}
	lease := orDur(cfg.Lease, 2*time.Minute)
	if s.remoteLock, err = st.AcquireLock(ctx, string(cmd)+" "+s.File, "", state.CIJob(o.Getenv), lease, o.BreakLock, o.Note); err != nil {
		return nil, unavailable(err)
	}
	raw, etag, err := st.Read(ctx, journalObject)
	if err != nil {
		return nil, unavailable(err)
	}
	s.remote = &remoteCopy{s: st, etag: etag}
	if raw == nil {
		j, err := LoadJournal(jpath)
		if j != nil {
			j.remote = s.remote
		}
		return j, err
	}
	j, err := parseJournal(raw, st.Where(journalObject))
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(jpath, raw); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j.path, j.remote = jpath, s.remote
	return j, nil
}

// RefusedError is a Decision to refuse, as an error.
type RefusedError struct{ Why string }

func (e *RefusedError) Error() string { return e.Why }

// Refusal returns the decision as an error when it refuses, else nil.
func (d Decision) Refusal() error {
	if d.Action == ActRefuse {
		return &RefusedError{Why: d.Why}
	}
	return nil
}

// CheckReplan refuses to write a new plan over file while a run of the plan
// in it is unfinished (running, interrupted, needing attention).
func CheckReplan(file string) error {
	j, _, remote, err := RemoteStatus(file, os.Getenv)
	if !remote {
		j, err = LoadJournal(JournalPath(file))
	}
	if err != nil {
		return err
	}
	if j != nil && j.Status == StatusRunning && !LockHeld(LockPath(file)) {
		j.Status = StatusInterrupted
	}
	return Decide(CmdReplan, j, false, file).Refusal()
}

// RemoteStatus reads, without taking any lock, the journal and the lock of
// a plan whose state is remote: what `vmswap status` shows from any machine.
// ok is false for a plan with local state.
func RemoteStatus(file string, getenv func(string) string) (j *Journal, lock *state.LockInfo, ok bool, err error) {
	doc, err := plans.Load(file)
	if err != nil || doc.Plan.State == nil {
		return nil, nil, false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := state.Open(ctx, doc.Plan.State.S3, doc.PlanID(), getenv)
	if err != nil {
		return nil, nil, true, err
	}
	raw, _, err := st.Read(ctx, journalObject)
	if err != nil || raw == nil {
		return nil, nil, true, err
	}
	if j, err = parseJournal(raw, st.Where(journalObject)); err != nil {
		return nil, nil, true, err
	}
	j.path = st.Where(journalObject)
	lock, err = st.ReadLock(ctx)
	return j, lock, true, err
}
