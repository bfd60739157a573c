package verify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Host key policies.
const (
	// HostKeyStrict accepts only a host key already in known_hosts.
	HostKeyStrict = "strict"
	// HostKeyAcceptNew records the key of a host not yet in known_hosts and
	// refuses a changed key, as OpenSSH's StrictHostKeyChecking=accept-new.
	HostKeyAcceptNew = "accept-new"
)

// SSHConfig says how to reach a server over SSH.
type SSHConfig struct {
	User string
	// KeyFile is a private key. Empty: the agent at SSH_AUTH_SOCK.
	KeyFile string
	// Port is the SSH port. Zero: 22.
	Port int
	// KnownHosts is the known_hosts file. Empty: ~/.ssh/known_hosts.
	KnownHosts string
	// HostKeyPolicy is HostKeyStrict or HostKeyAcceptNew. Empty: strict.
	HostKeyPolicy string
	// HostKeyAlias, when set, is the name the host key is recorded and
	// checked under instead of the address: cloud addresses are reused, a
	// server's ID is not.
	HostKeyAlias string
	// Timeout bounds connecting and each command. Zero: 15s.
	Timeout time.Duration
}

// Facts are what a server reports about itself.
type Facts struct {
	MemoryBytes float64 `json:"memory_bytes"`
	DiskBytes   float64 `json:"disk_bytes"`
	CPUs        float64 `json:"cpus"`
	Hostname    string  `json:"hostname"`
}

// SSHClient runs commands on one server.
type SSHClient struct {
	c       *ssh.Client
	timeout time.Duration
}

// DialSSH connects to host (an IP or name; the port comes from cfg).
func DialSSH(ctx context.Context, host string, cfg SSHConfig) (*SSHClient, error) {
	if cfg.Port == 0 {
		cfg.Port = 22
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Second
	}
	auth, err := authMethod(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	hk, err := hostKeyCallback(cfg.KnownHosts, cfg.HostKeyPolicy, cfg.HostKeyAlias)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(host, strconv.Itoa(cfg.Port))
	d := net.Dialer{Timeout: cfg.Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	conn.SetDeadline(time.Now().Add(cfg.Timeout))
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{User: cfg.User, Auth: []ssh.AuthMethod{auth}, HostKeyCallback: hk, Timeout: cfg.Timeout})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh %s@%s: %w", cfg.User, addr, err)
	}
	conn.SetDeadline(time.Time{})
	return &SSHClient{c: ssh.NewClient(sc, chans, reqs), timeout: cfg.Timeout}, nil
}

func authMethod(keyFile string) (ssh.AuthMethod, error) {
	if keyFile == "" {
		sock := os.Getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return nil, errors.New("ssh: no key: set verify.ssh.key to a private key file, or start an ssh-agent (SSH_AUTH_SOCK)")
		}
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("ssh: agent: %w", err)
		}
		return ssh.PublicKeysCallback(agent.NewClient(conn).Signers), nil
	}
	b, err := os.ReadFile(expandHome(keyFile))
	if err != nil {
		return nil, fmt.Errorf("ssh: key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		var pp *ssh.PassphraseMissingError
		if errors.As(err, &pp) {
			return nil, fmt.Errorf("ssh: key %s is encrypted: load it into ssh-agent and leave verify.ssh.key empty", keyFile)
		}
		// Never echo key material: the parse error names no bytes of it.
		return nil, fmt.Errorf("ssh: key %s: not a private key this tool can read", keyFile)
	}
	return ssh.PublicKeys(signer), nil
}

func expandHome(p string) string {
	if strings.HasPrefix(p, "~/") {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, p[2:])
		}
	}
	return p
}

func hostKeyCallback(file, policy, alias string) (ssh.HostKeyCallback, error) {
	if file == "" {
		file = "~/.ssh/known_hosts"
	}
	file = expandHome(file)
	switch policy {
	case "", HostKeyStrict, HostKeyAcceptNew:
	default:
		return nil, fmt.Errorf("ssh: host key policy %q: use %s or %s", policy, HostKeyStrict, HostKeyAcceptNew)
	}
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		if policy != HostKeyAcceptNew {
			return nil, fmt.Errorf("ssh: known_hosts %s: %w: create it or set verify.ssh.known_hosts: accept-new", file, os.ErrNotExist)
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return nil, fmt.Errorf("ssh: %w", err)
		}
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			return nil, fmt.Errorf("ssh: %w", err)
		}
	}
	check, err := knownhosts.New(file)
	if err != nil {
		return nil, fmt.Errorf("ssh: known_hosts %s: %w", file, err)
	}
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if alias != "" {
			_, port, _ := net.SplitHostPort(hostname)
			hostname = net.JoinHostPort(alias, port)
		}
		err := check(hostname, remote, key)
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) && len(ke.Want) == 0 && policy == HostKeyAcceptNew {
			f, ferr := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0o600)
			if ferr != nil {
				return fmt.Errorf("ssh: record host key in %s: %w", file, ferr)
			}
			defer f.Close()
			_, ferr = fmt.Fprintln(f, knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key))
			return ferr
		}
		if errors.As(err, &ke) && len(ke.Want) > 0 {
			return fmt.Errorf("host key of %s changed (known_hosts %s:%d): if the server was rebuilt, remove that line", hostname, ke.Want[0].Filename, ke.Want[0].Line)
		}
		if errors.As(err, &ke) {
			return fmt.Errorf("host %s is not in %s and the policy is strict: set verify.ssh.known_hosts: accept-new, or add its key", hostname, file)
		}
		return err
	}, nil
}

