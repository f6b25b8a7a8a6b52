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
	// IndexConnectionTokenSecret indexes FinchConnections by token Secret name.
	IndexConnectionTokenSecret = "finch.connectops.dev/token-secret"
	// IndexAppSecret indexes FinchApps by the Secrets they read.
	IndexAppSecret = "finch.connectops.dev/secret"
)

// AppScoped joins an app name and a value into an index key.
func AppScoped(app, value string) string { return app + "/" + value }

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
		{IndexConnectionID, conn(func(c *finchv1.FinchConnection) []string {
			if c.Status.ConnectionID == "" {
				return nil
			}
			return []string{AppScoped(c.AppName(), c.Status.ConnectionID)}
		})},
		{IndexConnectionTokenSecret, conn(func(c *finchv1.FinchConnection) []string { return []string{c.TokenSecretName()} })},
	}
	for _, i := range indexes {
		if err := idx.IndexField(ctx, &finchv1.FinchConnection{}, i.name, i.fn); err != nil {
			return err
		}
	}
	return idx.IndexField(ctx, &finchv1.FinchApp{}, IndexAppSecret, func(o client.Object) []string {
		app := o.(*finchv1.FinchApp)
		names := []string{app.Spec.CredentialsSecretRef.Name}
		if app.Spec.WebhookSecretRef != nil {
			names = append(names, app.Spec.WebhookSecretRef.Name)
		}
		return names
	})
}
