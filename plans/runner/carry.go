package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/verify"
	"github.com/vmswap/vmswap/verify/carry"
)

// This file: state on the server: the source's clock at the snapshot, the
// carry passes (catch-up, final, carry-back), the divergence report and
// the hooks.

// ErrAfterCutover marks a failure once traffic is on the new server (an
// after_cutover or before_retire hook): the run stops for a person instead
// of moving traffic back.
var ErrAfterCutover = errors.New("stopped after the cutover")

// ErrDecision marks a pause for a person's decision (exit 4): the run goes
// on with `vmswap apply --continue`.
var ErrDecision = errors.New("needs a decision")

// PassRecord is one carry pass, as the journal keeps it.
type PassRecord struct {
	Name  string       `json:"name"`
	From  string       `json:"from"`
	To    string       `json:"to"`
	Start time.Time    `json:"start"`
	End   time.Time    `json:"end"`
	Since int64        `json:"since,omitempty"`
	Clock int64        `json:"clock,omitempty"`
	Res   carry.Result `json:"result"`
}

// HookRun is one hook that ran, as the journal keeps it.
type HookRun struct {
	Phase string    `json:"phase"`
	On    string    `json:"on"`
	Run   string    `json:"run"`
	OK    bool      `json:"ok"`
	Tail  []string  `json:"tail,omitempty"` // the last lines of its output
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// maxJournalConflicts bounds the conflicts a pass record keeps.
const maxJournalConflicts = 100

// Names of the carry passes (their sub-steps are "carry:" + name).
const (
	passCatchUp    = "catch-up"
	passFinal      = "final"
	passBack       = "carry-back"
	passBackFinal  = "carry-back final"
	passAfterPause = "final, after the pause"
	subDivergence  = "divergence"
	hookSubPrefix  = "hook:"
	carrySubPrefix = "carry:"
)

// needsClock reports whether the swap notes the source's clock at the
// snapshot: carried paths and the divergence report measure from it.
func (s *swapRun) needsClock() bool {
	return s.sw.Carry != nil || s.sw.DivergenceMode() != "off"
}

// dial connects over SSH to the source ("source") or the new server.
func (s *swapRun) dial(ctx context.Context, which string, timeout time.Duration) (*verify.SSHClient, error) {
	k := s.sw.Verify.SSH
	host, id, name := s.st.SourceIP, s.st.SourceID, s.st.SourceName
	if which == "new" {
		host, id, name = s.st.NewIP, s.st.NewID, s.st.NewName
		if k.Address != "" {
			host = k.Address
		}
	}
	cfg := s.sshConfig(k, id)
	cfg.Timeout = timeout
	c, err := verify.DialSSH(ctx, host, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", name, which, err)
	}
	return c, nil
}

// clockOf reads a server's own clock (unix seconds).
func clockOf(ctx context.Context, c *verify.SSHClient) (int64, error) {
	out, err := c.Run(ctx, "date +%s")
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("date +%%s printed %q", strings.TrimSpace(out))
	}
	return v, nil
}

// noteSourceClock records the source's clock just before its snapshot,
// once: a resumed snapshot keeps the first, earlier, reading.
func (s *swapRun) noteSourceClock(ctx context.Context) error {
	if s.st.SourceClock != 0 || !s.needsClock() {
		return nil
	}
	c, err := s.dial(ctx, "source", 15*time.Second)
	var t int64
	if err == nil {
		t, err = clockOf(ctx, c)
		c.Close()
	}
	if err != nil && !s.needsSourceSSH() {
		// Only the default divergence report needed it: it says it has
		// nothing to report, and the swap goes on.
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the source's clock before its snapshot: %w", err)
	}
	s.st.SourceClock = t
	return s.save()
}

// runHooks runs a phase's hooks, each once (a hook whose run was cut short
// runs again on resume: write hooks that can).
func (s *swapRun) runHooks(ctx context.Context, phase string) error {
	for j, h := range s.sw.Hooks.Of(phase) {
		sub := fmt.Sprintf("%s%s[%d]", hookSubPrefix, phase, j)
		if err := s.once(sub, func() error { return s.runHook(ctx, phase, h) }); err != nil {
			return err
		}
	}
	return nil
}

