// Package index holds the field indexes on the manager's cache that the
// controllers and the inbound server look connections up by, and the one
// rule that picks among connections that claim the same thing.
package index

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// Field indexes on the cache. Lookups are always scoped with InNamespace.
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
	// ConnectionTokenSecret indexes FinchConnections by token Secret name.
	ConnectionTokenSecret = "finch.connectops.dev/token-secret"
	// AppSecret indexes FinchApps by the Secrets they read.
	AppSecret = "finch.connectops.dev/secret"
)

// AppScoped joins an app name and a value into an index key.
func AppScoped(app, value string) string { return app + "/" + value }

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

// Setup registers the field indexes every controller and the inbound server
// rely on.
func Setup(ctx context.Context, mgr manager.Manager) error {
	idx := mgr.GetFieldIndexer()
	conn := func(f func(*finchv1.FinchConnection) []string) client.IndexerFunc {
		return func(o client.Object) []string { return f(o.(*finchv1.FinchConnection)) }
	}
	indexes := []struct {
		name string
		fn   client.IndexerFunc
	}{
		{ConnectionApp, conn(func(c *finchv1.FinchConnection) []string { return []string{c.AppName()} })},
		{ConnectionCustomer, conn(func(c *finchv1.FinchConnection) []string {
			return []string{AppScoped(c.AppName(), c.Spec.CustomerID)}
		})},
		{ConnectionID, conn(func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, c.Status.ConnectionID) })},
		{ConnectionCompanyID, conn(func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, c.Status.CompanyID) })},
		{ConnectionAccountID, conn(func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, c.Status.AccountID) })},
		{ConnectionSession, conn(func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, sessionID(c)) })},
		{ConnectionTokenSecret, conn(func(c *finchv1.FinchConnection) []string { return []string{c.TokenSecretName()} })},
	}
	for _, i := range indexes {
		if err := idx.IndexField(ctx, &finchv1.FinchConnection{}, i.name, i.fn); err != nil {
			return fmt.Errorf("index %s: %w", i.name, err)
		}
	}
	return idx.IndexField(ctx, &finchv1.FinchApp{}, AppSecret, func(o client.Object) []string {
		app := o.(*finchv1.FinchApp)
		// The callback Secret too: deleting it (a rotation) reloads the app.
		names := []string{app.Spec.CredentialsSecretRef.Name, finchv1.CallbackSecretName(app.Name)}
		if app.Spec.WebhookSecretRef != nil {
			names = append(names, app.Spec.WebhookSecretRef.Name)
		}
		return names
	})
}

// Older reports whether a wins over b when both claim the same customer,
// connection or session: the older creationTimestamp, then the smaller name.
// The duplicate check (the newer connection stalls) and the inbound server
// (a code or webhook goes to the survivor) both use it, so they never
// disagree about which connection is the real one.
func Older(a, b *finchv1.FinchConnection) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
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
