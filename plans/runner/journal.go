package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/state"
	"github.com/vmswap/vmswap/verify/carry"
	"github.com/vmswap/vmswap/verify/probe"
)

// JournalVersion is the journal format; version 1 journals are read and
// converted, other versions are refused.
const JournalVersion = 2

// Journal is the state of a plan file's runs: the last run in full, and a
// line for each run before it. The IDs of created resources are recorded
// before any wait on them, and every mutating call is recorded as intent
// before it is made, so a run killed at any point resumes or rolls back
// without creating twins or forgetting a change.
type Journal struct {
	Version  int    `json:"version"`
	Plan     string `json:"plan"`
	PlanHash string `json:"plan_hash"`
	PlanID   string `json:"plan_id"`
	// PlanText is the plan this run executes, as it was read: finishing or
	// undoing the run never depends on the plan file as it is now.
	PlanText string    `json:"plan_text"`
	RunID    string    `json:"run_id"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	Status   State     `json:"status"`
	// Seq counts the journal's writes, over every run of the plan.
	Seq   int          `json:"seq"`
	Swaps []*SwapState `json:"swaps"`
	// History holds the plan file's earlier runs, oldest first.
	History []RunRecord `json:"history,omitempty"`
	// Wave is the wave a fleet run is in (1-based), and GatesPassed the
	// strategy gates apply --continue went past ("after wave 1").
	Wave        int      `json:"wave,omitempty"`
	GatesPassed []string `json:"gates_passed,omitempty"`
	// Gate is the strategy gate the run is paused at, if any.
	Gate string `json:"gate,omitempty"`

	// mu serializes writes. While a wave's swaps run at once, each writes
	// only its own SwapState, and hands the journal a copy (snaps) to
	// write: no goroutine reads a state another one is changing.
	mu    *sync.Mutex // see lock
	snaps map[int]json.RawMessage

	path   string
	remote *remoteCopy
	// prev is the run this one followed, until this one changes anything.
	prev *Journal
	// saves counts this process's writes (for Runner.AfterSave).
	saves int
	// clock stamps Updated (the runner's clock).
	clock func() time.Time
}

// RunRecord is an earlier run of a plan file, kept so that cleanup sees
// what every run created and status can tell the story.
type RunRecord struct {
	RunID    string    `json:"run_id"`
	PlanID   string    `json:"plan_id"`
	PlanHash string    `json:"plan_hash"`
	Status   State     `json:"status"`
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended"`
}

