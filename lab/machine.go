package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Paths inside a droplet's disk directory.
const (
	webRoot        = "var/www/html"
	authorizedKeys = "root/.ssh/authorized_keys"
	hostKeyFile    = "etc/ssh/ssh_host_ed25519_key"
	hostnameFile   = "etc/hostname"
)

// machine is the running part of a droplet: its HTTP, HTTPS and SSH servers.
type machine struct {
	lab  *Lab
	id   int
	ip   string
	dir  string
	size Size

	mu       sync.Mutex
	httpSrv  *http.Server
	httpsSrv *http.Server // the same site over TLS
	sshLn    net.Listener
	fault    string
	conns    sync.WaitGroup
}

func (l *Lab) newMachine(d *droplet) *machine {
	m := &machine{lab: l, id: d.ID, ip: d.IP, dir: l.diskDir("d", d.ID), size: machineSize(d), fault: d.Fault}
	l.machines[d.ID] = m
	return m
}

// start opens the droplet's listeners. An address already in use is an error
// that names it.
func (m *machine) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.httpSrv != nil {
		return nil
	}
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, port := range []int{m.lab.cfg.HTTPPort, m.lab.cfg.HTTPSPort, m.lab.cfg.SSHPort} {
		ln, err := net.Listen("tcp", net.JoinHostPort(m.ip, strconv.Itoa(port)))
		if err != nil {
			closeAll()
			return fmt.Errorf("lab: droplet %d: %w", m.id, err)
		}
		lns = append(lns, ln)
	}
	cfg, err := m.sshConfig()
	if err != nil {
		closeAll()
		return err
	}
	m.httpSrv = &http.Server{Handler: http.HandlerFunc(m.serveHTTP), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	m.httpsSrv = &http.Server{Handler: http.HandlerFunc(m.serveHTTP), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0),
		TLSConfig: &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return m.lab.ca.leaf(m.ip) }}}
	hl, tl, sl := lns[0], lns[1], lns[2]
	m.sshLn = sl
	go m.httpSrv.Serve(hl)
	go m.httpsSrv.ServeTLS(tl, "", "")
	go m.serveSSH(sl, cfg)
	return nil
}

// stop closes the listeners. graceful lets requests in flight finish (an OS
// shutdown); otherwise connections are cut (power off).
func (m *machine) stop(graceful bool) {
	m.mu.Lock()
	srvs, sl := []*http.Server{m.httpSrv, m.httpsSrv}, m.sshLn
	m.httpSrv, m.httpsSrv, m.sshLn = nil, nil, nil
	m.mu.Unlock()
	if srvs[0] == nil {
		return
	}
	sl.Close()
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, srv := range srvs {
			wg.Go(func() { srv.Shutdown(ctx) })
		}
		wg.Wait()
		return
	}
	for _, srv := range srvs {
		srv.Close()
	}
}

func (m *machine) hostname() string {
	b, err := os.ReadFile(filepath.Join(m.dir, hostnameFile))
	if err != nil {
		return fmt.Sprintf("droplet-%d", m.id)
	}
	return strings.TrimSpace(string(b))
}

func (m *machine) serveHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	fault := m.fault
	m.mu.Unlock()
	w.Header().Set("X-Served-By", m.hostname())
	switch fault {
	case FaultServe500:
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	case FaultServeContent:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<h1>It works!</h1><p>Default page of a freshly installed web server.</p>\n")
		return
	}
	switch {
	case r.URL.Path == "/health":
		fmt.Fprintln(w, "ok")
		return
	case r.URL.Path == "/served-by":
		// The header's answer in a page, for a browser's DOM to show.
		name := html.EscapeString(m.hostname())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html>\n<title>%s</title>\n<p>Served by %s</p>\n", name, name)
		return
	case r.URL.Path == "/login" && r.Method == http.MethodPost:
		m.login(w, r)
		return
	case r.URL.Path == "/me":
		m.me(w, r)
		return
	case strings.HasPrefix(r.URL.Path, "/uploads/") && r.Method == http.MethodPut:
		m.upload(w, r)
		return
	}
	http.FileServer(http.Dir(filepath.Join(m.dir, webRoot))).ServeHTTP(w, r)
}

// The droplet's app keeps what users write on its disk, as a typical web
// app does: uploads under the web root, sessions as files.
const (
	uploadsDir  = webRoot + "/uploads"
	sessionsDir = "var/lib/app/sessions"
	maxUpload   = 16 << 20
)

func validName(n string) bool {
	if n == "" || n == "." || n == ".." || len(n) > 200 {
		return false
	}
	return !strings.ContainsAny(n, "/\\\x00")
}

