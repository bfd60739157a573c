// Package nginx is vmswap's load-balancer driver for open-source nginx. A
// pool is an upstream whose server lines live in a file vmswap owns,
// DIR/POOL.conf, that the user's upstream block includes:
//
//	upstream app { include /etc/nginx/vmswap/app.conf; keepalive 16; }
//
// Every change is written atomically, checked with `nginx -t` (and undone
// if the check fails) and applied with a graceful reload (`nginx -s
// reload`): new workers start with the new file, old ones finish the
// requests they hold and exit. A member is removed in two reloads: first
// marked down, and once the old workers have exited (bounded), deleted.
//
// nginx runs on this machine or on a proxy host over SSH (Host). Open-source
// nginx has no API that reports a member's health, so the runner proves
// routing by requests through nginx (the cutover's identify_header).
package nginx

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/provider"
)

// Config holds every setting of the driver.
type Config struct {
	// Dir holds the upstream files, one per pool: Dir/POOL.conf.
	Dir string
	// Command is nginx's command line, without -t or -s: "nginx", or
	// "nginx -c /etc/nginx/nginx.conf". Empty: nginx.
	Command []string
	// Host is where nginx runs. Nil: this machine.
	Host Host
	// Address is nginx's own listening address (host:port), through which
	// the runner proves that requests reach a new member.
	Address string
	// Port is the port new members are added with. Zero: the port of the
	// pool's first server line.
	Port int
	// DrainTimeout bounds the wait for the old worker processes (and the
	// requests they hold) to finish after a member is marked down. Zero: 30s.
	DrainTimeout time.Duration
	// PollInterval of the waits. Zero: 200ms.
	PollInterval time.Duration
	// Progress receives what is being waited on. May be nil.
	Progress provider.Progress
}

// Provider implements loadbalancer.Provider.
type Provider struct {
	cfg Config

	mu      sync.Mutex // one change at a time: read, write, check, reload
	pidFile string     // found once, from nginx -T or nginx -V
}

var _ loadbalancer.Provider = (*Provider)(nil)