// SwapState is one swap's progress.
type SwapState struct {
	Index  int   `json:"index"`
	Status State `json:"status"`
	// Done lists completed steps and cutover sub-steps, in order.
	Done []string `json:"done"`
	// Intents lists the mutating sub-steps whose call was made (or was
	// about to be): a rollback undoes each, whether or not it completed.
	Intents []string            `json:"intents,omitempty"`
	Steps   map[string]*StepLog `json:"steps"`

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
	// HeldTags are source tags that other load balancers select members by:
	// the new server is launched without them and tagged at cutover.
	HeldTags []string `json:"held_tags,omitempty"`
	// Claim is the claim this run put on the source and the new server.
	Claim string `json:"claim,omitempty"`
	// LaunchForgotten is set once the launch's marker (DigitalOcean: its
	// tag) was removed, when the swap ended.
	LaunchForgotten bool `json:"launch_forgotten,omitempty"`

	OldValues []string `json:"old_values,omitempty"`
	OldTTL    int      `json:"old_ttl,omitempty"`
	// OtherValues and OtherTTL are a dual-stack name's set of the other
	// type before the cutover (nil: it does not point at the source).
	OtherValues []string  `json:"other_values,omitempty"`
	OtherTTL    int       `json:"other_ttl,omitempty"`
	SourceIPv6  string    `json:"source_ipv6,omitempty"`
	NewIPv6     string    `json:"new_ipv6,omitempty"`
	OldAssignee string    `json:"old_assignee,omitempty"`
	KeepUntil   time.Time `json:"keep_until,omitempty"`
	// TrafficBack is set once a rollback knows traffic is on the source (it
	// moved it back, or it never left): from then on what the run created
	// serves nothing and is cleanup's to delete.
	TrafficBack bool `json:"traffic_back,omitempty"`
	// TrafficBackAt is when the rollback moved traffic back: a rollback
	// resumed after a kill keeps the new server up for what is left of its
	// hold (cached DNS answers still reach it), not none of it.
	TrafficBackAt time.Time `json:"traffic_back_at,omitempty"`
	// SourceGone is set when retire found the source already deleted (by
	// someone else): there is nothing to power off, keep or rename.
	SourceGone bool `json:"source_gone,omitempty"`
	// NewGone is set when a switch back found the new server deleted (by
	// someone else): traffic goes back to the source all the same, and
	// there is nothing to rename, carry back, drain or retire.
	NewGone bool `json:"new_gone,omitempty"`

	// SourceClock is the source's own clock (unix seconds) just before its
	// snapshot: what it wrote after is what carry passes and the divergence
	// report look for.
	SourceClock int64             `json:"source_clock,omitempty"`
	Passes      []PassRecord      `json:"passes,omitempty"`
	Divergence  *carry.Divergence `json:"divergence,omitempty"`
	Hooks       []HookRun         `json:"hooks,omitempty"`
	// SourceDeleted: cleanup --expired deleted the kept source.
	SourceDeleted bool `json:"source_deleted,omitempty"`
	// Paused is why the swap waits for a decision (divergence, delete).
	Paused string `json:"paused,omitempty"`

	Checks []CheckResult  `json:"checks,omitempty"`
	Probe  *probe.Summary `json:"probe,omitempty"`
	Error  string         `json:"error,omitempty"`
	Left   []string       `json:"left,omitempty"` // resources left behind
	// Warnings are what the swap does not fix and the user must know, such
	// as another way in to the source that retiring it cuts off.
	Warnings []string `json:"warnings,omitempty"`
}

// SourceNameOr is the source's name as preflight read it, or ref.
func (s *SwapState) SourceNameOr(ref string) string {
	if s.SourceName != "" {
		return s.SourceName
	}
	return ref
}

// cutoverStarted reports whether any cutover call was made or attempted
// (hooks, carry passes and renames are intents too, but move no traffic).
func (s *SwapState) cutoverStarted() bool {
	for _, i := range s.Intents {
		if slices.Contains(cutoverSubs, i) {
			return true
		}
	}
	return false
}

// RollbackOwed reports whether a swap's rollback started and did not
// finish — it failed, or its process was killed — whether it undid a
// failure or switched a finished swap back: only `vmswap rollback` may go
// on from there; apply must not resume the swap (it would finish an
// upgrade that failed) or call the run done.
func (j *Journal) RollbackOwed() bool {
	for _, s := range j.Swaps {
		if l := s.Steps["rollback"]; l != nil && l.Status != "ok" && s.Status != StatusRolledBack && s.Status != StatusReverted {
			return true
		}
	}
	return false
}

// Doc parses the plan the run recorded.
func (j *Journal) Doc() (*plans.Document, error) {
	if j.PlanText == "" {
		return nil, fmt.Errorf("journal %s does not record its plan (written by an older vmswap): use the plan file it ran", j.path)
	}
	doc, err := plans.Check(j.Plan, []byte(j.PlanText))
	if err != nil {
		return nil, fmt.Errorf("the plan recorded in %s: %w", j.path, err)
	}
	return doc, nil
}

// Path is where the journal is written.
func (j *Journal) Path() string { return j.path }

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

// LoadJournal reads a journal; (nil, nil) if there is none.
func LoadJournal(path string) (*Journal, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j, err := parseJournal(b, path)
	if err != nil {
		return nil, err
	}
	j.path = path
	return j, nil
}

