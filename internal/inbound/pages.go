package inbound

import (
	"bytes"
	"html/template"
	"net/http"
	"strconv"
)

// page is one of the fixed HTML pages the callback answers with. Pages are
// rendered once at start-up and never include anything from the request, so
// nothing is reflected (no XSS) and no response reveals a token, a code or
// whether an app or connection exists.
type page struct {
	status int
	body   []byte
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{.Title}}</title>
<style>
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;background:#f6f7f9;color:#1f2328;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}
main{background:#fff;border-radius:12px;box-shadow:0 1px 4px rgba(0,0,0,.12);padding:2.5rem 2rem;max-width:30rem;margin:1rem;text-align:center}
h1{font-size:1.4rem;margin:0 0 .75rem}
p{line-height:1.5;margin:.5rem 0;color:#444}
.mark{font-size:2.5rem;line-height:1;margin-bottom:1rem}
</style>
</head>
<body>
<main>
<div class="mark" aria-hidden="true">{{.Mark}}</div>
<h1>{{.Title}}</h1>
{{range .Lines}}<p>{{.}}</p>
{{end}}</main>
</body>
</html>
`))

func renderPage(status int, mark, title string, lines ...string) page {
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, struct {
		Mark, Title string
		Lines       []string
	}{mark, title, lines}); err != nil {
		panic(err) // static input: cannot happen
	}
	return page{status: status, body: b.Bytes()}
}

var (
	pageConnected = renderPage(http.StatusOK, "✓", "Connected — you can close this window",
		"Your payroll or HR system is now connected. There is nothing else to do.")
	pageReceived = renderPage(http.StatusOK, "✓", "Authorization received",
		"Thank you. We received your authorization; your administrator will finish the setup.",
		"You can close this window.")
	pageInvalid = renderPage(http.StatusBadRequest, "!", "This link is not valid",
		"Please use the exact link you were sent, or ask the company that sent it for a new one.")
	pageExpired = renderPage(http.StatusBadRequest, "!", "This authorization link has expired or was already used",
		"Please start again from the link you were sent.")
	pageFinchUnavailable = renderPage(http.StatusBadGateway, "…", "Finch is temporarily unavailable",
		"Please retry in a few minutes (reload this page). Your connection has not been lost.")
	pageUnavailable = renderPage(http.StatusServiceUnavailable, "…", "Temporarily unavailable",
		"We could not finish connecting right now. Please retry in a few minutes (reload this page).")
	pageTooMany = renderPage(http.StatusTooManyRequests, "…", "Too many attempts",
		"Please wait a minute, then reload this page.")
	pageContactAdmin = renderPage(http.StatusInternalServerError, "!", "We could not complete the connection",
		"Please contact your administrator (the company that sent you the link); they can see what went wrong.")
)

// allPages lists every page (tests and fuzzing check that a response is one of them).
var allPages = []page{pageConnected, pageReceived, pageInvalid, pageExpired, pageFinchUnavailable, pageUnavailable, pageTooMany, pageContactAdmin}

// setSecurityHeaders applies to every response: nothing is cached (a callback
// URL carries a code), nothing is framed, no script runs, and the code never
// leaks through a Referer.
func setSecurityHeaders(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
}

func writePage(w http.ResponseWriter, p page) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(p.body)))
	w.WriteHeader(p.status)
	_, _ = w.Write(p.body)
}
