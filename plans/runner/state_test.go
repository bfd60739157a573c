package runner

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify"
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
			CmdApply: {ActStart, ""}, CmdFinish: {ActNothing, "no run to finish"}, CmdContinue: {ActNothing, "no run to continue"}, CmdRollback: {ActRefuse, "nothing to roll back"},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
		StatusRunning: {
			CmdApply: {ActResume, ""}, CmdFinish: {ActResume, ""}, CmdContinue: {ActResume, ""}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActRefuse, "owns what it created"}, CmdReplan: {ActRefuse, "unfinished run"}},
		StatusInterrupted: {
			CmdApply: {ActResume, ""}, CmdFinish: {ActResume, ""}, CmdContinue: {ActResume, ""}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActRefuse, "owns what it created"}, CmdReplan: {ActRefuse, "unfinished run"}},
		StatusPaused: {
			CmdApply: {ActRefuse, "apply --continue"}, CmdFinish: {ActRefuse, "apply --continue"}, CmdContinue: {ActResume, ""}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActRefuse, "owns what it created"}, CmdReplan: {ActRefuse, "unfinished run"}},
		StatusNeedsAttention: {
			CmdApply: {ActResume, ""}, CmdFinish: {ActResume, ""}, CmdContinue: {ActResume, ""}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActRefuse, "unfinished run"}},
		StatusSucceeded: {
			CmdApply: {ActNothing, "already applied"}, CmdFinish: {ActNothing, "nothing to finish"}, CmdContinue: {ActNothing, "nothing to continue"}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
		StatusRolledBack: {
			CmdApply: {ActStart, ""}, CmdFinish: {ActNothing, "nothing to finish"}, CmdContinue: {ActNothing, "nothing to continue"}, CmdRollback: {ActUndo, ""},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
		StatusRefused: {
			CmdApply: {ActStart, ""}, CmdFinish: {ActNothing, "nothing to finish"}, CmdContinue: {ActNothing, "nothing to continue"}, CmdRollback: {ActNothing, "changed nothing"},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
		StatusReverted: {
			CmdApply: {ActStart, ""}, CmdFinish: {ActNothing, "nothing to finish"}, CmdContinue: {ActNothing, "nothing to continue"}, CmdRollback: {ActNothing, "already rolled back"},
			CmdCleanup: {ActProceed, ""}, CmdReplan: {ActProceed, ""}},
	}
	changed := map[State]map[Command]want{
		StatusRunning:        {CmdApply: {ActRefuse, "apply --finish"}},
		StatusInterrupted:    {CmdApply: {ActRefuse, "apply --finish"}},
		StatusNeedsAttention: {CmdApply: {ActRefuse, "apply --finish"}},
		StatusPaused:         {CmdApply: {ActRefuse, "apply --continue"}},
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
	// A rollback whose process was killed: the run still says running (or,
	// for a finished run being switched back, succeeded). apply must not
	// resume the swap — it would finish an upgrade that failed — nor call
	// the run done.
	for _, tc := range []struct{ run, swap State }{{StatusRunning, StatusRunning}, {StatusInterrupted, StatusInterrupted}, {StatusSucceeded, StatusSucceeded}} {
		killed := &Journal{RunID: "r1", Status: tc.run, Swaps: []*SwapState{{Status: tc.swap, Steps: map[string]*StepLog{"rollback": {Status: "running"}}}}}
		if got := Decide(CmdApply, killed, false, "w.yaml"); got.Action != ActRefuse || !strings.Contains(got.Why, "vmswap rollback w.yaml") {
			t.Errorf("apply after a rollback killed in a %s run: %+v", tc.run, got)
		}
		if got := Decide(CmdRollback, killed, false, "w.yaml"); got.Action != ActUndo {
			t.Errorf("rollback after a rollback killed in a %s run: %+v", tc.run, got)
		}
	}
	done := &Journal{RunID: "r1", Status: StatusRolledBack, Swaps: []*SwapState{{Status: StatusRolledBack, Steps: map[string]*StepLog{"rollback": {Status: "ok"}}}}}
	if got := Decide(CmdApply, done, false, "w.yaml"); got.Action != ActStart {
		t.Errorf("apply after a finished rollback: %+v", got)
	}
}

// TestSizeProblems: what plan and preflight refuse about a target size.
func TestSizeProblems(t *testing.T) {
	src := &provider.Server{Name: "web-1", Size: "m5.large", DiskGB: 20, MemoryMB: 8192, VCPUs: 2, PublicIPv6: "2001:db8::5"}
	dnsSwap := plans.Swap{Cutover: plans.Cutover{DNS: &plans.DNSCutover{Record: "www.example.com"}}}
	mem, _ := verify.ParseThreshold(">= 64GiB")
	big := plans.Swap{Verify: plans.Verify{Memory: &mem}}
	var warned []string
	warn := func(f string, a ...any) { warned = append(warned, fmt.Sprintf(f, a...)) }
	for _, tc := range []struct {
		desc string
		sw   plans.Swap
		size provider.Size
		want string
	}{
		{"the source's own size", plans.Swap{}, provider.Size{Slug: "m5.large", DiskGB: 20}, "already m5.large"},
		{"a smaller disk", plans.Swap{}, provider.Size{Slug: "m5.xlarge", DiskGB: 10}, "smaller than web-1's 20 GB"},
		{"a threshold it cannot meet", big, provider.Size{Slug: "m5.xlarge", DiskGB: 20, MemoryMB: 16384}, "can never pass the check memory >= 64GiB"},
		{"no IPv6 for a dual-stack source", dnsSwap, provider.Size{Slug: "c1.xlarge", DiskGB: 20, MemoryMB: 16384, NoIPv6: true}, "cannot have an IPv6 address"},
		{"a good size", dnsSwap, provider.Size{Slug: "m5.xlarge", DiskGB: 20, MemoryMB: 16384, VCPUs: 4}, ""},
	} {
		got := strings.Join(sizeProblems(tc.sw, src, &tc.size, warn, nil), "\n")
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.desc, got, tc.want)
		}
	}
	warned = nil
	sizeProblems(plans.Swap{}, src, &provider.Size{Slug: "m5.medium", DiskGB: 20, MemoryMB: 4096, VCPUs: 2}, warn, nil)
	if len(warned) != 1 || !strings.Contains(warned[0], "downsize") {
		t.Fatalf("a downsize: %q", warned)
	}
}

func TestLooksLikeSecret(t *testing.T) {
	for s, want := range map[string]bool{
		"DIGITALOCEAN_TOKEN": false, "DO_TOKEN_PROD": false, "MY_COMPANY_PRODUCTION_DIGITALOCEAN_TOKEN": false, "CLOUDFLARE_API_TOKEN": false,
		"dop_v1_4f3a9c2b": true, "GHP_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab": true, "4f3a9c2b4f3a9c2b4f3a9c2b": true, "lab-9f8e7d6c5b4a39281706": true,
		"aB3dE5gH7jK9mN1pQ3sT5vX7": true,
	} {
		if got := plans.LooksLikeSecret(s); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
}

// TestShortRunID: what a run makes is named after the start of its ID, and
// an ID shorter than that start (a journal written by hand, an older
// version) names it whole instead of stopping the run with a panic.
func TestShortRunID(t *testing.T) {
	for id, want := range map[string]string{"3fa9c2d1e0b4": "3fa9c2", "run42": "run42", "abcdef": "abcdef"} {
		if got := (&Journal{RunID: id}).ShortRunID(); got != want {
			t.Errorf("ShortRunID of %q = %q, want %q", id, got, want)
		}
	}
}
