package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// sample is one Prometheus series value.
type sample struct {
	labels map[string]string
	value  float64
}

// metricSet is a parsed Prometheus text exposition: name -> samples.
type metricSet map[string][]sample

// parseMetrics reads the Prometheus text format (the subset client_golang
// writes: no timestamps needed, escaped label values).
func parseMetrics(r io.Reader) (metricSet, error) {
	m := metricSet{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, rest, err := splitSeries(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		m[name] = append(m[name], sample{labels: labels, value: v})
	}
	return m, sc.Err()
}

func splitSeries(line string) (name string, labels map[string]string, rest string, err error) {
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return "", nil, "", fmt.Errorf("no value")
	}
	name = line[:i]
	labels = map[string]string{}
	if line[i] == ' ' {
		return name, labels, line[i+1:], nil
	}
	j := i + 1
	for j < len(line) && line[j] != '}' {
		eq := strings.IndexByte(line[j:], '=')
		if eq < 0 {
			return "", nil, "", fmt.Errorf("bad labels")
		}
		key := strings.TrimLeft(line[j:j+eq], ", ")
		j += eq + 1
		if j >= len(line) || line[j] != '"' {
			return "", nil, "", fmt.Errorf("bad label value")
		}
		j++
		var b strings.Builder
		for j < len(line) && line[j] != '"' {
			if line[j] == '\\' && j+1 < len(line) {
				j++
				switch line[j] {
				case 'n':
					b.WriteByte('\n')
				default:
					b.WriteByte(line[j])
				}
			} else {
				b.WriteByte(line[j])
			}
			j++
		}
		j++ // closing quote
		labels[key] = b.String()
		for j < len(line) && line[j] == ',' {
			j++
		}
	}
	if j >= len(line) {
		return "", nil, "", fmt.Errorf("unterminated labels")
	}
	return name, labels, line[j+1:], nil
}

// sum adds the samples of name whose labels include every pair of match.
func (m metricSet) sum(name string, match ...string) float64 {
	total := 0.0
	for _, s := range m[name] {
		ok := true
		for i := 0; i+1 < len(match); i += 2 {
			if s.labels[match[i]] != match[i+1] {
				ok = false
				break
			}
		}
		if ok {
			total += s.value
		}
	}
	return total
}

// has reports whether any sample of name matches.
func (m metricSet) has(name string, match ...string) bool {
	for _, s := range m[name] {
		ok := true
		for i := 0; i+1 < len(match); i += 2 {
			if s.labels[match[i]] != match[i+1] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// byLabel sums name per value of one label.
func (m metricSet) byLabel(name, label string, match ...string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m[name] {
		ok := true
		for i := 0; i+1 < len(match); i += 2 {
			if s.labels[match[i]] != match[i+1] {
				ok = false
				break
			}
		}
		if ok {
			out[s.labels[label]] += s.value
		}
	}
	return out
}

var scrapeClient = &http.Client{Timeout: 5 * time.Second}

func scrape(ctx context.Context, url string) (metricSet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// writeMethods are the HTTP methods that write to the API server.
var writeMethods = []string{"POST", "PUT", "PATCH", "DELETE"}

// apiRequests is rest_client_requests_total by method.
func apiRequests(m metricSet) map[string]float64 {
	return m.byLabel("rest_client_requests_total", "method")
}

func diffFloat(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; math.Abs(d) > 0 {
			out[k] = d
		}
	}
	return out
}