// New returns a Provider for cfg.
func New(cfg Config) (*Provider, error) {
	if cfg.Dir == "" || !path.IsAbs(strings.ReplaceAll(cfg.Dir, `\`, "/")) {
		return nil, fmt.Errorf("nginx: endpoint %q: the absolute directory of the upstream files vmswap owns, like /etc/nginx/vmswap", cfg.Dir)
	}
	if len(cfg.Command) == 0 {
		cfg.Command = []string{"nginx"}
	}
	if cfg.Host == nil {
		cfg.Host = Local{}
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	if cfg.Progress == nil {
		cfg.Progress = func(string, ...any) {}
	}
	return &Provider{cfg: cfg}, nil
}

// Close releases the connection to the proxy host.
func (p *Provider) Close() error { return p.cfg.Host.Close() }

var poolName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)

func (p *Provider) file(pool string) (string, error) {
	if !poolName.MatchString(pool) || strings.Contains(pool, "..") {
		return "", fmt.Errorf("nginx: pool %q: the upstream's name (letters, digits, _ . -); its servers are in %s/NAME.conf", pool, p.cfg.Dir)
	}
	return path.Join(strings.ReplaceAll(p.cfg.Dir, `\`, "/"), pool+".conf"), nil
}

// line is one server line of an upstream file.
type line struct {
	idx    int    // index in the file's lines
	host   string // address without port or brackets
	port   int
	params []string // weight=2, down, backup ...
}

func (l line) hostport() string { return net.JoinHostPort(l.host, strconv.Itoa(l.port)) }

func (l line) down() bool { return slices.Contains(l.params, "down") }

func (l line) String() string {
	return strings.TrimSpace("server "+l.hostport()+" "+strings.Join(l.params, " ")) + ";"
}

// upstream is an upstream file: its lines, the server lines parsed.
type upstream struct {
	name    string
	lines   []string
	servers []line
}

// parse reads an upstream file. vmswap owns it, so it is strict: one
// server directive per line, on one line.
func parse(name string, b []byte) (*upstream, error) {
	u := &upstream{name: name}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for n := 0; sc.Scan(); n++ {
		text := sc.Text()
		u.lines = append(u.lines, text)
		t := strings.TrimSpace(text)
		if i := strings.Index(t, "#"); i >= 0 {
			t = strings.TrimSpace(t[:i])
		}
		if t == "" {
			continue
		}
		f := strings.Fields(strings.TrimSuffix(t, ";"))
		if f[0] != "server" || !strings.HasSuffix(t, ";") || strings.Count(t, ";") != 1 || len(f) < 2 {
			return nil, fmt.Errorf("nginx: %s line %d: %q: vmswap owns this file and reads only `server ADDRESS[:PORT] [PARAMETERS];` lines, one to a line; keep other settings in the upstream block", name, n+1, shortText(text))
		}
		l := line{idx: n, port: 80, params: f[2:]}
		if h, port, err := net.SplitHostPort(f[1]); err == nil {
			p, err := strconv.Atoi(port)
			if err != nil || p < 1 || p > 65535 {
				return nil, fmt.Errorf("nginx: %s line %d: port %q", name, n+1, port)
			}
			l.host, l.port = h, p
		} else {
			l.host = strings.Trim(f[1], "[]")
		}
		u.servers = append(u.servers, l)
	}
	return u, sc.Err()
}

func shortText(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func (u *upstream) bytes() []byte {
	var b strings.Builder
	for _, l := range u.lines {
		if l == deleted {
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

func (u *upstream) of(host string) []line {
	var out []line
	for _, s := range u.servers {
		if s.host == host {
			out = append(out, s)
		}
	}
	return out
}

// deleted marks a line RemoveMember dropped.
const deleted = "\x00"

const header = `# The members of this upstream, written by vmswap: each change is written
# atomically, checked with nginx -t and applied with a graceful reload.
# Include this file in your upstream block; keep other settings there.
`

// read reads the pool's file.
func (p *Provider) read(ctx context.Context, pool string) (string, []byte, *upstream, error) {
	name, err := p.file(pool)
	if err != nil {
		return "", nil, nil, err
	}
	b, err := p.cfg.Host.ReadFile(ctx, name)
	if notExist(err) {
		return "", nil, nil, fmt.Errorf("nginx: pool %s: %s does not exist (%w): create it with the upstream's server lines and include it in the upstream block", pool, name, provider.ErrNotFound)
	}
	if err != nil {
		return "", nil, nil, fmt.Errorf("nginx: read %s: %w", name, err)
	}
	u, err := parse(name, b)
	return name, b, u, err
}

// Pool implements loadbalancer.MemberLister. A member marked down is not
// counted: nginx sends it nothing.
func (p *Provider) Pool(ctx context.Context, pool string) (*loadbalancer.Pool, error) {
	_, _, u, err := p.read(ctx, pool)
	if err != nil {
		return nil, err
	}
	out := &loadbalancer.Pool{ID: pool, Address: p.cfg.Address, Members: []loadbalancer.Member{}}
	for _, s := range u.servers {
		if s.down() {
			continue
		}
		if i := slices.IndexFunc(out.Members, func(m loadbalancer.Member) bool { return m.Address == s.host }); i >= 0 {
			out.Members[i].Lines = append(out.Members[i].Lines, s.hostport())
			continue
		}
		out.Members = append(out.Members, loadbalancer.Member{Address: s.host, Lines: []string{s.hostport()}})
	}
	return out, nil
}

// AddMember implements loadbalancer.MemberAdder: server lines on the
// member's address (a line marked down is brought back up), then nginx -t
// and a graceful reload. The new lines copy the lines of the member it
// replaces (m.Like): one line for each, with its port and parameters
// (weight, max_fails, backup...), so the pool balances as before; without
// one, a line on the configured port or the first line's.
func (p *Provider) AddMember(ctx context.Context, pool string, m loadbalancer.Member) error {
	if m.Address == "" {
		return fmt.Errorf("nginx: member has no address")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	name, before, u, err := p.read(ctx, pool)
	if err != nil {
		return err
	}
	mine := u.of(m.Address)
	changed := false
	for _, s := range mine {
		if s.down() {
			s.params = withoutDown(s.params)
			u.lines[s.idx] = s.String()
			changed = true
		}
	}
	if len(mine) == 0 {
		var add []line
		if m.Like != nil {
			for _, s := range u.of(m.Like.Address) {
				add = append(add, line{host: m.Address, port: s.port, params: withoutDown(s.params)})
			}
		}
		if len(add) == 0 {
			port := p.cfg.Port
			if port == 0 {
				for _, s := range u.servers {
					if !slices.Contains(s.params, "backup") {
						port = s.port
						break
					}
				}
			}
			if port == 0 {
				return fmt.Errorf("nginx: %s has no server line to copy the port from: set the provider's port", name)
			}
			add = []line{{host: m.Address, port: port}}
		}
		if len(u.lines) == 0 {
			u.lines = strings.Split(strings.TrimSuffix(header, "\n"), "\n")
		}
		for _, l := range add {
			u.lines = append(u.lines, l.String())
		}
		changed = true
	}
	if !changed {
		return nil
	}
	p.cfg.Progress("nginx: adding %s to upstream %s", m.Address, pool)
	_, err = p.apply(ctx, name, before, u.bytes())
	return err
}

func withoutDown(params []string) []string {
	return slices.DeleteFunc(slices.Clone(params), func(v string) bool { return v == "down" })
}

// RemoveMember implements loadbalancer.MemberRemover: every server line on
// the member's address is marked down and nginx reloaded; the worker
// processes of before the reload finish their requests in flight and exit
// (waited for up to DrainTimeout); then the lines are deleted and nginx
// reloaded again. A member already gone is not an error.
func (p *Provider) RemoveMember(ctx context.Context, pool string, m loadbalancer.Member) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	name, before, u, err := p.read(ctx, pool)
	if err != nil {
		return err
	}
	mine := u.of(m.Address)
	if len(mine) == 0 {
		return nil
	}
	up := 0
	for _, s := range mine {
		if !s.down() {
			s.params = append(slices.Clone(s.params), "down")
			u.lines[s.idx] = s.String()
			up++
		}
	}
	if up > 0 {
		p.cfg.Progress("nginx: marking %s down in upstream %s", m.Address, pool)
		old, err := p.apply(ctx, name, before, u.bytes())
		if err != nil {
			return err
		}
		if err := p.drain(ctx, old); err != nil {
			return err
		}
		before = u.bytes()
	}
	for _, s := range mine {
		u.lines[s.idx] = deleted
	}
	p.cfg.Progress("nginx: deleting %s from upstream %s", m.Address, pool)
	_, err = p.apply(ctx, name, before, u.bytes())
	return err
}

// apply writes the file, checks the whole configuration with nginx -t
// (putting the previous file back if the check fails) and reloads. It
// returns the worker processes of before the reload.
func (p *Provider) apply(ctx context.Context, name string, before, after []byte) ([]int, error) {
	if err := p.cfg.Host.WriteFile(ctx, name, after); err != nil {
		return nil, fmt.Errorf("nginx: write %s: %w", name, err)
	}
	if out, err := p.nginx(ctx, "-t"); err != nil {
		if rerr := p.cfg.Host.WriteFile(ctx, name, before); rerr != nil {
			return nil, fmt.Errorf("nginx -t failed with the new %s (%v: %s), and putting the previous one back failed: %w", name, err, lastLines(out), rerr)
		}
		return nil, fmt.Errorf("nginx -t failed with the new %s, so the previous one is back: %v: %s", name, err, lastLines(out))
	}
	old, err := p.reload(ctx)
	if err != nil {
		// nginx runs the configuration of before: so must the file.
		if rerr := p.cfg.Host.WriteFile(ctx, name, before); rerr != nil {
			return nil, fmt.Errorf("%w; and putting the previous %s back failed: %v", err, name, rerr)
		}
		return nil, fmt.Errorf("%w; %s is back as nginx runs it", err, name)
	}
	return old, nil
}

// Check implements loadbalancer.Checker: before anything is created, the
// pool's file is one vmswap can edit, nginx runs (its master has workers)
// and its configuration passes nginx -t as it is.
func (p *Provider) Check(ctx context.Context, pool string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, _, _, err := p.read(ctx, pool); err != nil {
		return err
	}
	master, err := p.master(ctx)
	if err != nil {
		return err
	}
	if _, err := p.children(ctx, master); err != nil {
		return err
	}
	if out, err := p.nginx(ctx, "-t"); err != nil {
		return fmt.Errorf("nginx -t fails before any change (fix the configuration first): %v: %s", err, lastLines(out))
	}
	return nil
}

func (p *Provider) nginx(ctx context.Context, args ...string) (string, error) {
	return p.cfg.Host.Run(ctx, append(slices.Clone(p.cfg.Command), args...))
}

// reload sends nginx the reload signal and waits for the master to start
// new worker processes, proof that it read the new configuration (a master
// that fails to, keeps its old workers and logs why). It returns the
// workers of before.
func (p *Provider) reload(ctx context.Context) ([]int, error) {
	master, err := p.master(ctx)
	if err != nil {
		return nil, err
	}
	old, err := p.children(ctx, master)
	if err != nil {
		return nil, err
	}
	if out, err := p.nginx(ctx, "-s", "reload"); err != nil {
		return nil, fmt.Errorf("nginx -s reload: %v: %s", err, lastLines(out))
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		now, err := p.children(ctx, master)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(now, func(pid int) bool { return !slices.Contains(old, pid) }) {
			return old, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nginx (master %d) started no new worker within 15s of the reload: it did not take the new configuration; see its error log", master)
		}
		if err := provider.Sleep(ctx, p.cfg.PollInterval); err != nil {
			return nil, err
		}
	}
}

// drain waits until the worker processes old have exited: they stop
// accepting at the reload and exit once their requests in flight are done.
func (p *Provider) drain(ctx context.Context, old []int) error {
	master, err := p.master(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	for {
		now, err := p.children(ctx, master)
		if err != nil {
			return err
		}
		left := slices.DeleteFunc(slices.Clone(old), func(pid int) bool { return !slices.Contains(now, pid) })
		if len(left) == 0 {
			return nil
		}
		if time.Since(start) > p.cfg.DrainTimeout {
			p.cfg.Progress("nginx: %d old worker processes still serve requests after %s; going on (their connections to the old server end when it stops)", len(left), p.cfg.DrainTimeout)
			return nil
		}
		p.cfg.Progress("nginx: waiting for %d old worker processes to finish their requests (%s)", len(left), time.Since(start).Round(time.Second))
		if err := provider.Sleep(ctx, p.cfg.PollInterval); err != nil {
			return err
		}
	}
}

var (
	pidDirective = regexp.MustCompile(`(?m)^[ \t]*pid[ \t]+([^;\s]+)[ \t]*;`)
	blocks       = regexp.MustCompile(`(?s)\{[^{}]*\}`)
	comments     = regexp.MustCompile(`#[^\n]*`)
)

// master returns the master process's PID from its pid file: the main
// configuration file's pid directive (the file of -c, or the one nginx was
// built with), or without one the pid path nginx was built with.
func (p *Provider) master(ctx context.Context) (int, error) {
	if p.pidFile == "" {
		v, _ := p.nginx(ctx, "-V")
		built := func(opt string) string {
			if i := strings.Index(v, opt); i >= 0 {
				if f := strings.Fields(v[i+len(opt):]); len(f) > 0 {
					return f[0]
				}
			}
			return ""
		}
		prefix := built("--prefix=")
		if i := slices.Index(p.cfg.Command, "-p"); i >= 0 && i+1 < len(p.cfg.Command) {
			prefix = p.cfg.Command[i+1]
		}
		abs := func(f string) string {
			if f == "" || path.IsAbs(f) || prefix == "" {
				return f
			}
			return path.Join(prefix, f)
		}
		conf := built("--conf-path=")
		if i := slices.Index(p.cfg.Command, "-c"); i >= 0 && i+1 < len(p.cfg.Command) {
			conf = p.cfg.Command[i+1]
		}
		if conf = abs(conf); conf != "" {
			b, err := p.cfg.Host.ReadFile(ctx, conf)
			if err != nil {
				return 0, fmt.Errorf("nginx: read its configuration %s: %w", conf, err)
			}
			// The main context's directive only: comments and blocks
			// removed, innermost first.
			text := comments.ReplaceAllString(string(b), "")
			for blocks.MatchString(text) {
				text = blocks.ReplaceAllString(text, ";")
			}
			if m := pidDirective.FindStringSubmatch(text); m != nil {
				p.pidFile = abs(m[1])
			}
		}
		if p.pidFile == "" {
			p.pidFile = abs(built("--pid-path="))
		}
		if p.pidFile == "" {
			p.pidFile = "/run/nginx.pid"
		}
	}
	b, err := p.cfg.Host.ReadFile(ctx, p.pidFile)
	if notExist(err) {
		return 0, fmt.Errorf("nginx is not running: no pid file %s (start it, or set command to the command line that runs it, with -c)", p.pidFile)
	}
	if err != nil {
		return 0, fmt.Errorf("nginx: its pid file %s: %w", p.pidFile, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("nginx: pid file %s holds %q, not a process ID: is nginx running?", p.pidFile, shortText(string(b)))
	}
	return pid, nil
}

// children lists the master's child processes (its workers) with ps, in
// the form both procps and BSD ps understand.
func (p *Provider) children(ctx context.Context, master int) ([]int, error) {
	out, err := p.cfg.Host.Run(ctx, []string{"ps", "-A", "-o", "pid=", "-o", "ppid="})
	if err != nil {
		return nil, fmt.Errorf("nginx: list worker processes (ps): %v: %s", err, lastLines(out))
	}
	var pids []int
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		pid, err1 := strconv.Atoi(f[0])
		ppid, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil && ppid == master {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("nginx: master process %d has no workers: is nginx running?", master)
	}
	return pids, nil
}

// lastLines is the end of a command's output, for an error.
func lastLines(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) > 4 {
		lines = lines[len(lines)-4:]
	}
	return strings.Join(lines, " | ")
}