// upload: PUT /uploads/{name} writes the body to the web root's uploads.
func (m *machine) upload(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/uploads/")
	if !validName(name) {
		http.Error(w, "bad name", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxUpload))
	if err != nil {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err := writeFile(filepath.Join(m.dir, uploadsDir, name), string(body)); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// login: POST /login writes a session file and sets its sid cookie.
func (m *machine) login(w http.ResponseWriter, r *http.Request) {
	b := make([]byte, 16)
	rand.Read(b)
	sid := hex.EncodeToString(b)
	user := r.FormValue("user")
	if user == "" {
		user = "anonymous"
	}
	if err := writeFile(filepath.Join(m.dir, sessionsDir, "sess_"+sid), "user="+user+"\n"); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: "sid", Value: sid, Path: "/", HttpOnly: true})
	fmt.Fprintf(w, "logged in as %s\n", user)
}

// me: GET /me answers 200 when this server holds the caller's session.
func (m *machine) me(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie("sid")
	if err == nil {
		if _, herr := hex.DecodeString(c.Value); herr == nil && c.Value != "" {
			if b, err := os.ReadFile(filepath.Join(m.dir, sessionsDir, "sess_"+c.Value)); err == nil {
				w.Write(b)
				return
			}
		}
	}
	http.Error(w, "not logged in", http.StatusUnauthorized)
}

// touch sets a file's mtime to now, creating it, as touch(1) does.
func (m *machine) touch(p string) error {
	full := filepath.Join(m.dir, filepath.Clean("/"+p))
	now := time.Now()
	if err := os.Chtimes(full, now, now); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(full, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// serveSFTP serves the sftp subsystem on one channel, rooted at the disk.
func (m *machine) serveSFTP(ch ssh.Channel) {
	root, err := os.OpenRoot(m.dir)
	if err != nil {
		return
	}
	defer root.Close()
	srv := sftp.NewRequestServer(ch, newSFTPHandlers(root))
	srv.Serve()
	srv.Close()
}

// sshConfig builds a server config accepting the keys in the disk's
// authorized_keys, with the disk's host key.
func (m *machine) sshConfig() (*ssh.ServerConfig, error) {
	pemBytes, err := os.ReadFile(filepath.Join(m.dir, hostKeyFile))
	if err != nil {
		return nil, fmt.Errorf("lab: droplet %d: host key: %w", m.id, err)
	}
	signer, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("lab: droplet %d: host key: %w", m.id, err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			b, err := os.ReadFile(filepath.Join(m.dir, authorizedKeys))
			if err != nil {
				return nil, errors.New("no authorized keys")
			}
			for len(b) > 0 {
				pk, _, _, rest, err := ssh.ParseAuthorizedKey(b)
				if err != nil {
					break
				}
				if bytes.Equal(pk.Marshal(), key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
				b = rest
			}
			return nil, errors.New("key not authorized")
		},
	}
	cfg.AddHostKey(signer)
	return cfg, nil
}

func (m *machine) serveSSH(ln net.Listener, cfg *ssh.ServerConfig) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go m.handleSSH(c, cfg)
	}
}

func (m *machine) handleSSH(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	c.SetDeadline(time.Time{}) // a long copy is not a stuck handshake
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range creqs {
				if req.Type == "subsystem" && len(req.Payload) > 4 && string(req.Payload[4:]) == "sftp" {
					req.Reply(true, nil)
					m.serveSFTP(ch)
					return
				}
				if req.Type != "exec" {
					req.Reply(false, nil)
					continue
				}
				var p struct{ Command string }
				if err := ssh.Unmarshal(req.Payload, &p); err != nil {
					req.Reply(false, nil)
					continue
				}
				req.Reply(true, nil)
				out, errOut, code := m.exec(p.Command)
				io.WriteString(ch, out)
				io.WriteString(ch.Stderr(), errOut)
				status := make([]byte, 4)
				binary.BigEndian.PutUint32(status, uint32(code))
				ch.SendRequest("exit-status", false, status)
				return
			}
		}()
	}
}