func (s *swapRun) runHook(ctx context.Context, phase string, h plans.Hook) error {
	timeout := orDur(h.Timeout, 60*time.Second)
	target := s.st.SourceName
	if h.On == "new" {
		target = s.st.NewName
	}
	s.r.emit(Event{Event: "hook", Swap: s.name(), Step: phase, Message: fmt.Sprintf("hook %s on %s: %s", phase, target, h.Run)})
	run := HookRun{Phase: phase, On: h.On, Run: h.Run, Start: s.r.now()}
	c, err := s.dial(ctx, h.On, timeout)
	var out string
	if err == nil {
		out, err = c.Combined(ctx, h.Run)
		c.Close()
	}
	run.End, run.OK, run.Tail = s.r.now(), err == nil, tail(out, 10)
	s.st.Hooks = append(s.st.Hooks, run)
	for _, l := range run.Tail {
		s.r.emit(Event{Event: "hook", Swap: s.name(), Step: phase, Message: "  " + l})
	}
	if err != nil {
		return fmt.Errorf("hook %s on %s (%q) failed: %w", phase, target, h.Run, err)
	}
	return s.save()
}

// tail is the last n lines of a command's output, each at most 300
// characters, with control characters escaped.
func tail(out string, n int) []string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	lines = lines[max(0, len(lines)-n):]
	for i, l := range lines {
		if r := []rune(l); len(r) > 300 {
			l = string(r[:300]) + fmt.Sprintf("… (%d more characters)", len(r)-300)
		}
		lines[i] = printable(l)
	}
	return lines
}

// manifestPath is where a swap's carry reference lives: beside the
// journal, too big to rewrite with every journal save.
func (s *swapRun) manifestPath() string {
	return fmt.Sprintf("%s.swap%d.carry.json", s.r.Journal.Path(), s.i)
}

// manifestObject is the carry reference's name in remote state.
func (s *swapRun) manifestObject() string { return fmt.Sprintf("swap%d.carry.json", s.i) }

func (s *swapRun) loadManifest() (carry.Manifest, error) {
	b, err := os.ReadFile(s.manifestPath())
	if errors.Is(err, os.ErrNotExist) && s.r.Journal.remote != nil {
		// A run resumed on another machine: the reference is in the state.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		b, _, err = s.r.Journal.remote.s.Read(ctx, s.manifestObject())
		cancel()
		if err == nil && b == nil {
			err = os.ErrNotExist
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		// Never a silent fresh start: with no reference, the new server's
		// own changes would look like the old one's and be overwritten.
		return nil, fmt.Errorf("the carry reference of the previous pass (%s) is missing: copy it back, or carry the paths by hand and roll back or finish the run", s.manifestPath())
	}
	if err != nil {
		return nil, err
	}
	var m carry.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("carry reference %s is damaged: %w", s.manifestPath(), err)
	}
	return m, nil
}

func (s *swapRun) saveManifest(m carry.Manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := writeAtomic(s.manifestPath(), b); err != nil {
		return err
	}
	if r := s.r.Journal.remote; r != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := r.s.Write(ctx, s.manifestObject(), b, "*"); err != nil {
			return err
		}
	}
	return nil
}

// pass runs one carry pass, once. from and to are "source" or "new".
func (s *swapRun) pass(ctx context.Context, name, from, to string) error {
	if s.sw.Carry == nil {
		return nil
	}
	return s.once(carrySubPrefix+name, func() error {
		err := s.doPass(ctx, name, from, to)
		if err != nil {
			return fmt.Errorf("carry %s pass (%s → %s): %w", name, from, to, err)
		}
		return nil
	})
}

