package docs_test

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// The pages a reader of the repository meets; every relative link in them is checked.
func checkedPages(t *testing.T) []string {
	t.Helper()
	pages := []string{"README.md", "SECURITY.md", "CHANGELOG.md"}
	for _, dir := range []string{"docs", "charts"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(p, ".md") {
				return nil
			}
			if dir == "charts" && d.Name() != "README.md" {
				return nil
			}
			rel, err := filepath.Rel(root, p)
			pages = append(pages, rel)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(pages)
	return pages
}

// TestRelativeLinksResolve: every relative link in README.md, docs/**/*.md,
// charts/**/README.md, SECURITY.md and CHANGELOG.md names a file or directory
// of the repository, and every #anchor (to a Markdown page, or within the
// page) names a heading of that page by GitHub's slug rules, or an HTML
// anchor (<a id=...>). External (scheme) links are not fetched.
func TestRelativeLinksResolve(t *testing.T) {
	anchorCache := map[string]map[string]bool{}
	anchorsOf := func(page string) map[string]bool {
		if a, ok := anchorCache[page]; ok {
			return a
		}
		a := anchors(readFile(t, filepath.Join(root, page)))
		anchorCache[page] = a
		return a
	}
	var broken []string
	checked := 0
	for _, page := range checkedPages(t) {
		for _, l := range links(readFile(t, filepath.Join(root, page))) {
			u, err := url.Parse(l.target)
			if err != nil {
				broken = append(broken, fmt.Sprintf("%s:%d: %s: %v", page, l.line, l.target, err))
				continue
			}
			if u.Scheme != "" || u.Host != "" {
				continue
			}
			checked++
			target := page
			if u.Path != "" {
				if strings.HasPrefix(u.Path, "/") {
					broken = append(broken, fmt.Sprintf("%s:%d: %s: use a path relative to the page (a leading / breaks outside GitHub)", page, l.line, l.target))
					continue
				}
				target = filepath.Clean(filepath.Join(filepath.Dir(page), u.Path))
				if strings.HasPrefix(target, "..") {
					broken = append(broken, fmt.Sprintf("%s:%d: %s: points outside the repository", page, l.line, l.target))
					continue
				}
				if _, err := os.Stat(filepath.Join(root, target)); err != nil {
					broken = append(broken, fmt.Sprintf("%s:%d: %s: no such file %s", page, l.line, l.target, target))
					continue
				}
			}
			if u.Fragment == "" {
				continue
			}
			if !strings.HasSuffix(target, ".md") {
				continue // a line anchor (#L10) into code, rendered by GitHub
			}
			if !anchorsOf(target)[u.Fragment] {
				broken = append(broken, fmt.Sprintf("%s:%d: %s: %s has no heading with anchor #%s", page, l.line, l.target, target, u.Fragment))
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d relative links found: is the link parser broken?", checked)
	}
	for _, b := range broken {
		t.Error(b)
	}
}

type link struct {
	line   int
	target string
}

var (
	inlineLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	refDef     = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(\s|$)`)
	htmlHref   = regexp.MustCompile(`(?i)<a\s[^>]*href="([^"]+)"`)
	inlineCode = regexp.MustCompile("`[^`]*`")
)

// links returns the link targets of a Markdown page outside code blocks and code spans.
func links(md string) []link {
	var out []link
	fence := ""
	for i, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		if fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")) {
			fence = trimmed[:3]
			continue
		}
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		line = inlineCode.ReplaceAllString(line, "")
		for _, re := range []*regexp.Regexp{inlineLink, refDef, htmlHref} {
			for _, m := range re.FindAllStringSubmatch(line, -1) {
				out = append(out, link{line: i + 1, target: m[1]})
			}
		}
	}
	return out
}

var (
	atxHeading = regexp.MustCompile(`^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	htmlAnchor = regexp.MustCompile(`(?i)<a\s[^>]*(?:id|name)="([^"]+)"`)
	mdLink     = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
	htmlTag    = regexp.MustCompile(`<[^>]+>`)
)

// anchors returns the anchors GitHub gives a page: one per heading (slugged,
// with -1, -2... for repeats) and any HTML id or name.
func anchors(md string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	fence := ""
	for _, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		if fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")) {
			fence = trimmed[:3]
			continue
		}
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			out[m[1]] = true
		}
		m := atxHeading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := slug(m[2])
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// slug is GitHub's heading anchor: the heading's text, lower-cased, without
// punctuation other than - and _, with each space a -.
func slug(heading string) string {
	text := mdLink.ReplaceAllString(heading, "$1")
	text = htmlTag.ReplaceAllString(text, "")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"Day 2: `kubectl finch`":             "day-2-kubectl-finch",
		"Install, upgrade and uninstall":     "install-upgrade-and-uninstall",
		"`--callback-require-state`":         "--callback-require-state",
		"What `status.callbackURL` is for":   "what-statuscallbackurl-is-for",
		"[Linked](x.md) heading":             "linked-heading",
		"Sizing: 50,000 connections (1 GiB)": "sizing-50000-connections-1-gib",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestREADMEIsShort: the README is the adopter's first page: at most 200
// lines, none over 200 characters; everything else belongs under docs/.
func TestREADMEIsShort(t *testing.T) {
	lines := strings.Split(strings.TrimRight(readFile(t, filepath.Join(root, "README.md")), "\n"), "\n")
	if len(lines) > 200 {
		t.Errorf("README.md has %d lines; keep it to 200 and move the rest to a docs/ page", len(lines))
	}
	for i, l := range lines {
		if n := len([]rune(l)); n > 200 {
			t.Errorf("README.md:%d is %d characters long (at most 200)", i+1, n)
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
