package finch

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultAPIHost is the host of DefaultBaseURL: the only Finch API host the
// operator calls unless told otherwise (--finch-api-hosts).
const DefaultAPIHost = "api.tryfinch.com"

// APIHosts is the operator's allow-list of Finch API hosts: the hosts an
// app's apiURL may name. A namespace that may edit its FinchApp could
// otherwise point the operator at any address it can reach (an internal
// service, or a server of its own that answers as Finch does, e.g. with the
// per-IP penalty).
//
// An entry is host (that host on the scheme's default port: 443 for https,
// 80 for http), host:port (that port only) or host:* (any port, one guard per
// port: for local simulators on ephemeral ports). IPv6 addresses are written
// in brackets. The zero value allows DefaultAPIHost only.
type APIHosts struct {
	entries []hostEntry
}

type hostEntry struct {
	host string // lower case, without brackets
	port string // "" for the scheme's default port, "*" for any
}

// anyPort is the port of an entry that allows every port of its host.
const anyPort = "*"

// ParseAPIHosts reads a comma-separated list of host, host:port or host:*
// entries. It refuses an empty list: the operator must be allowed to call
// some Finch.
func ParseAPIHosts(s string) (APIHosts, error) {
	var h APIHosts
	seen := map[hostEntry]bool{}
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		e, err := parseHostEntry(raw)
		if err != nil {
			return APIHosts{}, err
		}
		if !seen[e] {
			seen[e] = true
			h.entries = append(h.entries, e)
		}
	}
	if len(h.entries) == 0 {
		return APIHosts{}, errors.New("no host given: name at least one Finch API host, e.g. " + DefaultAPIHost)
	}
	return h, nil
}

// MustParseAPIHosts is ParseAPIHosts for constant lists (tests, defaults).
func MustParseAPIHosts(s string) APIHosts {
	h, err := ParseAPIHosts(s)
	if err != nil {
		panic(err)
	}
	return h
}

func parseHostEntry(raw string) (hostEntry, error) {
	host, port := raw, ""
	switch {
	case strings.HasPrefix(raw, "["):
		end := strings.Index(raw, "]")
		if end < 0 {
			return hostEntry{}, fmt.Errorf("%q: unclosed [ of an IPv6 address", raw)
		}
		host, port = raw[1:end], raw[end+1:]
		if port != "" {
			if !strings.HasPrefix(port, ":") {
				return hostEntry{}, fmt.Errorf("%q: want [address] or [address]:port", raw)
			}
			port = port[1:]
		}
	case strings.Count(raw, ":") == 1:
		host, port, _ = strings.Cut(raw, ":")
	case strings.Contains(raw, ":"):
		return hostEntry{}, fmt.Errorf("%q: write an IPv6 address in brackets, e.g. [::1]:8090", raw)
	}
	host = strings.ToLower(host)
	if host == "" || strings.ContainsAny(host, "/@?#[] \t") {
		return hostEntry{}, fmt.Errorf("%q: want host, host:port or host:* (no scheme or path)", raw)
	}
	if port != "" && port != anyPort {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return hostEntry{}, fmt.Errorf("%q: port must be 1-65535 or *", raw)
		}
	}
	if strings.HasPrefix(raw, "[") || strings.Contains(host, ":") {
		if net.ParseIP(host) == nil {
			return hostEntry{}, fmt.Errorf("%q: %q is not an IPv6 address", raw, host)
		}
	}
	return hostEntry{host: host, port: port}, nil
}

func (h APIHosts) list() []hostEntry {
	if len(h.entries) == 0 {
		return []hostEntry{{host: DefaultAPIHost}}
	}
	return h.entries
}

// String renders the list the way --finch-api-hosts takes it.
func (h APIHosts) String() string {
	var parts []string
	for _, e := range h.list() {
		host := e.host
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		if e.port != "" {
			host += ":" + e.port
		}
		parts = append(parts, host)
	}
	return strings.Join(parts, ",")
}

// Allows reports whether the http(s) URL u names an allowed host and port.
func (h APIHosts) Allows(u *url.URL) bool {
	host, port, ok := hostPort(u)
	if !ok {
		return false
	}
	for _, e := range h.list() {
		if e.host != host {
			continue
		}
		switch e.port {
		case anyPort:
			return true
		case "":
			if port == defaultPort(u.Scheme) {
				return true
			}
		default:
			if port == e.port {
				return true
			}
		}
	}
	return false
}

// HostKey identifies the API host of base URL u for the per-IP guard:
// scheme://host:port, lower case, with the port always spelled out, so that
// https://api.tryfinch.com and https://api.tryfinch.com:443 share a guard.
func HostKey(u *url.URL) (string, error) {
	host, port, ok := hostPort(u)
	if !ok {
		return "", fmt.Errorf("%q is not an absolute http(s) URL", u.Redacted())
	}
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(host, port), nil
}

// HostOf is u's host[:port] as people write it (for messages): the port only
// when it is not the scheme's default.
func HostOf(u *url.URL) string {
	host, port, ok := hostPort(u)
	if !ok {
		return u.Host
	}
	if port == defaultPort(u.Scheme) {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

func hostPort(u *url.URL) (host, port string, ok bool) {
	if u == nil || u.Host == "" {
		return "", "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", "", false
	}
	host = strings.ToLower(u.Hostname())
	port = u.Port()
	if port == "" {
		port = defaultPort(scheme)
	}
	return host, port, host != ""
}

func defaultPort(scheme string) string {
	if strings.EqualFold(scheme, "http") {
		return "80"
	}
	return "443"
}