func (s *swapRun) doPass(ctx context.Context, name, from, to string) error {
	sc, err := s.dial(ctx, from, 30*time.Second)
	if err != nil {
		return err
	}
	defer sc.Close()
	dc, err := s.dial(ctx, to, 30*time.Second)
	if err != nil {
		return err
	}
	defer dc.Close()
	clock, err := clockOf(ctx, sc)
	if err != nil {
		return err
	}
	src, err := sc.SFTP()
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := dc.SFTP()
	if err != nil {
		return err
	}
	defer dst.Close()
	// SFTP calls take no context: closing the sessions is what stops a
	// copy in flight when the user interrupts.
	defer context.AfterFunc(ctx, func() { src.Close(); dst.Close() })()
	var ref carry.Manifest
	if name != passCatchUp {
		if ref, err = s.loadManifest(); err != nil {
			return err
		}
	}
	since := s.st.SourceClock
	if n := len(s.st.Passes); n > 0 {
		since = s.st.Passes[n-1].Clock
	}
	opt := carry.Options{Paths: s.sw.Carry.Paths, Exclude: s.sw.Carry.Exclude, Checksum: s.sw.Carry.Checksum, Since: since}
	lastNote := time.Now()
	opt.OnCopied = func(n int, bytes int64) {
		if s.r.AfterCopy != nil {
			s.r.AfterCopy(name, n)
		}
		if time.Since(lastNote) > 2*time.Second {
			lastNote = time.Now()
			s.progress("carry %s pass: %d files (%s) copied so far", name, n, verify.HumanBytes(float64(bytes)))
		}
	}
	s.progress("carry %s pass: %s → %s (%s)", name, s.nameOf(from), s.nameOf(to), strings.Join(opt.Paths, ", "))
	rec := PassRecord{Name: name, From: s.nameOf(from), To: s.nameOf(to), Start: s.r.now(), Since: since, Clock: clock}
	res, next, err := carry.Pass(ctx, src, dst, ref, opt)
	if err != nil {
		return err
	}
	if err := s.saveManifest(next); err != nil {
		return err
	}
	rec.End, rec.Res = s.r.now(), res
	if len(rec.Res.Conflicts) > maxJournalConflicts {
		// The journal is rewritten at every step: it keeps the first ones.
		rec.Res.Conflicts = rec.Res.Conflicts[:maxJournalConflicts]
	}
	s.st.Passes = append(s.st.Passes, rec)
	s.r.emit(Event{Event: "carry", Swap: s.name(), Step: name, Status: "ok", Elapsed: res.Duration.Seconds(),
		Message: fmt.Sprintf("carry %s pass: %d copied (%s), %d deleted, %d conflict(s), of %d paths, in %s",
			name, res.Copied, verify.HumanBytes(float64(res.Bytes)), res.Deleted, len(res.Conflicts), res.Scanned, res.Duration.Round(time.Millisecond))})
	if n := len(res.Conflicts); n > maxJournalConflicts {
		s.st.Warnings = append(s.st.Warnings, fmt.Sprintf("the carry %s pass had %d conflicts; the journal keeps the first %d", name, n, maxJournalConflicts))
	}
	for i, c := range res.Conflicts {
		if i == 10 {
			s.r.emit(Event{Event: "warning", Swap: s.name(), Message: fmt.Sprintf("… and %d more conflicts (in the journal)", len(res.Conflicts)-10)})
			break
		}
		msg := fmt.Sprintf("carry conflict at %s: %s (%s: %s; %s: %s)", printable(c.Path), c.Reason, rec.From, describe(c.Source), rec.To, describe(c.Dest))
		s.r.emit(Event{Event: "warning", Swap: s.name(), Message: msg})
		s.st.Warnings = append(s.st.Warnings, msg)
	}
	return s.save()
}

func (s *swapRun) nameOf(which string) string {
	if which == "new" {
		return s.st.NewName
	}
	return s.st.SourceName
}

func describe(e *carry.Entry) string {
	if e == nil {
		return "deleted"
	}
	if e.Type != "f" {
		return map[string]string{"d": "a directory", "l": "a symlink to " + printable(e.Link)}[e.Type]
	}
	return fmt.Sprintf("%d bytes, modified %s", e.Size, time.Unix(e.Mtime, 0).UTC().Format(time.RFC3339))
}

