package controllers

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// AppConfigError says why a FinchApp cannot be used; Reason is CamelCase and
// becomes a condition and Event reason.
type AppConfigError struct {
	Reason  string
	Message string
}

func (e *AppConfigError) Error() string { return e.Message }

// ResolvedApp is everything needed to act for one FinchApp: a Finch client
// built from its current credentials and the app's public endpoints.
type ResolvedApp struct {
	Key           types.NamespacedName
	Generation    int64
	Client        *finch.Client
	Budget        *finch.Budget // shared by every client of the app
	WebhookSecret string        // base64; empty when none is configured
	Spec          finchv1.FinchAppSpec
	secretVersion string
	// rejected is set when Finch answered invalid_client: connections stop
	// calling Finch with these credentials until the Secret changes.
	rejected atomic.Bool
}

// RejectCredentials records that Finch rejected this app's credentials.
func (a *ResolvedApp) RejectCredentials() { a.rejected.Store(true) }

// CredentialsRejected says whether Finch rejected the current credentials.
func (a *ResolvedApp) CredentialsRejected() bool { return a.rejected.Load() }

// RedirectURIFor is the redirect_uri sent in a connection's sessions: the
// connection's own, else the app's, else the operator's callback under publicURL.
func (a *ResolvedApp) RedirectURIFor(conn *finchv1.FinchConnection) string {
	if conn.Spec.RedirectURI != "" {
		return conn.Spec.RedirectURI
	}
	if a.Spec.RedirectURI != "" {
		return a.Spec.RedirectURI
	}
	return CallbackURL(a.Spec.PublicURL, a.Key)
}

// IntrospectionInterval is how often connected connections are introspected.
func (a *ResolvedApp) IntrospectionInterval() time.Duration {
	if a.Spec.IntrospectionInterval != nil && a.Spec.IntrospectionInterval.Duration > 0 {
		return a.Spec.IntrospectionInterval.Duration
	}
	return 6 * time.Hour
}

// CallbackURL is the redirect-flow callback of an app under publicURL ("" without one).
func CallbackURL(publicURL string, app types.NamespacedName) string {
	return joinURL(publicURL, "callback", app)
}

// WebhookURL is the webhook endpoint of an app under publicURL ("" without one).
func WebhookURL(publicURL string, app types.NamespacedName) string {
	return joinURL(publicURL, "webhooks", app)
}

func joinURL(base, kind string, app types.NamespacedName) string {
	if base == "" {
		return ""
	}
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	return u.JoinPath(kind, app.Namespace, app.Name).String()
}

// AppRegistry builds and caches one Finch client per FinchApp. Clients of the
// same app share one request budget, so credential rotation (a new client)
// never resets what was spent. The FinchApp controller reloads an entry when
// the app or its Secrets change; other readers load it on first use.
type AppRegistry struct {
	// Reader reads the credentials and webhook Secrets. It is the uncached API
	// reader: those Secrets belong to the user and are not in the operator's
	// label-filtered Secret cache.
	Reader client.Reader
	// HTTPClient is used by every Finch client (nil: the client's default).
	HTTPClient *http.Client

	mu      sync.Mutex
	apps    map[types.NamespacedName]*ResolvedApp
	budgets map[types.NamespacedName]*finch.Budget
}

// Get returns the resolved app, loading it if it is unknown or its spec changed.
func (r *AppRegistry) Get(ctx context.Context, app *finchv1.FinchApp) (*ResolvedApp, error) {
	key := client.ObjectKeyFromObject(app)
	r.mu.Lock()
	cur := r.apps[key]
	r.mu.Unlock()
	if cur != nil && cur.Generation == app.Generation {
		return cur, nil
	}
	return r.Load(ctx, app)
}

// Lookup returns the cached entry without loading it.
func (r *AppRegistry) Lookup(key types.NamespacedName) *ResolvedApp {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.apps[key]
}

