// Package apps resolves FinchApps: the registry of per-app Finch clients,
// budgets and callback keys that the controllers and the inbound server
// share (as cert-manager's ACME accounts registry serves both its
// controllers and issuers), plus the app's public URLs.
package apps

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/finch"
)

// ConfigError says why a FinchApp cannot be used; Reason is CamelCase and
// becomes a condition and Event reason.
type ConfigError struct {
	Reason  string
	Message string
}

func (e *ConfigError) Error() string { return e.Message }

// App is everything needed to act for one FinchApp: a Finch client
// built from its current credentials and the app's public endpoints.
type App struct {
	// Key is the app's key (finchv1.AppKeyOf): no namespace for a ClusterFinchApp.
	Key types.NamespacedName
	// SecretNamespace is where the app's Secrets live: its own namespace, or
	// the cluster resource namespace for a ClusterFinchApp.
	SecretNamespace string
	Generation      int64
	Client          finch.API
	Budget          *budget.Budget  // the Finch application's: shared by every app object with its apiURL and client_id
	ApplicationID   string          // the Finch application (ApplicationID of apiURL and client_id)
	IPGuard         *budget.IPGuard // shared by every app calling the same API host (nil: none)
	WebhookSecret   string          // base64; empty when none is configured
	Spec            finchv1.FinchAppSpec
	// CallbackSecret names the Secret holding the callback path segment and state key.
	CallbackSecret string
	callbackPath   string // random path segment of the callback URL
	stateKey       []byte // HMAC key of the state parameter
	secretVersion  string
	// rejected is set when Finch answered invalid_client: connections stop
	// calling Finch with these credentials until the Secret changes. It is
	// shared by every app object with the same apiURL, client_id and secret
	// (Registry.latchLocked); nil (an App not built by a Registry): ownLatch.
	rejected *atomic.Bool
	ownLatch atomic.Bool
}

func (a *App) latch() *atomic.Bool {
	if a.rejected != nil {
		return a.rejected
	}
	return &a.ownLatch
}

// Admit is the one admission of a Finch call for callers that come back
// later instead of blocking (the reconcilers, the callback): 0 when the call
// may go now, else how long to stay away (budget.Gate.Admit: the Finch
// application's budget and the API host's per-IP guard). The client then
// takes the call's slots without deciding again.
//
// With an id (namespace/name of the caller's object), the caller takes a
// place in the application's fair line for endpoint and inLine reports that
// wait is its place. The budget is shared by every app object with the same
// apiURL and client_id; each (app object, namespace) is a tenant and
// tenants take turns (round robin), so neither one namespace's backlog
// under a ClusterFinchApp nor one FinchApp's backlog starves another that
// shares the application. Without an id (an employer's callback, which
// cannot be told to come back at a place) the call goes if its slot is due
// within maxBlock.
func (a *App) Admit(endpoint, namespace, id string, maxBlock time.Duration) (wait time.Duration, inLine bool) {
	return budget.Gate{Budget: a.Budget, Guard: a.IPGuard}.Admit(endpoint, KeyString(a.Key)+"|"+namespace, id, maxBlock)
}

// RejectCredentials records that Finch rejected this app's credentials.
func (a *App) RejectCredentials() { a.latch().Store(true) }

// CredentialsRejected says whether Finch rejected the current credentials.
func (a *App) CredentialsRejected() bool { return a.latch().Load() }

// CredentialsRejectedMessage says, in the one wording every condition and
// Event about it uses, that Finch rejected this app's credentials and which
// Secret to fix; callers append what happens next.
func (a *App) CredentialsRejectedMessage() string {
	return fmt.Sprintf("Finch rejected the client credentials of %s (invalid_client): fix Secret %s/%s (the sandbox, development and production apps have different credentials)",
		finchv1.DescribeApp(a.Key), a.SecretNamespace, a.Spec.CredentialsSecretRef.Name)
}

// FlowFor is a connection's connect flow: its own, else the app's default,
// else Redirect when there is somewhere to redirect to, else Embedded.
func (a *App) FlowFor(conn *finchv1.FinchConnection) finchv1.ConnectFlow {
	switch {
	case conn.Spec.ConnectFlow != "":
		return conn.Spec.ConnectFlow
	case a.Spec.DefaultConnectFlow != "":
		return a.Spec.DefaultConnectFlow
	case conn.Spec.RedirectURI != "" || a.Spec.RedirectURI != "" || a.Spec.PublicURL != "":
		return finchv1.ConnectFlowRedirect
	}
	return finchv1.ConnectFlowEmbedded
}