// divergence lists what the source wrote after its snapshot outside the
// carried paths, once, before it is retired; with on_found: stop it pauses
// the run for a decision unless the user said to go on.
func (s *swapRun) divergence(ctx context.Context) error {
	mode := s.sw.DivergenceMode()
	if mode == "off" || s.st.has(subDivergence) {
		return nil
	}
	if s.st.SourceClock == 0 {
		msg := "no divergence report: the source's clock could not be read over SSH before its snapshot"
		s.r.emit(Event{Event: "warning", Swap: s.name(), Message: msg})
		s.st.Warnings = append(s.st.Warnings, msg)
		return s.mark(subDivergence)
	}
	if s.st.Divergence == nil {
		d, err := s.lookForDivergence(ctx)
		if err != nil {
			msg := fmt.Sprintf("no divergence report: %v", err)
			if mode == "stop" {
				return errors.Join(ErrDecision, errors.New(msg))
			}
			s.r.emit(Event{Event: "warning", Swap: s.name(), Message: msg})
			s.st.Warnings = append(s.st.Warnings, msg)
			return s.mark(subDivergence)
		}
		s.st.Divergence = &d
		if err := s.save(); err != nil {
			return err
		}
	}
	d := s.st.Divergence
	if d.Count == 0 {
		s.progress("divergence: %s wrote nothing outside the carried paths after its snapshot", s.st.SourceName)
		return s.mark(subDivergence)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s wrote %d file(s) after its snapshot that no pass carried", s.st.SourceName, d.Count)
	if d.Cut != "" {
		fmt.Fprintf(&b, " (%s)", d.Cut)
	}
	b.WriteString(":")
	for _, f := range d.Files {
		fmt.Fprintf(&b, "\n  %s (%d bytes, %s)", printable(f.Path), f.Size, f.Mtime.Format(time.RFC3339))
	}
	s.r.emit(Event{Event: "divergence", Swap: s.name(), Status: mode, Message: b.String()})
	if mode == "stop" && !s.continued() {
		s.st.Paused = "divergence"
		return errors.Join(ErrDecision, fmt.Errorf("%s", b.String()))
	}
	s.st.Warnings = append(s.st.Warnings, fmt.Sprintf("%s wrote %d file(s) after its snapshot that no pass carried (listed in the journal)", s.st.SourceName, d.Count))
	return s.mark(subDivergence)
}

func (s *swapRun) lookForDivergence(ctx context.Context) (carry.Divergence, error) {
	c, err := s.dial(ctx, "source", 30*time.Second)
	if err != nil {
		return carry.Divergence{}, err
	}
	defer c.Close()
	sc, err := c.SFTP()
	if err != nil {
		return carry.Divergence{}, err
	}
	defer sc.Close()
	watch, ignore := carry.DefaultWatch, slices.Clone(carry.DefaultIgnore)
	if dv := s.sw.Divergence; dv != nil {
		if len(dv.Watch) > 0 {
			watch = dv.Watch
		}
		ignore = append(ignore, dv.Ignore...)
	}
	var carried []string
	if s.sw.Carry != nil {
		carried = s.sw.Carry.Paths
	}
	s.progress("divergence: looking for files %s wrote after its snapshot under %s", s.st.SourceName, strings.Join(watch, " "))
	return carry.Diverged(ctx, sc, watch, ignore, carried, s.st.SourceClock)
}

// catchUp runs between verify and the cutover: the before_cutover hooks,
// then the bulk of what the source wrote since its snapshot.
func catchUp(ctx context.Context, s *swapRun) error {
	if err := s.gate(gateBeforeCutover); err != nil {
		return err
	}
	if err := s.runHooks(ctx, "before_cutover"); err != nil {
		return err
	}
	return s.pass(ctx, passCatchUp, "source", "new")
}

// carryBack carries what users wrote on the new server back to the source
// when traffic returns to it: once before the switch (the bulk) and once
// after the new server's hold (what was written meanwhile).
func (s *swapRun) carryBack(ctx context.Context, name string) error {
	if s.sw.Carry == nil || s.st.NewID == "" || s.st.NewGone || !slices.Contains(s.st.Done, carrySubPrefix+passCatchUp) {
		return nil
	}
	return s.pass(ctx, name, "new", "source")
}

// printable shows a name from a server with its control characters
// escaped: a file name must not move the cursor or forge an output line.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// gateBeforeCutover is the gate after verify: the new server runs and
// passed its checks, and has no traffic yet.
const gateBeforeCutover = "before_cutover"

// gate stops the run for a person at a gate the plan asks for (exit 4),
// once; apply --continue passes it.
func (s *swapRun) gate(name string) error {
	if !slices.Contains(s.sw.Gates, name) || s.st.has("gate:"+name) {
		return nil
	}
	if s.continued() && s.st.Paused == name {
		s.st.Paused = ""
		return s.mark("gate:" + name)
	}
	s.st.Paused = name
	return errors.Join(ErrDecision, fmt.Errorf("gate %s: %s (%s) passed verify and gets no traffic yet", name, s.st.NewName, s.st.NewIP))
}
