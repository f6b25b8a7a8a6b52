//go:build browser

package browser_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/testenv"
	"github.com/connectops/finch-operator/pkg/finchtest"
)

// chromium is the browser binary: $CHROMIUM, else Debian's chromium.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("no chromium on PATH: run hack/chromium.sh (as root it installs Debian's chromium) or set CHROMIUM")
	}
	return p
}

// artefactDir is where screenshots go: bin/browser (ignored by git).
func artefactDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testenv.RepoRoot(), "bin", "browser")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A person opens a FinchConnection's published connectURL in Chromium, sees
// the customer and products, picks a provider and an authentication method,
// presses Connect, lands on the operator's callback page, and the connection
// becomes Connected with what they picked.
func TestConnectPageInChromium(t *testing.T) {
	ctx := context.Background()
	env := finchtest.Start(t, testenv.StartForTest(t), finchtest.Options{})
	conn, err := env.NewConnection(ctx, "acme", "acme-1", func(c *finchv1.FinchConnection) {
		c.Spec.CustomerName = "Acme Corp"
		c.Spec.Products = []finchv1.Product{"company", "directory", "payment"}
	})
	if err != nil {
		t.Fatal(err)
	}
	fc, err := finchtest.WaitForSession(ctx, env.Client, conn, finchv1.SessionConnect, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-dev-shm-usage", true), // /dev/shm is small in containers
		chromedp.WindowSize(900, 900),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 3*time.Minute)
	defer cancelTimeout()

	// The Connect page: what the person sees, then their choice.
	var customer, products, landed, result string
	var page, done []byte
	err = chromedp.Do(bctx,
		chromedp.Navigate(fc.Status.Session.ConnectURL),
		chromedp.WaitVisible(chromedp.CSS("#connect")),
	)
	if err == nil {
		customer, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#customer")))
	}
	if err == nil {
		products, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#products")))
	}
	if err == nil {
		err = chromedp.Do(bctx,
			chromedp.SetValue(chromedp.CSS("#provider"), "adp_run"),
			chromedp.SetValue(chromedp.CSS("#auth_method"), "api_token"),
		)
	}
	if err == nil {
		page, err = chromedp.Run(bctx, chromedp.FullScreenshot(100))
	}
	if err == nil {
		// Finch Connect redirects to the operator's callback, which answers its page.
		err = chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#outcome-connected")))
	}
	for err == nil && !strings.HasPrefix(landed, env.InboundURL+"/callback/") {
		if landed, err = chromedp.Run(bctx, chromedp.Location()); err == nil {
			time.Sleep(100 * time.Millisecond) // bctx's timeout bounds the loop
		}
	}
	if err == nil {
		err = chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS("h1")))
	}
	if err == nil {
		result, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS("body")))
	}
	if err == nil {
		done, err = chromedp.Run(bctx, chromedp.FullScreenshot(100))
	}
	dir := artefactDir(t)
	for name, png := range map[string][]byte{"connect-page.png": page, "connected-page.png": done} {
		if len(png) > 0 {
			path := filepath.Join(dir, name)
			if werr := os.WriteFile(path, png, 0o644); werr != nil {
				t.Error(werr)
			}
			t.Logf("screenshot: %s (%d bytes)", path, len(png))
		}
	}
	if err != nil {
		t.Fatalf("browser: %v (landed on %q)", err, landed)
	}
	if customer != "Acme Corp" {
		t.Errorf("the page shows customer %q, want Acme Corp", customer)
	}
	for _, p := range []string{"company", "directory", "payment"} {
		if !strings.Contains(products, p) {
			t.Errorf("the page's products %q lack %s", products, p)
		}
	}
	if !strings.HasPrefix(landed, env.InboundURL+"/callback/") || !strings.Contains(result, "Connected") {
		t.Errorf("the browser landed on %s showing %q, want the operator's callback saying Connected", landed, result)
	}

	got, err := finchtest.WaitForPhase(ctx, env.Client, conn, finchv1.PhaseConnected, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := env.Sim.Connection(got.Status.ConnectionID)
	if c.ProviderID != "adp_run" || c.AuthMethod != "api_token" {
		t.Errorf("Finch's connection: provider %q, auth method %q; want what the person picked (adp_run, api_token)", c.ProviderID, c.AuthMethod)
	}
}
