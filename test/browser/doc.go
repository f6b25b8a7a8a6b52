// Package browser tests the pages people use in a real browser: headless
// Chromium (Debian's package; hack/chromium.sh installs it) driven by
// chromedp. Its tests carry the build tag "browser"; `make test` runs them.
package browser
