package monitoring

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// grafanaVariables stand in for the dashboard's variables so its queries are
// plain PromQL.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "1h",
	"${namespace}", ".*", "$namespace", ".*",
	"${app}", ".*", "$app", ".*",
)

// PromQL words that are not metric names when they stand alone.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
	"on": true, "ignoring": true, "group_left": true, "group_right": true, "atan2": true,
	"inf": true, "nan": true, "start": true, "end": true,
}

// labelListKeywords are followed by a parenthesised list of label names.
var labelListKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// MetricNames returns the metric names an expression (valid PromQL, which
// promtool checks separately) selects: identifiers outside label matchers,
// ranges, strings and label lists, that are neither keywords nor function
// calls.
func MetricNames(expr string) []string {
	var names []string
	seen := map[string]bool{}
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isPart := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	skipSpace := func(i int) int {
		for i < len(expr) && (expr[i] == ' ' || expr[i] == '\t' || expr[i] == '\n' || expr[i] == '\r') {
			i++
		}
		return i
	}
	// skipTo returns the index just past the matching close of expr[i] (an
	// opening bracket), minding strings.
	skipTo := func(i int, open, close byte) int {
		depth := 0
		for ; i < len(expr); i++ {
			switch expr[i] {
			case '"', '\'', '`':
				i = skipString(expr, i) - 1
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(expr, i)
		case c == '#': // comment to the end of the line
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '{':
			i = skipTo(i, '{', '}')
		case c == '[':
			i = skipTo(i, '[', ']')
		case c >= '0' && c <= '9' || c == '.':
			// A number or a duration (5m, 1e3, 0x1f): skip its characters.
			for i < len(expr) && (isPart(expr[i]) || expr[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := skipSpace(j)
			switch {
			case labelListKeywords[strings.ToLower(word)]:
				if k < len(expr) && expr[k] == '(' {
					j = skipTo(k, '(', ')')
				}
			case promqlKeywords[strings.ToLower(word)]:
			case k < len(expr) && expr[k] == '(', followedByLabelList(expr[k:]):
				// A function or aggregation call; its arguments are scanned on.
			default:
				if !seen[word] {
					seen[word] = true
					names = append(names, word)
				}
			}
			i = j
		default:
			i++
		}
	}
	return names
}

// followedByLabelList says whether s starts with "by" or "without" (an
// aggregation written `sum by (le) (x)`).
func followedByLabelList(s string) bool {
	for _, kw := range []string{"by", "without"} {
		if strings.HasPrefix(s, kw) && (len(s) == len(kw) || s[len(kw)] == ' ' || s[len(kw)] == '(') {
			return true
		}
	}
	return false
}

// skipString returns the index just past the string literal starting at i.
func skipString(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if q != '`' {
				j++
			}
		case q:
			return j + 1
		}
	}
	return len(s)
}

func TestExported(t *testing.T) {
	counter, histogram := dto.MetricType_COUNTER, dto.MetricType_HISTOGRAM
	families := map[string]*dto.MetricFamily{
		"c_total": {Type: &counter, Metric: []*dto.Metric{{}}},
		"h":       {Type: &histogram, Metric: []*dto.Metric{{}}},
		"empty":   {Type: &counter},
	}
	for name, want := range map[string]bool{
		"c_total": true, "h_bucket": true, "h_sum": true, "h_count": true,
		"h": true, "c_total_bucket": false, "c": false, "empty": false, "missing_total": false,
	} {
		if got := exported(families, name); got != want {
			t.Errorf("exported(%s) = %v, want %v", name, got, want)
		}
	}
}