// RedirectURIFor is the redirect_uri sent in a connection's sessions: none for
// the Embedded flow (Finch's docs: send redirect_uri only in the redirect flow;
// an embedded exchange fails when one is sent, developer.tryfinch.com
// /implementation-guide/Connect/Retrieve-Access-Token), else the connection's
// own, else the app's, else the operator's callback under publicURL.
func (a *App) RedirectURIFor(conn *finchv1.FinchConnection) string {
	if a.FlowFor(conn) == finchv1.ConnectFlowEmbedded {
		return ""
	}
	if conn.Spec.RedirectURI != "" {
		return conn.Spec.RedirectURI
	}
	if a.Spec.RedirectURI != "" {
		return a.Spec.RedirectURI
	}
	return a.CallbackURL()
}

// CallbackURL is this app's operator callback ("" without publicURL).
func (a *App) CallbackURL() string {
	return CallbackURL(a.Spec.PublicURL, a.Key, a.callbackPath)
}

// CallbackPathMatches reports, in constant time, whether seg is this app's
// callback path segment.
func (a *App) CallbackPathMatches(seg string) bool {
	return a.callbackPath != "" && subtle.ConstantTimeCompare([]byte(seg), []byte(a.callbackPath)) == 1
}

// stateSep separates the parts of a state value.
const stateSep = "."

// SignState is the state parameter published with a session whose
// redirect_uri is the operator's callback: the session ID, the session's
// expiry (unix seconds) and an HMAC of both under a key only the operator
// holds. Finch Connect returns state unchanged on the redirect
// (docs/finch-api.md#connect-sessions;
// developer.tryfinch.com/implementation-guide/Connect/Set-Up-Finch-Connect),
// so the callback can reject, before any Finch call or lookup, a code that no
// session of ours produced, or one whose session has expired.
func (a *App) SignState(sessionID string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return sessionID + stateSep + exp + stateSep + a.stateMAC(sessionID, exp)
}

// State is what a state SignState produced says.
type State struct {
	SessionID string
	// Expires is when the session expires. It is zero for a legacy state
	// (signed before states carried an expiry: session ID and MAC only),
	// whose session's own expiry is all there is to check.
	Expires time.Time
}

// Legacy reports whether the state was signed before states carried an expiry.
func (s State) Legacy() bool { return s.Expires.IsZero() }

// VerifyState checks a state parameter against the app's key: a state
// SignState produced, or a legacy one (no expiry) published by an earlier
// version of the operator. It does not check the expiry: the caller compares
// Expires with its clock.
func (a *App) VerifyState(state string) (State, bool) {
	i := strings.LastIndex(state, stateSep)
	if i <= 0 || len(a.stateKey) == 0 {
		return State{}, false
	}
	rest, mac := state[:i], state[i+len(stateSep):]
	if j := strings.LastIndex(rest, stateSep); j > 0 {
		id, exp := rest[:j], rest[j+len(stateSep):]
		if secs, err := strconv.ParseInt(exp, 10, 64); err == nil && secs > 0 &&
			subtle.ConstantTimeCompare([]byte(mac), []byte(a.stateMAC(id, exp))) == 1 {
			return State{SessionID: id, Expires: time.Unix(secs, 0)}, true
		}
	}
	if subtle.ConstantTimeCompare([]byte(mac), []byte(a.legacyStateMAC(rest))) == 1 {
		return State{SessionID: rest}, true
	}
	return State{}, false
}

