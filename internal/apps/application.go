package apps

// Finch counts its rate limits per application, that is per client_id
// (developer.tryfinch.com/api-reference/development-guides/Rate-Limits:
// "A Finch application has its own rate limits and all access tokens
// associated with the application will be subject to the application's rate
// limits ... A Finch application corresponds to a unique client_id"). So the
// request budget, its journal and its fair line belong to the Finch
// application (apiURL and client_id), shared by every FinchApp and
// ClusterFinchApp that names it, not to one app object.

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/budgetstore"
	"github.com/connectops/finch-operator/internal/finch"
)

// ApplicationID names the Finch application of apiURL and clientID: 16 hex
// digits of a SHA-256 of both. The client secret is no part of it: a wrong
// secret is still the same application to Finch's limits. The apiURL is, so
// that a sandbox or simulator with the same client_id is another application.
func ApplicationID(apiURL, clientID string) string {
	sum := sha256.Sum256([]byte("finch-operator/application/v1\x00" + normalizeAPIURL(apiURL) + "\x00" + clientID))
	return hex.EncodeToString(sum[:8])
}

// normalizeAPIURL is apiURL as Finch's host sees it: the default when empty,
// scheme and host in lower case, no trailing slash.
func normalizeAPIURL(apiURL string) string {
	if apiURL == "" {
		apiURL = finch.DefaultBaseURL
	}
	u, err := url.Parse(apiURL)
	if err != nil {
		return strings.TrimRight(apiURL, "/")
	}
	u.Scheme, u.Host = strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	return strings.TrimRight(u.String(), "/")
}

// credentialKey names one (application, client secret) pair in memory, for
// the credential-rejection latch; it is never shown or stored.
func credentialKey(appID, secret string) string {
	sum := sha256.Sum256([]byte("finch-operator/credentials/v1\x00" + appID + "\x00" + secret))
	return hex.EncodeToString(sum[:])
}

// application is what the app objects of one Finch application share.
type application struct {
	id      string
	budget  *budget.Budget
	journal types.NamespacedName // the budget's ConfigMap; empty: in memory only
	// members are the app objects using it, with their own spec.rateLimit.
	members map[types.NamespacedName]budget.Config
	// imported are the app objects whose legacy journal was read.
	imported map[types.NamespacedName]bool
}

// strictest is the budget that keeps within every member's spec.rateLimit:
// the fewest requests over the longest window (at most r requests in any
// window w implies at most r_i in any shorter w_i, for every r_i >= r).
func (a *application) strictest() budget.Config {
	var cfg budget.Config
	for _, c := range a.members {
		if cfg.Requests == 0 || c.Requests < cfg.Requests {
			cfg.Requests = c.Requests
		}
		cfg.Window = max(cfg.Window, c.Window)
	}
	if cfg.Requests == 0 {
		return budget.Default
	}
	return cfg
}

// Sharing is what an app's status shows of its Finch application.
type Sharing struct {
	// ID is the application's id (ApplicationID).
	ID string
	// BudgetConfigMap is the journal's ConfigMap in the cluster resource
	// namespace ("" when the budget is kept in memory only).
	BudgetConfigMap string
	// InEffect is the application's budget; Declared the app's own
	// spec.rateLimit (they differ when another app declares a stricter one).
	InEffect, Declared budget.Config
	// Others are the other app objects using the application, sorted
	// (ClusterFinchApps first, then by namespace and name).
	Others []types.NamespacedName
}

