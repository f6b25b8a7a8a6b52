// Package index holds the field indexes on the manager's cache that the
// controllers and the inbound server look connections up by, and the one
// rule that picks among connections that claim the same thing.
package index

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// Field indexes on the cache. Lookups of a FinchApp's connections are scoped
// with InNamespace; a ClusterFinchApp's connections are filed under all
// namespaces (one customer_id space per Finch application), so ForApp and
// ForAppValue build the options for either.
const (
	// ConnectionApp indexes FinchConnections by the FinchApp they use.
	ConnectionApp = "finch.connectops.dev/app"
	// ConnectionCustomer indexes FinchConnections by app and customerID, to
	// find duplicates.
	ConnectionCustomer = "finch.connectops.dev/app-customer"
	// ConnectionID indexes FinchConnections by app and status.connectionID,
	// for webhooks and callbacks.
	ConnectionID = "finch.connectops.dev/app-connection-id"
	// ConnectionCompanyID indexes FinchConnections by app and
	// status.companyID, for webhooks that carry no connection_id.
	ConnectionCompanyID = "finch.connectops.dev/app-company-id"
	// ConnectionAccountID indexes FinchConnections by app and
	// status.accountID, for webhooks that carry no connection_id.
	ConnectionAccountID = "finch.connectops.dev/app-account-id"
	// ConnectionSession indexes FinchConnections by app and the ID of the
	// session published in status, so the callback finds the connection a
	// signed state names without scanning the app's connections.
	ConnectionSession = "finch.connectops.dev/app-session"
	// ConnectionTokenSecret indexes FinchConnections by the token Secret
	// name set in spec.tokenSecretRef (default names are not indexed; see
	// finchv1.DefaultTokenSecretOwner).
	ConnectionTokenSecret = "finch.connectops.dev/token-secret"
	// AppSecret indexes FinchApps by the Secrets they read.
	AppSecret = "finch.connectops.dev/secret"
)

// AppScoped joins an app name and a value into an index key.
func AppScoped(app, value string) string { return app + "/" + value }

// ForApp lists the connections of app key (finchv1.AppKeyOf: no namespace
// for a ClusterFinchApp), by the ConnectionApp index.
func ForApp(key types.NamespacedName) []client.ListOption {
	return scoped(key, ConnectionApp, key.Name)
}

// ForAppValue lists the connections of app key whose app-scoped index field
// (ConnectionCustomer, ConnectionID, ...) has value.
func ForAppValue(key types.NamespacedName, field, value string) []client.ListOption {
	return scoped(key, field, AppScoped(key.Name, value))
}

func scoped(key types.NamespacedName, field, value string) []client.ListOption {
	if key.Namespace == "" {
		return []client.ListOption{client.MatchingFields{field: value}}
	}
	return []client.ListOption{client.InNamespace(key.Namespace), client.MatchingFields{field: value}}
}

// appScopedIfSet is the index value of an optional field: none while it is
// empty, so connections without it never match an empty lookup.
func appScopedIfSet(c *finchv1.FinchConnection, value string) []string {
	if value == "" {
		return nil
	}
	return []string{AppScoped(c.AppName(), value)}
}

func sessionID(c *finchv1.FinchConnection) string {
	if c.Status.Session == nil {
		return ""
	}
	return c.Status.Session.ID
}

// fieldIndexName and namespacedKey are how controller-runtime's cache reader
// looks an index up for client.List with InNamespace and MatchingFields
// (pkg/cache/internal: FieldIndexName, KeyToNamespacedKey). The envtest in
// this package fails if they change.
func fieldIndexName(field string) string { return "field:" + field }

func namespacedKey(ns, value string) string { return ns + "/" + value }

// allNamespaces is controller-runtime's namespace key of a List without
// InNamespace (pkg/cache/internal: KeyToNamespacedKey).
const allNamespaces = "__all_namespaces"

// connectionIndexes are the FinchConnection indexes. Most values are unique
// per connection, and client-go keeps a set per value (about 250 B), so
// every index here is one someone looks up.
var connectionIndexes = []struct {
	name string
	// app: the values are the app's (filed under all namespaces for a
	// ClusterFinchApp's connection), not the namespace's.
	app bool
	fn  func(*finchv1.FinchConnection) []string
}{
	{ConnectionApp, true, func(c *finchv1.FinchConnection) []string { return []string{c.AppName()} }},
	{ConnectionCustomer, true, func(c *finchv1.FinchConnection) []string {
		return []string{AppScoped(c.AppName(), c.Spec.CustomerID)}
	}},
	{ConnectionID, true, func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, c.Status.ConnectionID) }},
	{ConnectionCompanyID, true, func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, c.Status.CompanyID) }},
	{ConnectionAccountID, true, func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, c.Status.AccountID) }},
	{ConnectionSession, true, func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, sessionID(c)) }},
	// Only a name set in spec: a default name maps back to its connection
	// by finchv1.DefaultTokenSecretOwner, no index needed.
	{ConnectionTokenSecret, false, func(c *finchv1.FinchConnection) []string {
		if c.Spec.TokenSecretRef == nil || c.Spec.TokenSecretRef.Name == "" {
			return nil
		}
		return []string{c.Spec.TokenSecretRef.Name}
	}},
}

