package runner

import (
	"os"

	"github.com/vmswap/vmswap/plans"
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
}

// Close releases the lock.
func (s *Session) Close() error { return s.Lock.Release() }

// OpenSession loads a plan file's journal under its lock and decides what
// cmd does. newRunID names a new run. A plan file that does not load is an
// error for commands that start runs; finishing or undoing a run uses the
// plan that run recorded, so they work even if the file was rewritten or
// removed.
func OpenSession(file string, cmd Command, breakLock bool, newRunID func() string) (*Session, error) {
	fileDoc, ferr := plans.Load(file)
	if ferr != nil {
		if _, err := os.Stat(JournalPath(file)); err != nil || cmd == CmdApply || cmd == CmdCleanup || cmd == CmdReplan {
			return nil, ferr
		}
	}
	lock, err := AcquireLock(LockPath(file), string(cmd)+" "+file, breakLock)
	if err != nil {
		return nil, err
	}
	s := &Session{File: file, Lock: lock}
	fail := func(err error) (*Session, error) {
		lock.Release()
		return nil, err
	}
	jpath := JournalPath(file)
	j, err := LoadJournal(jpath)
	if err != nil {
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
	s.Decision = Decide(cmd, j, changed, file)
	switch s.Decision.Action {
	case ActStart:
		s.Doc = fileDoc
		s.Journal = NextRun(j, jpath, fileDoc, newRunID())
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
		lock.Release()
		s.Lock = nil
	}
	return s, nil
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
	j, err := LoadJournal(JournalPath(file))
	if err != nil {
		return err
	}
	if j != nil && j.Status == StatusRunning && !LockHeld(LockPath(file)) {
		j.Status = StatusInterrupted
	}
	return Decide(CmdReplan, j, false, file).Refusal()
}
