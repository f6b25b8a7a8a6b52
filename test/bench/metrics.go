package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricSet is one scrape of a Prometheus endpoint: family name -> family.
type metricSet map[string]*dto.MetricFamily

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
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// each calls f for every series of name whose labels include every pair of
// match (a missing label matches ""). NAME_count is the sample count of the
// summary or histogram NAME.
func (m metricSet) each(name string, match []string, f func(*dto.Metric, float64)) {
	fam, count := m[name], false
	if base, ok := strings.CutSuffix(name, "_count"); fam == nil && ok {
		fam, count = m[base], true
	}
series:
	for _, x := range fam.GetMetric() {
		for i := 0; i+1 < len(match); i += 2 {
			if label(x, match[i]) != match[i+1] {
				continue series
			}
		}
		f(x, value(x, count))
	}
}

func label(x *dto.Metric, name string) string {
	for _, l := range x.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(x *dto.Metric, count bool) float64 {
	switch {
	case count && x.Summary != nil:
		return float64(x.Summary.GetSampleCount())
	case count && x.Histogram != nil:
		return float64(x.Histogram.GetSampleCount())
	case x.Counter != nil:
		return x.Counter.GetValue()
	case x.Gauge != nil:
		return x.Gauge.GetValue()
	}
	return x.GetUntyped().GetValue()
}

// sum adds the series of name whose labels include every pair of match.
func (m metricSet) sum(name string, match ...string) float64 {
	total := 0.0
	m.each(name, match, func(_ *dto.Metric, v float64) { total += v })
	return total
}

// has reports whether any series of name matches.
func (m metricSet) has(name string, match ...string) bool {
	found := false
	m.each(name, match, func(*dto.Metric, float64) { found = true })
	return found
}

// byLabel sums name per value of one label.
func (m metricSet) byLabel(name, l string, match ...string) map[string]float64 {
	out := map[string]float64{}
	m.each(name, match, func(x *dto.Metric, v float64) { out[label(x, l)] += v })
	return out
}

func reconciles(m metricSet, controller string) float64 {
	return m.sum("controller_runtime_reconcile_total", "controller", controller)
}

// writeMethods are the HTTP methods that write to the API server.
var writeMethods = []string{"POST", "PUT", "PATCH", "DELETE"}

// apiRequests is rest_client_requests_total by method.
func apiRequests(m metricSet) map[string]float64 {
	return m.byLabel("rest_client_requests_total", "method")
}

// diff is after - before per key, without the keys that did not change.
func diff[V int | float64](after, before map[string]V) map[string]V {
	out := map[string]V{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