// exec answers the commands a verifier runs inside a VM, with figures that
// match the droplet's size. Real guests see a little less memory and disk than
// the size says (kernel reservations, filesystem overhead); so does the lab.
func (m *machine) exec(cmd string) (stdout, stderr string, code int) {
	fields := strings.Fields(cmd)
	switch {
	case cmd == "cat /proc/meminfo":
		total := int64(m.size.MemoryMB) * 1024 * 97 / 100
		return fmt.Sprintf("MemTotal:       %d kB\nMemFree:        %d kB\nMemAvailable:   %d kB\nBuffers:           20480 kB\nCached:           204800 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n",
			total, total*8/10, total*9/10), "", 0
	case cmd == "df -P -B1 /":
		size := int64(m.size.DiskGB) * 1 << 30 * 97 / 100
		used := m.diskUsed()
		return fmt.Sprintf("Filesystem       1-blocks       Used     Available Capacity Mounted on\n/dev/vda1 %d %d %d %d%% /\n",
			size, used, size-used, used*100/size+1), "", 0
	case cmd == "nproc":
		return fmt.Sprintf("%d\n", m.size.VCPUs), "", 0
	case cmd == "sync" || cmd == "true":
		return "", "", 0
	case cmd == "false":
		return "", "", 1
	case cmd == "date +%s":
		return fmt.Sprintf("%d\n", time.Now().Unix()), "", 0
	case len(fields) > 0 && fields[0] == "echo":
		return strings.Join(fields[1:], " ") + "\n", "", 0
	case len(fields) == 2 && fields[0] == "sleep":
		n, err := strconv.ParseFloat(fields[1], 64)
		if err != nil || n < 0 || n > 3600 {
			return "", fmt.Sprintf("sleep: invalid time interval '%s'\n", fields[1]), 1
		}
		time.Sleep(time.Duration(n * float64(time.Second)))
		return "", "", 0
	case len(fields) == 2 && fields[0] == "touch":
		if err := m.touch(fields[1]); err != nil {
			return "", fmt.Sprintf("touch: cannot touch '%s': %v\n", fields[1], err), 1
		}
		return "", "", 0
	case cmd == "hostname":
		return m.hostname() + "\n", "", 0
	case len(fields) == 2 && fields[0] == "cat":
		b, err := os.ReadFile(filepath.Join(m.dir, filepath.Clean("/"+fields[1])))
		if err != nil {
			return "", fmt.Sprintf("cat: %s: No such file or directory\n", fields[1]), 1
		}
		return string(b), "", 0
	}
	name := "sh"
	if len(fields) > 0 {
		name = fields[0]
	}
	return "", fmt.Sprintf("sh: 1: %s: not found\n", name), 127
}

func (m *machine) diskUsed() int64 {
	var n int64 = 2 << 30 // the OS itself
	filepath.WalkDir(m.dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// provisionDisk lays out a new droplet's disk: from a snapshot's copy, or a
// fresh distribution image with a default page. Either way the droplet gets
// its own host key, and its own hostname unless name is "" (the image's),
// as cloud-init gives a new instance.
func provisionDisk(dir, fromSnapshot, name string, keys []string) error {
	if fromSnapshot != "" {
		if err := copyDir(fromSnapshot, dir); err != nil {
			return err
		}
	} else {
		page := fmt.Sprintf("<!doctype html>\n<title>%s</title>\n<h1>Hello from %s</h1>\n", name, name)
		if err := writeFile(filepath.Join(dir, webRoot, "index.html"), page); err != nil {
			return err
		}
	}
	if name != "" {
		if err := writeFile(filepath.Join(dir, hostnameFile), name+"\n"); err != nil {
			return err
		}
	}
	if len(keys) > 0 {
		if err := appendLines(filepath.Join(dir, authorizedKeys), keys); err != nil {
			return err
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, hostKeyFile), string(pem.EncodeToMemory(blk)))
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

func appendLines(path string, lines []string) error {
	have := map[string]bool{}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			have[strings.TrimSpace(sc.Text())] = true
		}
		f.Close()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, k := range lines {
		if k = strings.TrimSpace(k); k != "" && !have[k] {
			fmt.Fprintln(f, k)
		}
	}
	return nil
}

// copyDir copies a directory tree as a disk image holds it: regular files
// with their modes and mtimes, symlinks as symlinks.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case !d.Type().IsRegular():
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if err := os.WriteFile(target, b, fi.Mode().Perm()); err != nil {
			return err
		}
		if err := os.Chmod(target, fi.Mode().Perm()); err != nil {
			return err
		}
		return os.Chtimes(target, fi.ModTime(), fi.ModTime())
	})
}

// WriteFile puts a file on a droplet's disk, as an operator deploying a site
// would. path is relative to the disk root, e.g. "var/www/html/index.html".
func (l *Lab) WriteFile(dropletID int, path, content string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.st.Droplets[dropletID]; !ok {
		return fmt.Errorf("lab: droplet %d not found", dropletID)
	}
	return writeFile(filepath.Join(l.diskDir("d", dropletID), filepath.Clean("/"+path)), content)
}

// ReadFile reads a file on a droplet's disk, as an operator logged in to it
// would. path is relative to the disk root.
func (l *Lab) ReadFile(dropletID int, path string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.st.Droplets[dropletID]; !ok {
		return "", fmt.Errorf("lab: droplet %d not found", dropletID)
	}
	b, err := os.ReadFile(filepath.Join(l.diskDir("d", dropletID), filepath.Clean("/"+path)))
	return string(b), err
}
