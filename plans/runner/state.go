package runner

import (
	"fmt"
	"strings"
)

// State is where a run, or one swap of it, stands. A plan's runs form one
// state machine; Decide says what every command does in every state.
type State string

// The states of a run and of a swap. pending is a swap's only.
const (
	StatusPending State = "pending"
	// StatusRunning: a process is applying the run (it holds the lock). A
	// journal that says running with no process holding the lock is a run
	// that was killed: it is treated as interrupted.
	StatusRunning State = "running"
	// StatusInterrupted: stopped part-way (Ctrl-C, SIGTERM); nothing was
	// rolled back.
	StatusInterrupted State = "interrupted"
	// StatusSucceeded: every swap finished; the old servers are retired.
	StatusSucceeded State = "succeeded"
	// StatusRolledBack: a swap failed and was undone; the source serves.
	StatusRolledBack State = "rolled_back"
	// StatusRefused: preflight refused the plan; nothing was changed.
	StatusRefused State = "refused"
	// StatusReverted: `vmswap rollback` switched a finished run back.
	StatusReverted State = "reverted"
	// StatusPaused: the run stopped for a person's decision (exit 4);
	// `vmswap apply --continue` goes on.
	StatusPaused State = "paused"
	// StatusNeedsAttention: something the run or its rollback had to do did
	// not happen; the journal's next step says what to run.
	StatusNeedsAttention State = "needs_attention"
)

// States lists every run state, for tables and tests.
var States = []State{StatusRunning, StatusInterrupted, StatusPaused, StatusSucceeded, StatusRolledBack, StatusRefused, StatusReverted, StatusNeedsAttention}

// Finished reports whether a run in this state has nothing left to do or
// undo before another run may start.
func (s State) Finished() bool {
	switch s {
	case StatusSucceeded, StatusRolledBack, StatusRefused, StatusReverted:
		return true
	}
	return false
}

// Command is what a user asks of a plan's runs.
type Command string

// Commands that act on a plan's runs.
const (
	CmdApply    Command = "apply"
	CmdFinish   Command = "apply --finish"
	CmdContinue Command = "apply --continue"
	CmdRollback Command = "rollback"
	CmdCleanup  Command = "cleanup"
	CmdReplan   Command = "plan -o" // writing a new plan over the file
)

// Commands lists every command, for tables and tests.
var Commands = []Command{CmdApply, CmdFinish, CmdContinue, CmdRollback, CmdCleanup, CmdReplan}

// Action is what a command does with the journal's last run.
type Action string

// Actions.
const (
	// ActStart starts a new run of the plan file (a new run ID, a fresh
	// snapshot of what serves now), keeping the swaps a rolled-back run of
	// the same plan completed.
	ActStart Action = "start a new run"
	// ActResume continues the last run from its journal, with the plan that
	// run recorded.
	ActResume Action = "resume the run"
	// ActUndo rolls back what the last run did, with the plan it recorded:
	// partial swaps are undone, finished ones switched back.
	ActUndo Action = "undo the run"
	// ActNothing changes nothing and succeeds: there is nothing to do.
	ActNothing Action = "nothing to do"
	// ActRefuse changes nothing and fails (exit 2), saying what to run.
	ActRefuse Action = "refuse"
	// ActProceed lets the command do its own work (cleanup's search, a plan
	// written over the file).
	ActProceed Action = "proceed"
)

// Decision is a command's effect on the last run.
type Decision struct {
	Action Action
	// Why says, for ActNothing and ActRefuse, what the user sees.
	Why string
}

// Decide is the one place that says what a command does in each state of a
// plan's last run. last is nil when the plan was never applied; planChanged
// is whether the plan file differs from the plan that run recorded. file is
// the plan file as the user named it, for the messages.
func Decide(cmd Command, last *Journal, planChanged bool, file string) Decision {
	if last == nil {
		switch cmd {
		case CmdApply:
			return Decision{Action: ActStart}
		case CmdFinish, CmdContinue:
			// Nothing unfinished: a CI job that finishes whatever a killed
			// job left runs this every time.
			return Decision{ActNothing, fmt.Sprintf("%s has no run to %s (it was never applied): nothing to do", file, strings.TrimPrefix(string(cmd), "apply --"))}
		case CmdRollback:
			return Decision{ActRefuse, fmt.Sprintf("%s has not been applied: nothing to roll back", file)}
		}
		return Decision{Action: ActProceed}
	}
	st, run := last.Status, last.RunID
	unfinished := !st.Finished()
	switch cmd {
	case CmdApply, CmdFinish, CmdContinue:
		switch {
		case st != StatusReverted && last.RollbackOwed():
			return Decision{ActRefuse, fmt.Sprintf("the rollback of run %s did not finish: finish it with `vmswap rollback %s`", run, file)}
		case st == StatusPaused && cmd != CmdContinue:
			return Decision{ActRefuse, fmt.Sprintf("run %s of %s is paused for a decision (see `vmswap status %s`): go on with `vmswap apply --continue %s`, or switch back with `vmswap rollback %s`", run, file, file, file, file)}
		case unfinished && planChanged && cmd == CmdApply:
			return Decision{ActRefuse, fmt.Sprintf("%s changed since run %s (%s) started: finish that run with the plan it recorded (`vmswap apply --finish %s`) or undo it (`vmswap rollback %s`), then apply the new plan", file, run, st, file, file)}
		case unfinished:
			return Decision{Action: ActResume}
		case cmd == CmdFinish || cmd == CmdContinue:
			return Decision{ActNothing, fmt.Sprintf("run %s of %s is %s: nothing to %s", run, file, st, strings.TrimPrefix(string(cmd), "apply --"))}
		case st == StatusSucceeded && !planChanged:
			return Decision{ActNothing, fmt.Sprintf("%s was already applied (run %s succeeded); nothing to do", file, run)}
		}
		return Decision{Action: ActStart}
	case CmdRollback:
		switch st {
		case StatusRefused:
			return Decision{ActNothing, fmt.Sprintf("run %s of %s was refused in preflight and changed nothing: nothing to roll back", run, file)}
		case StatusReverted:
			return Decision{ActNothing, fmt.Sprintf("run %s of %s was already rolled back: nothing to roll back", run, file)}
		}
		return Decision{Action: ActUndo}
	case CmdCleanup:
		// A run that needs attention may have left what only cleanup
		// removes; what it still serves from is never an orphan.
		if st == StatusPaused {
			return Decision{ActRefuse, fmt.Sprintf("run %s of %s is paused for a decision and owns what it created: go on with `vmswap apply --continue %s` or undo it (`vmswap rollback %s`) first", run, file, file, file)}
		}
		if st == StatusRunning || st == StatusInterrupted {
			return Decision{ActRefuse, fmt.Sprintf("run %s of %s is %s and owns what it created: finish it (`vmswap apply --finish %s`) or undo it (`vmswap rollback %s`) first", run, file, st, file, file)}
		}
		return Decision{Action: ActProceed}
	case CmdReplan:
		if unfinished {
			return Decision{ActRefuse, fmt.Sprintf("%s has an unfinished run (%s, %s): finish it (`vmswap apply --finish %s`) or undo it (`vmswap rollback %s`) before writing a new plan over it, or write the new plan to another file", file, run, st, file, file)}
		}
		return Decision{Action: ActProceed}
	}
	return Decision{ActRefuse, fmt.Sprintf("unknown command %q", cmd)}
}
