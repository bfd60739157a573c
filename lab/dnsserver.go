package lab

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// dnsServer is an authoritative DNS server (UDP and TCP on one loopback
// port) for the lab's DigitalOcean domains, Cloudflare zones and Hetzner
// zones. It serves a
// published copy of the zones; a record change is published DNSApply after it
// is made, as a provider's change takes a moment to reach its nameservers.
type dnsServer struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu     sync.RWMutex
	zones  map[string]*servedZone // by FQDN with trailing dot
	serial uint32
}

type servedZone struct {
	name    string
	records []dns.RR
}

// nameserver is the NS name the lab's zones delegate to.
const nameserver = "ns1.lab.vmswap.test."

func startDNS(l *Lab, addr string) (*dnsServer, error) {
	s := &dnsServer{zones: map[string]*servedZone{}, serial: uint32(time.Now().Unix())}
	var pc net.PacketConn
	var tl net.Listener
	// UDP and TCP share one port; when the port is chosen for us, the TCP
	// one may be taken, so try a few.
	for attempt := 0; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return nil, fmt.Errorf("lab: DNS listener: %w", err)
		}
		if tl, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" || attempt == 20 {
			return nil, fmt.Errorf("lab: DNS listener: %w", err)
		}
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: tl, Handler: h}
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	return s, nil
}

func (s *dnsServer) close() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

// publishDNS serves the current records now.
func (l *Lab) publishDNS() { l.dnsSrv.publish(l.buildZones()) }

// dnsChanged publishes the current records after DNSApply.
func (l *Lab) dnsChanged() {
	if l.cfg.Durations.DNSApply <= 0 {
		l.publishDNS()
		return
	}
	l.after(l.cfg.Durations.DNSApply, l.publishDNS)
}

// buildZones renders the lab's domains and zones as DNS records.
// Callers hold l.mu (or are in Start before the lab is shared).
func (l *Lab) buildZones() map[string]*servedZone {
	out := map[string]*servedZone{}
	add := func(zoneName, name, typ string, ttl int, data string, prio *int) {
		z := out[dns.Fqdn(zoneName)]
		if z == nil {
			z = &servedZone{name: dns.Fqdn(zoneName)}
			out[z.name] = z
		}
		if ttl <= 1 {
			ttl = 300 // Cloudflare's "automatic"
		}
		text := fmt.Sprintf("%s %d IN %s ", dns.Fqdn(name), ttl, typ)
		switch typ {
		case "TXT":
			text += fmt.Sprintf("%q", data)
		case "MX":
			p := 10
			if prio != nil {
				p = *prio
			}
			text += fmt.Sprintf("%d %s", p, dns.Fqdn(data))
		case "CNAME", "NS":
			text += dns.Fqdn(data)
		default:
			text += data
		}
		rr, err := dns.NewRR(text)
		if err == nil && rr != nil {
			z.records = append(z.records, rr)
		}
	}
	for _, d := range l.st.Domains {
		for _, r := range d.Records {
			if r.Type == "SOA" || r.Type == "NS" {
				continue
			}
			add(d.Name, fqdn(r.Name, d.Name), r.Type, r.TTL, r.Data, r.Priority)
		}
		if out[dns.Fqdn(d.Name)] == nil {
			out[dns.Fqdn(d.Name)] = &servedZone{name: dns.Fqdn(d.Name)}
		}
	}
	for _, z := range l.st.Zones {
		for _, r := range z.Records {
			content := r.Content
			if r.Proxied && r.Type == "A" {
				content = l.hostIP(edgeHost) // proxied: clients reach the edge
			}
			add(z.Name, r.Name, r.Type, r.TTL, content, nil)
		}
		if out[dns.Fqdn(z.Name)] == nil {
			out[dns.Fqdn(z.Name)] = &servedZone{name: dns.Fqdn(z.Name)}
		}
	}
	l.hetznerZoneRecords(out)
	return out
}

func (s *dnsServer) publish(zones map[string]*servedZone) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zones = zones
	s.serial++
}

func (s *dnsServer) soa(zone string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 1800},
		Ns:      nameserver,
		Mbox:    "hostmaster." + zone,
		Serial:  s.serial,
		Refresh: 10800, Retry: 3600, Expire: 604800, Minttl: 30,
	}
}

func (s *dnsServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	var z *servedZone
	for zn, cand := range s.zones {
		if dns.IsSubDomain(zn, name) && (z == nil || len(zn) > len(z.name)) {
			z = cand
		}
	}
	if z == nil {
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
		w.WriteMsg(m)
		return
	}
	exists := name == z.name
	for _, rr := range z.records {
		if strings.EqualFold(rr.Header().Name, name) {
			exists = true
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
	}
	if name == z.name {
		switch q.Qtype {
		case dns.TypeSOA:
			m.Answer = append(m.Answer, s.soa(z.name))
		case dns.TypeNS:
			m.Answer = append(m.Answer, &dns.NS{Hdr: dns.RR_Header{Name: z.name, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 1800}, Ns: nameserver})
		}
	}
	if len(m.Answer) == 0 {
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = append(m.Ns, s.soa(z.name))
	}
	w.WriteMsg(m)
}