// Setup registers the field indexes every controller and the inbound server
// rely on.
//
// The FinchConnection indexes hold each value under the object's namespace
// only. controller-runtime's IndexField also files every value under an
// all-namespaces key, for List without InNamespace, which this operator
// never does on them: that copy doubled the indexes, about 2 KiB of 8 per
// connection at 10,000 (docs/benchmarks.md).
//
// clusterApps adds the ClusterFinchApp index (false in a namespace-scoped
// install, which cannot watch cluster-scoped kinds).
func Setup(ctx context.Context, mgr manager.Manager, clusterApps bool) error {
	inf, err := mgr.GetCache().GetInformer(ctx, &finchv1.FinchConnection{})
	if err != nil {
		return fmt.Errorf("FinchConnection informer: %w", err)
	}
	indexers := toolscache.Indexers{}
	for _, i := range connectionIndexes {
		indexers[fieldIndexName(i.name)] = func(obj any) ([]string, error) {
			c, ok := obj.(*finchv1.FinchConnection)
			if !ok {
				return nil, fmt.Errorf("index %s: unexpected %T", i.name, obj)
			}
			vals := i.fn(c)
			ns := c.Namespace
			if i.app && c.UsesClusterApp() {
				ns = allNamespaces // one customer_id space across namespaces
			}
			for n, v := range vals {
				vals[n] = namespacedKey(ns, v)
			}
			return vals, nil
		}
	}
	if err := inf.AddIndexers(indexers); err != nil {
		return fmt.Errorf("FinchConnection indexes: %w", err)
	}
	// FinchApps are few: the standard index.
	if err := mgr.GetFieldIndexer().IndexField(ctx, &finchv1.FinchApp{}, AppSecret, func(o client.Object) []string {
		app := o.(*finchv1.FinchApp)
		return appSecrets(&app.Spec, finchv1.CallbackSecretName(app.Name))
	}); err != nil {
		return err
	}
	if !clusterApps {
		return nil
	}
	// A ClusterFinchApp's Secrets are in the cluster resource namespace.
	return mgr.GetFieldIndexer().IndexField(ctx, &finchv1.ClusterFinchApp{}, AppSecret, func(o client.Object) []string {
		app := o.(*finchv1.ClusterFinchApp)
		return appSecrets(&app.Spec.FinchAppSpec, finchv1.ClusterCallbackSecretName(app.Name))
	})
}

// appSecrets are the Secrets an app reads, the callback Secret too:
// deleting it (a rotation) reloads the app.
func appSecrets(spec *finchv1.FinchAppSpec, callback string) []string {
	names := []string{spec.CredentialsSecretRef.Name, callback}
	if spec.WebhookSecretRef != nil {
		names = append(names, spec.WebhookSecretRef.Name)
	}
	return names
}

// Older reports whether a wins over b when both claim the same customer,
// connection or session: the older creationTimestamp; within the same
// second (timestamps have whole seconds) the one that already reached Finch
// (a session or a connection ID in status), so a same-second duplicate never
// stalls the connection whose link is out; then the smaller name, then the
// smaller namespace (a ClusterFinchApp's connections may share a name across
// namespaces).
// The duplicate check (the newer connection stalls) and the inbound server
// (a code or webhook goes to the survivor) both use it, so they never
// disagree about which connection is the real one.
func Older(a, b *finchv1.FinchConnection) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	if pa, pb := reachedFinch(a), reachedFinch(b); pa != pb {
		return pa
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.Namespace < b.Namespace
}

func reachedFinch(c *finchv1.FinchConnection) bool {
	return c.Status.Session != nil || c.Status.ConnectionID != ""
}

// Oldest returns the connection that wins by Older among items that are not
// being deleted and pass keep (nil keep: all), or nil.
func Oldest(items []finchv1.FinchConnection, keep func(*finchv1.FinchConnection) bool) *finchv1.FinchConnection {
	var best *finchv1.FinchConnection
	for i := range items {
		c := &items[i]
		if !c.DeletionTimestamp.IsZero() || (keep != nil && !keep(c)) {
			continue
		}
		if best == nil || Older(c, best) {
			best = c
		}
	}
	return best
}