// parseJournal reads a journal's bytes; where names it for messages.
func parseJournal(b []byte, path string) (*Journal, error) {
	var j Journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("journal %s is damaged (%v): move it aside to start over, after checking what the run created", path, err)
	}
	switch j.Version {
	case JournalVersion:
	case 1:
		// Version 1 called needs-attention "failed" and kept no plan text.
		upgrade := func(s State) State {
			if s == "failed" {
				return StatusNeedsAttention
			}
			return s
		}
		j.Status = upgrade(j.Status)
		for _, s := range j.Swaps {
			s.Status = upgrade(s.Status)
		}
		j.Version = JournalVersion
	default:
		return nil, fmt.Errorf("journal %s has format version %d; this vmswap reads %d", path, j.Version, JournalVersion)
	}
	if j.RunID == "" || j.Status == "" || j.PlanHash == "" {
		return nil, fmt.Errorf("journal %s is damaged (it names no run, status or plan): move it aside to start over, after checking what the run created", path)
	}
	return &j, nil
}

// journalObject is the journal's name in remote state.
const journalObject = "journal.json"

// remoteCopy is where a journal lives when the plan keeps its state in
// object storage: the object is the truth, written only over the version
// this process last read or wrote; the local file is a copy for the tools
// on this machine.
type remoteCopy struct {
	s    *state.S3
	etag string
}

// Save writes the journal atomically: a temporary file, fsync, rename, and
// an fsync of the directory so the rename itself survives a crash.
func (j *Journal) Save() error {
	mu := j.lock()
	mu.Lock()
	defer mu.Unlock()
	return j.saveLocked()
}

// journalsMu guards the creation of each journal's own mutex: journals
// are made in many ways (new, loaded, decoded, copied).
var journalsMu sync.Mutex

func (j *Journal) lock() *sync.Mutex {
	journalsMu.Lock()
	defer journalsMu.Unlock()
	if j.mu == nil {
		j.mu = new(sync.Mutex)
	}
	return j.mu
}

// saveSwap writes the journal with swap i as st is now; st is marshalled
// by the caller's goroutine, the only one that changes it.
func (j *Journal) saveSwap(i int, st *SwapState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	mu := j.lock()
	mu.Lock()
	defer mu.Unlock()
	if j.snaps != nil {
		j.snaps[i] = b
	}
	return j.saveLocked()
}

// concurrent makes Save write swaps idx from their copies (the swaps of a
// running wave, and of the wave prepared beside it), until done gives them
// back: each is then written from its state again.
func (j *Journal) concurrent(idx []int) {
	mu := j.lock()
	mu.Lock()
	defer mu.Unlock()
	if j.snaps == nil {
		j.snaps = map[int]json.RawMessage{}
	}
	for _, i := range idx {
		b, _ := json.Marshal(j.Swaps[i])
		j.snaps[i] = b
	}
}

// done ends concurrent for swaps idx, which no other goroutine changes now.
func (j *Journal) done(idx []int) {
	mu := j.lock()
	mu.Lock()
	defer mu.Unlock()
	for _, i := range idx {
		delete(j.snaps, i)
	}
	if len(j.snaps) == 0 {
		j.snaps = nil
	}
}

// locked runs fn with the journal's lock held: for the run-level fields
// that swaps of a wave change (Status on an interrupt, prev).
func (j *Journal) locked(fn func()) {
	mu := j.lock()
	mu.Lock()
	defer mu.Unlock()
	fn()
}

func (j *Journal) saveLocked() error {
	now := time.Now
	if j.clock != nil {
		now = j.clock
	}
	j.Updated = now().UTC()
	j.Seq++
	b, err := j.marshal()
	if err != nil {
		return err
	}
	if err := writeAtomic(j.path, b); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if r := j.remote; r != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		etag, err := r.s.Write(ctx, journalObject, b, r.etag)
		cancel()
		if errors.Is(err, state.ErrConflict) {
			return fmt.Errorf("journal %s was written by someone else since this run read it (was this run's lock taken over?): not overwriting it; see `vmswap status` before going on", r.s.Where(journalObject))
		}
		if err != nil {
			return err
		}
		r.etag = etag
	}
	j.saves++
	return nil
}