func (a *App) stateMAC(sessionID, expires string) string {
	m := hmac.New(sha256.New, a.stateKey)
	m.Write([]byte("finch-operator/state/v2\x00" + a.Key.String() + "\x00" + sessionID + "\x00" + expires))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// legacyStateMAC is the MAC of states published before they carried an
// expiry; they are still accepted (see VerifyState).
func (a *App) legacyStateMAC(sessionID string) string {
	m := hmac.New(sha256.New, a.stateKey)
	m.Write([]byte("finch-operator/state/v1\x00" + a.Key.String() + "\x00" + sessionID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// PublishedConnectURL is the Connect link published in status: Finch's
// connect_url, plus the signed state when the session redirects to the
// operator's callback. expires is the session's expiry.
func (a *App) PublishedConnectURL(connectURL, sessionID, redirectURI string, expires time.Time) string {
	if redirectURI == "" || redirectURI != a.CallbackURL() || len(a.stateKey) == 0 {
		return connectURL
	}
	u, err := url.Parse(connectURL)
	if err != nil {
		return connectURL
	}
	q := u.Query()
	q.Set("state", a.SignState(sessionID, expires))
	u.RawQuery = q.Encode()
	return u.String()
}

// IntrospectionInterval is how often connected connections are introspected.
func (a *App) IntrospectionInterval() time.Duration {
	if a.Spec.IntrospectionInterval != nil && a.Spec.IntrospectionInterval.Duration > 0 {
		return a.Spec.IntrospectionInterval.Duration
	}
	return 6 * time.Hour
}

// CallbackURL is the redirect-flow callback of an app under publicURL ("" without
// one): /callback/<namespace>/<name>/<random path segment>, or for a
// ClusterFinchApp /cluster/callback/<name>/<random path segment>.
func CallbackURL(publicURL string, app types.NamespacedName, pathSegment string) string {
	u := joinURL(publicURL, "callback", app)
	if u == "" || pathSegment == "" {
		return ""
	}
	return u + "/" + url.PathEscape(pathSegment)
}

// WebhookURL is the webhook endpoint of an app under publicURL ("" without
// one): /webhooks/<namespace>/<name>, or /cluster/webhooks/<name>.
func WebhookURL(publicURL string, app types.NamespacedName) string {
	return joinURL(publicURL, "webhooks", app)
}

// ClusterPathPrefix starts the inbound paths of ClusterFinchApps. It is no
// namespace's name in practice and never confuses the router: namespaced
// paths have one more segment.
const ClusterPathPrefix = "cluster"

func joinURL(base, kind string, app types.NamespacedName) string {
	if base == "" {
		return ""
	}
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	if app.Namespace == "" {
		return u.JoinPath(ClusterPathPrefix, kind, app.Name).String()
	}
	return u.JoinPath(kind, app.Namespace, app.Name).String()
}

// KeyString is an app key as metrics and logs show it: namespace/name for a
// FinchApp, ClusterFinchApp/name for a ClusterFinchApp (a namespace name is
// lower case, so the two never meet).
func KeyString(key types.NamespacedName) string {
	if key.Namespace == "" {
		return finchv1.ClusterFinchAppKind + "/" + key.Name
	}
	return key.String()
}

// Registry builds and caches one Finch client per FinchApp. Clients of the
// same Finch application (apiURL and client_id, whichever FinchApps and
// ClusterFinchApps name it) share one request budget, so neither credential
// rotation (a new client) nor a second app object with the same credentials
// gets a fresh allowance. The FinchApp controller reloads an entry when the
// app or its Secrets change; other readers load it on first use.
type Registry struct {
	// Reader reads the credentials and webhook Secrets. It is the uncached API
	// reader: those Secrets belong to the user and are not in the operator's
	// label-filtered Secret cache.
	Reader client.Reader
	// Writer creates each app's callback Secret (nil: the Secret must exist).
	Writer client.Client
	// HTTPClient is used by every Finch client (nil: the client's default).
	HTTPClient *http.Client
	// IPGuards hold the per-IP budget and penalty of each Finch API host,
	// shared by the clients of every app calling that host (nil: none).
	IPGuards *budget.IPGuards
	// APIHosts are the hosts an app's apiURL may name (the zero value:
	// api.tryfinch.com only). An app naming another host is not usable and
	// nothing is ever sent there.
	APIHosts finch.APIHosts
	// ClusterResourceNamespace holds the Secrets of ClusterFinchApps (and
	// their callback Secrets) and every Finch application's budget ConfigMap;
	// tenants' namespaces never do. Empty: ClusterFinchApps cannot be used
	// and budgets are kept in memory only.
	ClusterResourceNamespace string
	// Notify, if set, is told about apps whose status changed because
	// another app joined or left their Finch application. It must not block.
	Notify func(types.NamespacedName)

	cbMu         sync.Mutex // serialises callback Secret creation
	mu           sync.Mutex
	apps         map[types.NamespacedName]*App
	applications map[string]*application         // by ApplicationID
	memberOf     map[types.NamespacedName]string // app -> ApplicationID
	latches      map[string]*atomic.Bool         // by credentialKey
}

// Get returns the resolved app, loading it if it is unknown or its spec changed.
func (r *Registry) Get(ctx context.Context, app finchv1.AppObject) (*App, error) {
	key := finchv1.AppKeyOf(app)
	r.mu.Lock()
	cur := r.apps[key]
	r.mu.Unlock()
	if cur != nil && cur.Generation == app.GetGeneration() {
		return cur, nil
	}
	return r.Load(ctx, app)
}

// SecretNamespace is where app's Secrets live: its namespace, or the cluster
// resource namespace for a ClusterFinchApp ("" when none is configured).
func (r *Registry) SecretNamespace(app finchv1.AppObject) string {
	if ns := app.GetNamespace(); ns != "" {
		return ns
	}
	return r.ClusterResourceNamespace
}

// Load reads the app's Secrets and (re)builds its client when anything changed.
func (r *Registry) Load(ctx context.Context, app finchv1.AppObject) (*App, error) {
	key := finchv1.AppKeyOf(app)
	spec := app.AppSpec()
	// The host first: a namespace may point its app anywhere, and an app
	// the operator may not call needs no Secret read either.
	apiURL, err := r.checkAPIURL(spec)
	if err != nil {
		r.Forget(key)
		return nil, err
	}
	ns := r.SecretNamespace(app)
	if ns == "" {
		r.Forget(key)
		return nil, &ConfigError{Reason: "NoClusterResourceNamespace", Message: "the operator has no cluster resource namespace (--cluster-resource-namespace) to read this ClusterFinchApp's Secrets from"}
	}
	creds, err := r.readSecret(ctx, ns, spec.CredentialsSecretRef.Name, "CredentialsSecretNotFound", "credentials")
	if err != nil {
		r.Forget(key)
		return nil, err
	}
	idKey := cmp.Or(spec.CredentialsSecretRef.ClientIDKey, "client_id")
	secretKey := cmp.Or(spec.CredentialsSecretRef.ClientSecretKey, "client_secret")
	for _, k := range []string{idKey, secretKey} {
		if len(creds.Data[k]) == 0 {
			r.Forget(key)
			return nil, &ConfigError{Reason: "CredentialsKeyMissing", Message: fmt.Sprintf(
				"Secret %s/%s has no key %q: add the Finch application's %s under that key", ns, creds.Name, k, keyMeaning(k, idKey))}
		}
	}
	version := creds.ResourceVersion
	cb, err := r.callbackSecret(ctx, app, ns)
	if err != nil {
		r.Forget(key)
		return nil, err
	}
	version += "/" + cb.ResourceVersion
	var webhookSecret string
	if ref := spec.WebhookSecretRef; ref != nil {
		hook, err := r.readSecret(ctx, ns, ref.Name, "WebhookSecretNotFound", "webhook")
		if err != nil {
			r.Forget(key)
			return nil, err
		}
		k := cmp.Or(ref.Key, "webhook_secret")
		webhookSecret = string(hook.Data[k])
		if _, err := base64.StdEncoding.DecodeString(webhookSecret); err != nil || webhookSecret == "" {
			r.Forget(key)
			return nil, &ConfigError{Reason: "WebhookSecretInvalid", Message: fmt.Sprintf(
				"Secret %s/%s key %q must hold the base64 webhook secret shown in the Finch dashboard", ns, hook.Name, k)}
		}
		version += "/" + hook.ResourceVersion
	}

	var guard *budget.IPGuard
	if r.IPGuards != nil {
		hostKey, err := finch.HostKey(apiURL)
		if err == nil {
			guard, err = r.IPGuards.For(hostKey)
		}
		if err != nil {
			r.Forget(key)
			return nil, &ConfigError{Reason: finchv1.ReasonAPIHostNotAllowed, Message: fmt.Sprintf(
				"spec.apiURL: %v; no Finch call is made for this app: narrow the host:* entries of the operator's --finch-api-hosts", err)}
		}
	}

	var wake []types.NamespacedName
	defer func() { r.notify(wake) }() // after the unlock below
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.apps[key]
	if cur != nil && cur.Generation == app.GetGeneration() && cur.secretVersion == version {
		return cur, nil
	}
	r.initLocked()
	clientID, clientSecret := string(creds.Data[idKey]), string(creds.Data[secretKey])
	appID := ApplicationID(spec.APIURL, clientID)
	application, woken := r.joinLocked(ctx, key, app, appID, budgetConfig(spec.RateLimit))
	wake = woken
	latch := r.latchLocked(appID, clientSecret)
	if cur != nil {
		// The app or its Secrets changed (someone may have fixed what Finch
		// rejected): its connections may try Finch again, once.
		latch.Store(false)
	}
	fc, err := finch.New(finch.Config{
		BaseURL:      apiURL.String(),
		APIVersion:   spec.FinchAPIVersionHeader(),
		ClientID:     clientID,
		ClientSecret: clientSecret,
		HTTPClient:   r.HTTPClient,
		Limiter:      budget.Gate{Budget: application.budget, Guard: guard},
		MetricsApp:   key,
	})
	if err != nil {
		wake = append(wake, r.leaveLocked(key)...)
		return nil, &ConfigError{Reason: "InvalidAPIURL", Message: fmt.Sprintf("spec.apiURL: %v", err)}
	}
	res := &App{Key: key, SecretNamespace: ns, Generation: app.GetGeneration(), Client: fc, Budget: application.budget, ApplicationID: appID,
		IPGuard: guard, WebhookSecret: webhookSecret, Spec: *spec.DeepCopy(), secretVersion: version, rejected: latch,
		CallbackSecret: cb.Name, callbackPath: string(cb.Data[finchv1.CallbackPathKey]), stateKey: cb.Data[finchv1.CallbackStateKey]}
	r.apps[key] = res
	return res, nil
}

// checkAPIURL parses an app's apiURL (empty: Finch's) and refuses a host
// the operator may not call (APIHosts).
func (r *Registry) checkAPIURL(spec *finchv1.FinchAppSpec) (*url.URL, error) {
	apiURL := spec.APIURL
	if apiURL == "" {
		apiURL = finch.DefaultBaseURL
	}
	u, err := url.Parse(apiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The value is not repeated: it might carry user info.
		return nil, &ConfigError{Reason: "InvalidAPIURL", Message: "spec.apiURL is not an absolute http(s) URL"}
	}
	// The CRD refuses this too; an app stored before that rule still must
	// not send its client secret in clear text.
	if u.Scheme == "http" && !isLoopback(u) && !spec.InsecureAPIURL {
		return nil, &ConfigError{Reason: finchv1.ReasonInsecureAPIURL, Message: fmt.Sprintf(
			"spec.apiURL is http:// to %s, which would send the client secret in clear text; no Finch call is made for this app. Use an https:// URL such as %s (http:// is for a loopback host, or set spec.insecureAPIURL: true on a network you trust)",
			finch.HostOf(u), finch.DefaultBaseURL)}
	}
	if !r.APIHosts.Allows(u) {
		host := finch.HostOf(u)
		return nil, &ConfigError{Reason: finchv1.ReasonAPIHostNotAllowed, Message: fmt.Sprintf(
			"spec.apiURL names host %s, which is not a Finch API host this operator may call (--finch-api-hosts=%s); no Finch call is made for this app. Use %s, or ask the operator's administrator to add %s to --finch-api-hosts",
			host, r.APIHosts, finch.DefaultBaseURL, host)}
	}
	return u, nil
}

// InsecureAPIURL reports whether spec's insecureAPIURL is in use: apiURL is
// http:// to a host that is not loopback (host names it).
func InsecureAPIURL(spec *finchv1.FinchAppSpec) (host string, insecure bool) {
	u, err := url.Parse(spec.APIURL)
	if err != nil || !spec.InsecureAPIURL || u.Scheme != "http" || isLoopback(u) {
		return "", false
	}
	return finch.HostOf(u), true
}

// isLoopback reports whether u's host is one the CRD lets use http://:
// 127.0.0.1, ::1 or localhost.
func isLoopback(u *url.URL) bool {
	switch strings.ToLower(u.Hostname()) {
	case "127.0.0.1", "::1", "localhost":
		return true
	}
	return false
}

func (r *Registry) initLocked() {
	if r.apps == nil {
		r.apps = map[types.NamespacedName]*App{}
		r.applications = map[string]*application{}
		r.memberOf = map[types.NamespacedName]string{}
		r.latches = map[string]*atomic.Bool{}
	}
}

// Forget drops an app's client (the app was deleted or became unusable) and
// takes it out of its Finch application. The application's budget is kept: a
// re-created app must not get a fresh allowance.
func (r *Registry) Forget(key types.NamespacedName) {
	r.mu.Lock()
	delete(r.apps, key)
	wake := r.leaveLocked(key)
	r.mu.Unlock()
	r.notify(wake)
}

func (r *Registry) readSecret(ctx context.Context, ns, name, notFoundReason, what string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := r.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &ConfigError{Reason: notFoundReason, Message: fmt.Sprintf(
				"%s Secret %s/%s not found: create it (see \"Point it at real Finch\" in the README)", what, ns, name)}
		}
		return nil, fmt.Errorf("read %s Secret %s/%s: %w", what, ns, name, err)
	}
	return s, nil
}

// callbackSecret reads the app's callback Secret, creating it with fresh
// random values when it does not exist. The values are random rather than
// derived from the client secret so that rotating credentials does not change
// the callback URL allow-listed in the Finch dashboard.
func (r *Registry) callbackSecret(ctx context.Context, app finchv1.AppObject, ns string) (*corev1.Secret, error) {
	// One get-or-create at a time: the app controller and the first
	// connections load an app together, and one create is enough.
	r.cbMu.Lock()
	defer r.cbMu.Unlock()
	key := types.NamespacedName{Namespace: ns, Name: CallbackSecretName(app)}
	sec := &corev1.Secret{}
	err := r.Reader.Get(ctx, key, sec)
	if apierrors.IsNotFound(err) && r.Writer != nil {
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{finchv1.AppLabel: app.GetName()}},
			Type:       corev1.SecretTypeOpaque,
			Data: map[string][]byte{
				finchv1.CallbackPathKey:  []byte(randomToken(24)),
				finchv1.CallbackStateKey: []byte(randomToken(48)),
			},
		}
		if app.GetUID() != "" {
			if err := controllerutil.SetOwnerReference(app, sec, r.Writer.Scheme()); err != nil {
				return nil, fmt.Errorf("callback Secret owner: %w", err)
			}
		}
		err = r.Writer.Create(ctx, sec)
		if apierrors.IsAlreadyExists(err) {
			err = r.Reader.Get(ctx, key, sec)
		}
	}
	if apierrors.IsNotFound(err) {
		return nil, &ConfigError{Reason: "CallbackSecretNotFound", Message: fmt.Sprintf("callback Secret %s not found", key)}
	}
	if err != nil {
		return nil, fmt.Errorf("callback Secret %s: %w", key, err)
	}
	if len(sec.Data[finchv1.CallbackPathKey]) < 16 || len(sec.Data[finchv1.CallbackStateKey]) < 32 ||
		url.PathEscape(string(sec.Data[finchv1.CallbackPathKey])) != string(sec.Data[finchv1.CallbackPathKey]) {
		return nil, &ConfigError{Reason: "CallbackSecretInvalid", Message: fmt.Sprintf(
			"Secret %s must hold %q (16+ URL-safe characters) and %q (32+ bytes); delete it and the operator creates a new one (then update the redirect URI in the Finch dashboard)",
			key, finchv1.CallbackPathKey, finchv1.CallbackStateKey)}
	}
	return sec, nil
}

// CallbackSecretName is the name of an app's callback Secret (in its
// SecretNamespace).
func CallbackSecretName(app finchv1.AppObject) string {
	if app.GetNamespace() == "" {
		return finchv1.ClusterCallbackSecretName(app.GetName())
	}
	return finchv1.CallbackSecretName(app.GetName())
}

// randomToken is n random URL-safe characters (6 bits each).
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func budgetConfig(rl *finchv1.RateLimit) budget.Config {
	cfg := budget.Default
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
