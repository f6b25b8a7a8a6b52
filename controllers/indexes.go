package controllers

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// Field indexes on the cache. Lookups are always scoped with InNamespace.
const (
	// IndexConnectionApp indexes FinchConnections by the FinchApp they use.
	IndexConnectionApp = "finch.connectops.dev/app"
	// IndexConnectionCustomer indexes FinchConnections by app and customerID,
	// to find duplicates.
	IndexConnectionCustomer = "finch.connectops.dev/app-customer"
	// IndexConnectionID indexes FinchConnections by app and status.connectionID,
	// for webhooks and callbacks.
	IndexConnectionID = "finch.connectops.dev/app-connection-id"
	// IndexConnectionCompanyID indexes FinchConnections by app and
	// status.companyID, for webhooks that carry no connection_id.
	IndexConnectionCompanyID = "finch.connectops.dev/app-company-id"
	// IndexConnectionAccountID indexes FinchConnections by app and
	// status.accountID, for webhooks that carry no connection_id.
	IndexConnectionAccountID = "finch.connectops.dev/app-account-id"
	// IndexConnectionTokenSecret indexes FinchConnections by token Secret name.
	IndexConnectionTokenSecret = "finch.connectops.dev/token-secret"
	// IndexAppSecret indexes FinchApps by the Secrets they read.
	IndexAppSecret = "finch.connectops.dev/secret"
)

// AppScoped joins an app name and a value into an index key.
func AppScoped(app, value string) string { return app + "/" + value }

// appScopedIfSet is the index value of an optional status field: none while
// it is empty, so connections without it never match an empty lookup.
func appScopedIfSet(c *finchv1.FinchConnection, value string) []string {
	if value == "" {
		return nil
	}
	return []string{AppScoped(c.AppName(), value)}
}

// SetupIndexes registers the field indexes every controller and the inbound
// server rely on.
func SetupIndexes(ctx context.Context, mgr manager.Manager) error {
	idx := mgr.GetFieldIndexer()
	conn := func(f func(*finchv1.FinchConnection) []string) client.IndexerFunc {
		return func(o client.Object) []string { return f(o.(*finchv1.FinchConnection)) }
	}
	indexes := []struct {
		name string
		fn   client.IndexerFunc
	}{
		{IndexConnectionApp, conn(func(c *finchv1.FinchConnection) []string { return []string{c.AppName()} })},
		{IndexConnectionCustomer, conn(func(c *finchv1.FinchConnection) []string {
			return []string{AppScoped(c.AppName(), c.Spec.CustomerID)}
		})},
		{IndexConnectionID, conn(func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, c.Status.ConnectionID) })},
		{IndexConnectionCompanyID, conn(func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, c.Status.CompanyID) })},
		{IndexConnectionAccountID, conn(func(c *finchv1.FinchConnection) []string { return appScopedIfSet(c, c.Status.AccountID) })},
		{IndexConnectionTokenSecret, conn(func(c *finchv1.FinchConnection) []string { return []string{c.TokenSecretName()} })},
		{IndexConnectionSession, conn(indexSession)},
	}
	for _, i := range indexes {
		if err := idx.IndexField(ctx, &finchv1.FinchConnection{}, i.name, i.fn); err != nil {
			return err
		}
	}
	return idx.IndexField(ctx, &finchv1.FinchApp{}, IndexAppSecret, func(o client.Object) []string {
		app := o.(*finchv1.FinchApp)
		// The callback Secret too: deleting it (a rotation) reloads the app.
		names := []string{app.Spec.CredentialsSecretRef.Name, CallbackSecretName(app.Name)}
		if app.Spec.WebhookSecretRef != nil {
			names = append(names, app.Spec.WebhookSecretRef.Name)
		}
		return names
	})
}