// Run runs one command and returns its standard output.
func (c *SSHClient) Run(ctx context.Context, cmd string) (string, error) {
	s, err := c.c.NewSession()
	if err != nil {
		return "", fmt.Errorf("ssh: %w", err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(c.timeout):
		return "", fmt.Errorf("ssh: %q: no answer in %s", cmd, c.timeout)
	}
	if err != nil {
		return out.String(), fmt.Errorf("ssh: %q: %w: %s", cmd, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Combined runs one command and returns its standard output and error
// interleaved, as a terminal shows them. It is bounded by the connection's
// timeout and by ctx; when either ends, the session is closed.
func (c *SSHClient) Combined(ctx context.Context, cmd string) (string, error) {
	s, err := c.c.NewSession()
	if err != nil {
		return "", fmt.Errorf("ssh: %w", err)
	}
	defer s.Close()
	var out TailBuffer
	s.Stdout, s.Stderr = &out, &out
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return out.String(), ctx.Err()
	case <-time.After(c.timeout):
		return out.String(), fmt.Errorf("no answer in %s", c.timeout)
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return out.String(), fmt.Errorf("exit status %d", ee.ExitStatus())
	}
	return out.String(), err
}

// TailBuffer keeps the last part (64 KiB) of a command's output; stdout
// and stderr may write to it at once.
type TailBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// maxOutput bounds what a command's output keeps: its last part.
const maxOutput = 64 << 10

func (b *TailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.b.Write(p)
	if b.b.Len() > 2*maxOutput {
		keep := append([]byte(nil), b.b.Bytes()[b.b.Len()-maxOutput:]...)
		b.b.Reset()
		b.b.Write(keep)
	}
	return n, err
}

func (b *TailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Close closes the connection.
func (c *SSHClient) Close() error { return c.c.Close() }

// Facts reads memory (/proc/meminfo), root disk size (df) and CPU count (nproc).
func (c *SSHClient) Facts(ctx context.Context) (*Facts, error) {
	f := &Facts{}
	mem, err := c.Run(ctx, "cat /proc/meminfo")
	if err != nil {
		return nil, err
	}
	if f.MemoryBytes, err = parseMeminfo(mem); err != nil {
		return nil, err
	}
	df, err := c.Run(ctx, "df -P -B1 /")
	if err != nil {
		return nil, err
	}
	if f.DiskBytes, err = parseDF(df); err != nil {
		return nil, err
	}
	n, err := c.Run(ctx, "nproc")
	if err != nil {
		return nil, err
	}
	if f.CPUs, err = strconv.ParseFloat(strings.TrimSpace(n), 64); err != nil {
		return nil, fmt.Errorf("ssh: nproc printed %q", strings.TrimSpace(n))
	}
	if h, err := c.Run(ctx, "hostname"); err == nil {
		f.Hostname = strings.TrimSpace(h)
	}
	return f, nil
}

func parseMeminfo(s string) (float64, error) {
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				break
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("ssh: /proc/meminfo has no MemTotal line")
}

func parseDF(s string) (float64, error) {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) >= 2 {
		fields := strings.Fields(lines[len(lines)-1])
		if len(fields) >= 6 {
			if v, err := strconv.ParseFloat(fields[1], 64); err == nil {
				return v, nil
			}
		}
	}
	return 0, fmt.Errorf("ssh: cannot read the disk size from df output %q", s)
}

// CheckKeyFile reports whether a private key file can be used, without
// connecting anywhere: preflight checks it before anything is changed.
func CheckKeyFile(path string) error {
	_, err := authMethod(path)
	return err
}

// SFTP opens an SFTP session on the connection, with concurrent reads and
// writes so that one file's transfer keeps many requests in flight.
func (c *SSHClient) SFTP() (*sftp.Client, error) {
	sc, err := sftp.NewClient(c.c, sftp.UseConcurrentWrites(true), sftp.UseConcurrentReads(true), sftp.MaxConcurrentRequestsPerFile(64))
	if err != nil {
		return nil, fmt.Errorf("sftp: %w (the server needs its sftp subsystem enabled, as OpenSSH has by default)", err)
	}
	return sc, nil
}
