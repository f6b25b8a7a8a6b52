package finch

import (
	"net/url"
	"testing"
)

func TestAPIHostsAllows(t *testing.T) {
	cases := []struct {
		list string
		url  string
		want bool
	}{
		// The zero value and the default: Finch's host on its default port only.
		{"", "https://api.tryfinch.com", true},
		{"", "https://api.tryfinch.com:443/", true},
		{"", "https://API.TRYFINCH.COM", true},
		{"", "https://api.tryfinch.com:8443", false},
		{"", "https://api.tryfinch.com.evil.example", false},
		{"", "https://evil.example/api.tryfinch.com", false},
		{"", "http://127.0.0.1:8090", false},
		{"api.tryfinch.com", "http://api.tryfinch.com", true},
		// host:port is that port only.
		{"api.tryfinch.com,127.0.0.1:8090", "http://127.0.0.1:8090", true},
		{"api.tryfinch.com,127.0.0.1:8090", "http://127.0.0.1:8091", false},
		{"127.0.0.1:8090", "https://api.tryfinch.com", false},
		// host:* is any port.
		{"127.0.0.1:*", "http://127.0.0.1:40123", true},
		{"127.0.0.1:*", "http://localhost:40123", false},
		// IPv6 in brackets.
		{"[::1]:8090", "http://[::1]:8090", true},
		{"[::1]", "http://[::1]:8090", false},
		{"[::1]", "http://[::1]", true},
		// Not http(s): never.
		{"api.tryfinch.com", "ftp://api.tryfinch.com", false},
	}
	for _, c := range cases {
		var h APIHosts
		if c.list != "" {
			h = MustParseAPIHosts(c.list)
		}
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Allows(u); got != c.want {
			t.Errorf("%q.Allows(%s) = %v, want %v", c.list, c.url, got, c.want)
		}
	}
}

func TestParseAPIHosts(t *testing.T) {
	h, err := ParseAPIHosts(" api.tryfinch.com , 127.0.0.1:8090,api.tryfinch.com,[::1]:*")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h.String(), "api.tryfinch.com,127.0.0.1:8090,[::1]:*"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (APIHosts{}).String(); got != DefaultAPIHost {
		t.Errorf("zero value String() = %q", got)
	}
	for _, bad := range []string{"", " , ", "https://api.tryfinch.com", "api.tryfinch.com/v1", "host:0", "host:70000", "host:x", "::1", "[::1", "[nothost]:80", "user@host"} {
		if _, err := ParseAPIHosts(bad); err == nil {
			t.Errorf("ParseAPIHosts(%q) = nil error", bad)
		}
	}
}

func TestHostKeyAndHostOf(t *testing.T) {
	for raw, want := range map[string][2]string{
		"https://api.tryfinch.com":       {"https://api.tryfinch.com:443", "api.tryfinch.com"},
		"https://api.tryfinch.com:443/x": {"https://api.tryfinch.com:443", "api.tryfinch.com"},
		"http://127.0.0.1:8090":          {"http://127.0.0.1:8090", "127.0.0.1:8090"},
		"HTTP://Sim.Example":             {"http://sim.example:80", "sim.example"},
		"http://[::1]:8090/prefix":       {"http://[::1]:8090", "[::1]:8090"},
	} {
		u, _ := url.Parse(raw)
		key, err := HostKey(u)
		if err != nil || key != want[0] || HostOf(u) != want[1] {
			t.Errorf("%s: HostKey %q (%v), HostOf %q; want %q, %q", raw, key, err, HostOf(u), want[0], want[1])
		}
	}
}