// Sharing returns the Finch application of a loaded app (false if the app is
// not loaded).
func (r *Registry) Sharing(key types.NamespacedName) (Sharing, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.applications[r.memberOf[key]]
	if a == nil {
		return Sharing{}, false
	}
	declared, ok := a.members[key]
	if !ok {
		return Sharing{}, false
	}
	s := Sharing{ID: a.id, BudgetConfigMap: a.journal.Name, InEffect: a.budget.Config(), Declared: declared}
	for k := range a.members {
		if k != key {
			s.Others = append(s.Others, k)
		}
	}
	slices.SortFunc(s.Others, func(x, y types.NamespacedName) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	return s, true
}

// joinLocked makes app (key) a member of Finch application id with its
// declared budget, leaving any other application, and returns the
// application. The first member creates the application's budget and
// attaches its journal. Each member's legacy journal (from before budgets
// were per application) is imported once per process. It returns the app
// objects whose status changes (the other members, when membership or the
// budget in effect changed).
func (r *Registry) joinLocked(ctx context.Context, key types.NamespacedName, app finchv1.AppObject, id string, declared budget.Config) (*application, []types.NamespacedName) {
	var wake []types.NamespacedName
	if prev := r.memberOf[key]; prev != "" && prev != id {
		wake = append(wake, r.leaveLocked(key)...)
	}
	a := r.applications[id]
	fresh := a == nil
	if fresh {
		a = &application{id: id, members: map[types.NamespacedName]budget.Config{}, imported: map[types.NamespacedName]bool{}}
		r.applications[id] = a
	}
	old, was := a.members[key]
	before := a.strictest()
	a.members[key] = declared
	r.memberOf[key] = id
	cfg := a.strictest()
	if fresh {
		a.budget = budget.New(cfg)
		r.attachJournalLocked(ctx, a, key, app)
	} else {
		if cfg != a.budget.Config() {
			a.budget.SetConfig(cfg)
		}
		r.importLegacyLocked(ctx, a, key, app, true)
	}
	if !was || old != declared || cfg != before {
		for k := range a.members {
			if k != key {
				wake = append(wake, k)
			}
		}
	}
	return a, wake
}

// leaveLocked takes key out of its application and returns the members left,
// whose status changes. The application and its budget stay: an app
// re-created, or loaded again once its Secret is fixed, must not get a fresh
// allowance.
func (r *Registry) leaveLocked(key types.NamespacedName) []types.NamespacedName {
	a := r.applications[r.memberOf[key]]
	delete(r.memberOf, key)
	if a == nil {
		return nil
	}
	if _, ok := a.members[key]; !ok {
		return nil
	}
	delete(a.members, key)
	if len(a.members) > 0 {
		if cfg := a.strictest(); cfg != a.budget.Config() {
			a.budget.SetConfig(cfg)
		}
	}
	out := make([]types.NamespacedName, 0, len(a.members))
	for k := range a.members {
		out = append(out, k)
	}
	return out
}

// attachJournalLocked keeps a's new budget in the application's ConfigMap in
// the cluster resource namespace (after importing the first member's legacy
// journal into it), so a restarted or new leader counts what the previous
// process spent in the window and never exceeds Finch's limit (claims of a
// quarter window's allowance: about 4 writes per window at full rate).
// Without a cluster resource namespace the budget is kept in memory only.
func (r *Registry) attachJournalLocked(ctx context.Context, a *application, key types.NamespacedName, app finchv1.AppObject) {
	if r.Writer == nil {
		return
	}
	if r.ClusterResourceNamespace == "" {
		logf.FromContext(ctx).Info("no cluster resource namespace (--cluster-resource-namespace): the Finch application's budget is kept in memory only and starts afresh on a restart",
			"app", KeyString(key), "finchApplication", a.id)
		return
	}
	a.journal = types.NamespacedName{Namespace: r.ClusterResourceNamespace, Name: budgetstore.ApplicationConfigMapName(a.id)}
	r.importLegacyLocked(ctx, a, key, app, false)
	if err := a.budget.AttachJournal(ctx, r.journal(a)); err != nil {
		logf.FromContext(ctx).Error(err, "load the Finch application's budget claims; calls wait for the first successful write",
			"app", KeyString(key), "budgetConfigMap", a.journal.String())
	}
}

func (r *Registry) journal(a *application) *budgetstore.Journal {
	return budgetstore.New(r.Writer, a.journal, budgetstore.Options{Reader: r.Reader, Name: a.journal.Name,
		Labels: map[string]string{budgetstore.ApplicationLabel: a.id}})
}

// importLegacyLocked copies the claims still live in key's legacy journal
// (<app>-finch-budget in its namespace, <app>-finch-cluster-budget for a
// ClusterFinchApp) into the application's, once per process: right after an
// upgrade they are what the old version spent in the window. reload makes a
// budget already in use learn of them.
func (r *Registry) importLegacyLocked(ctx context.Context, a *application, key types.NamespacedName, app finchv1.AppObject, reload bool) {
	if a.journal.Name == "" || a.imported[key] {
		return
	}
	legacy := types.NamespacedName{Namespace: app.GetNamespace(), Name: budgetstore.LegacyConfigMapName(key.Name)}
	if app.GetNamespace() == "" {
		legacy = types.NamespacedName{Namespace: r.ClusterResourceNamespace, Name: budgetstore.LegacyClusterConfigMapName(key.Name)}
	}
	// Claims occupy their slots for a window after their Until; two of the
	// longest window cover any that can still count.
	horizon := 2 * max(a.strictest().Window, a.members[key].Window, budget.Default.Window)
	n, err := r.journal(a).Import(ctx, legacy, time.Now().Add(-horizon))
	log := logf.FromContext(ctx).WithValues("app", KeyString(key), "budgetConfigMap", a.journal.String())
	if err != nil {
		// Not fatal: at worst Finch answers 429 for one window after the upgrade.
		log.Error(err, "import the app's budget claims from before budgets were per Finch application", "legacyConfigMap", legacy.String())
		return
	}
	a.imported[key] = true
	if n == 0 {
		return
	}
	log.Info("imported budget claims from before budgets were per Finch application", "claims", n, "legacyConfigMap", legacy.String())
	if reload {
		if err := a.budget.ReloadJournal(ctx); err != nil {
			log.Error(err, "reload the Finch application's budget claims")
		}
	}
}

// latchLocked is the credential-rejection latch of (application, secret):
// Finch answered invalid_client to these very credentials. It is keyed by the
// secret too, so an app with a mistyped secret latches itself (and any app
// with the same mistake) but not a healthy app with the same client_id;
// its calls until then spent the application's shared budget, as Finch
// counts them.
func (r *Registry) latchLocked(appID, secret string) *atomic.Bool {
	k := credentialKey(appID, secret)
	l := r.latches[k]
	if l == nil {
		l = &atomic.Bool{}
		r.latches[k] = l
	}
	return l
}

// notify tells the controllers that these apps' status changed.
func (r *Registry) notify(keys []types.NamespacedName) {
	if r.Notify == nil {
		return
	}
	for _, k := range keys {
		r.Notify(k)
	}
}

// BudgetConfigString renders a budget as status messages show it: "20 per 1m0s".
func BudgetConfigString(c budget.Config) string {
	return fmt.Sprintf("%d per %s", c.Requests, c.Window)
}
