package inbound

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// proxyWarnInterval is how often warnUntrustedProxy may log.
const proxyWarnInterval = time.Hour

// warnUntrustedProxy logs, at most once per proxyWarnInterval, that a
// callback came with X-Forwarded-For from a peer that is not a trusted proxy:
// most likely the Ingress controller, missing from --trusted-proxies. Then
// every browser behind it shares one per-address bucket, so one client's junk
// callbacks get every other unverifiable callback answered 429 (callbacks
// with a valid signed state are not limited by it, so employers still get
// through).
func (s *Server) warnUntrustedProxy(r *http.Request) {
	if len(r.Header.Values("X-Forwarded-For")) == 0 {
		return
	}
	peer := parseHostAddr(r.RemoteAddr)
	if isTrusted(peer, s.cfg.TrustedProxies) {
		return
	}
	now := s.cfg.Now()
	last := s.proxyWarned.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < proxyWarnInterval || !s.proxyWarned.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	s.log.Info("WARNING: callbacks arrive through a proxy (X-Forwarded-For) whose address is not in --trusted-proxies, so every client behind it shares one per-address rate limit (--callback-rate-per-ip); set --trusted-proxies to the Ingress controller's or load balancer's addresses (chart: inbound.trustedProxies)",
		"peer", peer.String())
}

// ParseTrustedProxies parses a comma-separated list of CIDRs or addresses
// (the --trusted-proxies flag).
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: %w", f, err)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", f, err)
		}
		out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
	}
	return out, nil
}

// clientIP is the address a request came from. The peer address counts
// unless it is a trusted proxy; then X-Forwarded-For is read from the right,
// skipping trusted proxies, as ingress controllers append to it: the first
// untrusted hop is the client. Anything unparsable stops the walk at the last
// trusted hop, so a forged header can only name an address, never hide one.
func clientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := parseHostAddr(r.RemoteAddr)
	if !peer.IsValid() || !isTrusted(peer, trusted) {
		return peer
	}
	addr := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return addr
			}
			addr = a.Unmap()
			if !isTrusted(addr, trusted) {
				return addr
			}
		}
	}
	return addr
}

func parseHostAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ipKey groups IPv6 clients by /64 (one host usually owns a whole /64), so an
// attacker cannot reset the per-address limit by rotating addresses in it.
func ipKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