// marshal encodes the journal, each swap of a running wave from its copy.
func (j *Journal) marshal() ([]byte, error) {
	if j.snaps == nil {
		return json.MarshalIndent(j, "", "  ")
	}
	type plain Journal // without methods: no recursion
	swaps := make([]any, len(j.Swaps))
	for i, st := range j.Swaps {
		if b, ok := j.snaps[i]; ok {
			swaps[i] = b
		} else {
			swaps[i] = st
		}
	}
	return json.MarshalIndent(struct {
		*plain
		Swaps []any `json:"swaps"`
	}{(*plain)(j), swaps}, "", "  ")
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

// NextRun starts a new run of doc after old finished (rolled back, refused,
// reverted, or succeeded with a different plan). old's runs move to the
// history. When old ran the same plan and was rolled back or refused, the
// swaps it completed stay completed: a plan's later swap failing does not
// make its earlier ones run again. After a revert everything runs anew.
func NextRun(old *Journal, path string, doc *plans.Document, runID string) *Journal {
	j := NewJournal(path, doc, runID)
	if old == nil {
		return j
	}
	j.Seq = old.Seq
	j.prev = old
	j.History = append(append([]RunRecord{}, old.History...), RunRecord{RunID: old.RunID, PlanID: old.PlanID, PlanHash: old.PlanHash,
		Status: old.Status, Started: old.Started, Ended: old.Updated})
	if old.PlanHash != j.PlanHash || old.Status == StatusReverted {
		return j
	}
	for i, st := range old.Swaps {
		if i < len(j.Swaps) && st.Status == StatusSucceeded {
			j.Swaps[i] = st
		}
	}
	return j
}

// PlanIDs returns the plan IDs of every run in the journal, the last first.
func (j *Journal) PlanIDs() []string {
	ids := []string{j.PlanID}
	for i := len(j.History) - 1; i >= 0; i-- {
		if id := j.History[i].PlanID; !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// restorePrevious makes the run this one followed the journal's last run
// again, with this one in the history as refused: a run refused before it
// changed anything must not hide the run that did (what rollback and
// cleanup --expired work from).
func (j *Journal) restorePrevious(ended time.Time) bool {
	prev := j.prev
	if prev == nil {
		return false
	}
	rec := RunRecord{RunID: j.RunID, PlanID: j.PlanID, PlanHash: j.PlanHash, Status: StatusRefused, Started: j.Started, Ended: ended}
	path, remote, clock, saves, seq, mu := j.path, j.remote, j.clock, j.saves, j.Seq, j.mu
	*j = *prev
	j.path, j.remote, j.clock, j.saves, j.Seq, j.prev, j.mu, j.snaps = path, remote, clock, saves, seq, nil, mu, nil
	j.History = append(slices.Clone(j.History), rec)
	return true
}

// MarkDeleted records that cleanup deleted these servers, when they are the
// kept sources of the run's swaps.
func (j *Journal) MarkDeleted(ids []string) error {
	changed := false
	for _, st := range j.Swaps {
		if slices.Contains(ids, st.SourceID) && !st.SourceDeleted {
			st.SourceDeleted, changed = true, true
		}
	}
	if !changed {
		return nil
	}
	return j.Save()
}

// ShortRunID is the start of the run's ID that names what the run made
// (web-1-3fa9c2, web-1-retired-3fa9c2): six characters, or the whole ID
// when it is shorter.
func (j *Journal) ShortRunID() string {
	if len(j.RunID) > 6 {
		return j.RunID[:6]
	}
	return j.RunID
}
