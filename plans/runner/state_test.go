package runner

import (
	"strings"
	"testing"
)

// TestDecideEveryStateAndCommand pins what every command does in every
// state of a plan's last run: one row per (state, command) pair, and the
// plan file changed or not.
func TestDecideEveryStateAndCommand(t *testing.T) {
	type want struct {
		act  Action
		text string // in Why
	}
	// rows[state][command] with the plan file unchanged; changed lists the
	// pairs whose answer differs when the file changed since the run.
	rows := map[State]map[Command]want{
		"": { // never applied
			CmdApply: {ActStart, ""}, CmdFinish: {ActRefuse, "no run to finish"}, CmdRollback: {ActRefuse, "nothing to roll back"},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
		StatusRunning: {
			CmdApply: {ActResume, ""}, CmdFinish: {ActResume, ""}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActRefuse, "owns what it created"}, CmdReplan: {ActRefuse, "unfinished run"}},
		StatusInterrupted: {
			CmdApply: {ActResume, ""}, CmdFinish: {ActResume, ""}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActRefuse, "owns what it created"}, CmdReplan: {ActRefuse, "unfinished run"}},
		StatusNeedsAttention: {
			CmdApply: {ActResume, ""}, CmdFinish: {ActResume, ""}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActRefuse, "unfinished run"}},
		StatusSucceeded: {
			CmdApply: {ActNothing, "already applied"}, CmdFinish: {ActNothing, "nothing to finish"}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
		StatusRolledBack: {
			CmdApply: {ActStart, ""}, CmdFinish: {ActNothing, "nothing to finish"}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
		StatusRefused: {
			CmdApply: {ActStart, ""}, CmdFinish: {ActNothing, "nothing to finish"}, CmdRollback: {ActNothing, "changed nothing"},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
		StatusReverted: {
			CmdApply: {ActStart, ""}, CmdFinish: {ActNothing, "nothing to finish"}, CmdRollback: {ActNothing, "already rolled back"},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
	}
	changed := map[State]map[Command]want{
		StatusRunning:        {CmdApply: {ActRefuse, "apply --finish"}},
		StatusInterrupted:    {CmdApply: {ActRefuse, "apply --finish"}},
		StatusNeedsAttention: {CmdApply: {ActRefuse, "apply --finish"}},
		StatusSucceeded:      {CmdApply: {ActStart, ""}},
	}
	if len(rows) != len(States)+1 {
		t.Fatalf("the table covers %d states, want %d and none", len(rows)-1, len(States))
	}
	for _, planChanged := range []bool{false, true} {
		for state, cmds := range rows {
			if len(cmds) != len(Commands) {
				t.Fatalf("state %q covers %d commands, want %d", state, len(cmds), len(Commands))
			}
			for _, cmd := range Commands {
				w := cmds[cmd]
				if c, ok := changed[state][cmd]; ok && planChanged {
					w = c
				}
				var last *Journal
				if state != "" {
					last = &Journal{RunID: "r1", Status: state}
				} else if planChanged {
					continue // no run: nothing to have changed against
				}
				got := Decide(cmd, last, planChanged, "w.yaml")
				if got.Action != w.act || !strings.Contains(got.Why, w.text) {
					t.Errorf("%s after a %q run (plan changed: %v): got %q %q, want %q containing %q", cmd, state, planChanged, got.Action, got.Why, w.act, w.text)
				}
				if (got.Action == ActRefuse || got.Action == ActNothing) && got.Why == "" {
					t.Errorf("%s after a %q run: %s without saying why", cmd, state, got.Action)
				}
			}
		}
	}
	// A rollback that did not finish is only rollback's to go on with.
	owed := &Journal{RunID: "r1", Status: StatusNeedsAttention, Swaps: []*SwapState{{Status: StatusNeedsAttention, Steps: map[string]*StepLog{"rollback": {Status: "failed"}}}}}
	for _, cmd := range []Command{CmdApply, CmdFinish} {
		if got := Decide(cmd, owed, false, "w.yaml"); got.Action != ActRefuse || !strings.Contains(got.Why, "vmswap rollback w.yaml") {
			t.Errorf("%s with a rollback owed: %+v", cmd, got)
		}
	}
	if got := Decide(CmdRollback, owed, false, "w.yaml"); got.Action != ActUndo {
		t.Errorf("rollback with a rollback owed: %+v", got)
	}
}