// Load reads the app's Secrets and (re)builds its client when anything changed.
func (r *AppRegistry) Load(ctx context.Context, app *finchv1.FinchApp) (*ResolvedApp, error) {
	key := client.ObjectKeyFromObject(app)
	creds, err := r.readSecret(ctx, app.Namespace, app.Spec.CredentialsSecretRef.Name, "CredentialsSecretNotFound", "credentials")
	if err != nil {
		r.Forget(key)
		return nil, err
	}
	idKey := orDefault(app.Spec.CredentialsSecretRef.ClientIDKey, "client_id")
	secretKey := orDefault(app.Spec.CredentialsSecretRef.ClientSecretKey, "client_secret")
	for _, k := range []string{idKey, secretKey} {
		if len(creds.Data[k]) == 0 {
			r.Forget(key)
			return nil, &AppConfigError{Reason: "CredentialsKeyMissing", Message: fmt.Sprintf(
				"Secret %s/%s has no key %q: add the Finch application's %s under that key", app.Namespace, creds.Name, k, keyMeaning(k, idKey))}
		}
	}
	version := creds.ResourceVersion
	var webhookSecret string
	if ref := app.Spec.WebhookSecretRef; ref != nil {
		hook, err := r.readSecret(ctx, app.Namespace, ref.Name, "WebhookSecretNotFound", "webhook")
		if err != nil {
			r.Forget(key)
			return nil, err
		}
		k := orDefault(ref.Key, "webhook_secret")
		webhookSecret = string(hook.Data[k])
		if _, err := base64.StdEncoding.DecodeString(webhookSecret); err != nil || webhookSecret == "" {
			r.Forget(key)
			return nil, &AppConfigError{Reason: "WebhookSecretInvalid", Message: fmt.Sprintf(
				"Secret %s/%s key %q must hold the base64 webhook secret shown in the Finch dashboard", app.Namespace, hook.Name, k)}
		}
		version += "/" + hook.ResourceVersion
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.apps[key]; cur != nil && cur.Generation == app.Generation && cur.secretVersion == version {
		return cur, nil
	}
	if r.budgets == nil {
		r.budgets = map[types.NamespacedName]*finch.Budget{}
		r.apps = map[types.NamespacedName]*ResolvedApp{}
	}
	budgetCfg := budgetConfig(app.Spec.RateLimit)
	budget := r.budgets[key]
	if budget == nil {
		budget = finch.NewBudget(budgetCfg)
		r.budgets[key] = budget
	} else {
		budget.SetConfig(budgetCfg)
	}
	fc, err := finch.New(finch.Config{
		BaseURL:      app.Spec.APIURL,
		APIVersion:   app.Spec.APIVersion,
		ClientID:     string(creds.Data[idKey]),
		ClientSecret: string(creds.Data[secretKey]),
		HTTPClient:   r.HTTPClient,
		Budget:       budget,
		MetricsApp:   key.String(),
	})
	if err != nil {
		return nil, &AppConfigError{Reason: "InvalidAPIURL", Message: fmt.Sprintf("spec.apiURL: %v", err)}
	}
	res := &ResolvedApp{Key: key, Generation: app.Generation, Client: fc, Budget: budget, WebhookSecret: webhookSecret,
		Spec: *app.Spec.DeepCopy(), secretVersion: version}
	r.apps[key] = res
	return res, nil
}

// Forget drops an app's client (the app was deleted or became unusable). The
// budget is kept: a re-created app must not get a fresh allowance.
func (r *AppRegistry) Forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.apps, key)
}

func (r *AppRegistry) readSecret(ctx context.Context, ns, name, notFoundReason, what string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := r.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &AppConfigError{Reason: notFoundReason, Message: fmt.Sprintf(
				"%s Secret %s/%s not found: create it (see the README, \"Point it at Finch\")", what, ns, name)}
		}
		return nil, fmt.Errorf("read %s Secret %s/%s: %w", what, ns, name, err)
	}
	return s, nil
}

func budgetConfig(rl *finchv1.RateLimit) finch.BudgetConfig {
	cfg := finch.DefaultBudget
	if rl != nil {
		if rl.Requests > 0 {
			cfg.Requests = int(rl.Requests)
		}
		if rl.Window != nil && rl.Window.Duration > 0 {
			cfg.Window = rl.Window.Duration
		}
	}
	return cfg
}

func keyMeaning(k, idKey string) string {
	if k == idKey {
		return "client ID"
	}
	return "client secret"
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
