package kubectlfinch

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// A connection's app is a FinchApp in its namespace or a cluster-scoped
// ClusterFinchApp (spec.appRef.kind). Tables name a FinchApp by its name, as
// they always did, and a ClusterFinchApp as ClusterFinchApp/NAME; messages
// name either as conn.AppDescription() does: FinchApp "x", ClusterFinchApp "x".

// appLabel is an app in a table column: NAME for a FinchApp,
// ClusterFinchApp/NAME for a ClusterFinchApp.
func appLabel(kind, name string) string {
	if kind == finchv1.ClusterFinchAppKind {
		return kind + "/" + name
	}
	return name
}

// appColumn is the APP column of a connection.
func appColumn(conn *finchv1.FinchConnection) string { return appLabel(conn.AppKind(), conn.AppName()) }

// appResource is the kind's short name for kubectl commands.
func appResource(conn *finchv1.FinchConnection) string {
	if conn.UsesClusterApp() {
		return "cfapp"
	}
	return "fapp"
}

// getApp reads the connection's app: its FinchApp in the connection's
// namespace, or its ClusterFinchApp (cluster-scoped, no namespace).
func getApp(ctx context.Context, c client.Client, conn *finchv1.FinchConnection) (finchv1.AppObject, error) {
	app := finchv1.NewAppObject(conn.AppKey())
	if err := c.Get(ctx, conn.AppKey(), app); err != nil {
		return nil, fmt.Errorf("get %s: %w", conn.AppDescription(), err)
	}
	return app, nil
}

// cannotRead says why an app could not be read, with what a ClusterFinchApp
// needs: the built-in admin, edit and view roles are bound per namespace and
// grant nothing on a cluster-scoped kind.
func cannotRead(conn *finchv1.FinchConnection, err error) string {
	why := string(apierrors.ReasonForError(err))
	if why == "" {
		why = err.Error()
	}
	if apierrors.IsForbidden(err) && conn.UsesClusterApp() {
		why += "; reading a ClusterFinchApp takes a ClusterRoleBinding, e.g. to the clusterfinchapp-viewer role"
	}
	return "cannot read: " + why
}

// appKinds are the kinds --app KIND/NAME takes, by lower-case kind or short name.
var appKinds = map[string]string{
	"finchapp":        finchv1.FinchAppKind,
	"fapp":            finchv1.FinchAppKind,
	"clusterfinchapp": finchv1.ClusterFinchAppKind,
	"cfapp":           finchv1.ClusterFinchAppKind,
}

// appFilter is the --app flag: NAME for the FinchApp NAME, ClusterFinchApp/NAME
// for a ClusterFinchApp, as the APP columns show them. Unset, it matches every app.
type appFilter struct {
	kind, name string
}

// Set parses NAME or KIND/NAME (KIND: FinchApp, ClusterFinchApp, fapp or cfapp).
func (f *appFilter) Set(v string) error {
	kind, name, ok := strings.Cut(v, "/")
	if !ok {
		kind, name = finchv1.FinchAppKind, v
	} else if kind = appKinds[strings.ToLower(kind)]; kind == "" {
		return fmt.Errorf("unknown app kind in %q: use NAME (a FinchApp) or ClusterFinchApp/NAME", v)
	}
	if name == "" {
		return fmt.Errorf("no app name in %q", v)
	}
	f.kind, f.name = kind, name
	return nil
}

func (f *appFilter) String() string { return appLabel(f.kind, f.name) }

func (f *appFilter) Type() string { return "app" }

// isSet says whether --app was given.
func (f *appFilter) isSet() bool { return f.name != "" }

// describe names the app for messages, as conn.AppDescription() does.
func (f *appFilter) describe() string { return fmt.Sprintf("%s %q", f.kind, f.name) }

// matches says whether the app of kind and name passes the filter.
func (f *appFilter) matches(kind, name string) bool {
	return !f.isSet() || f.kind == kind && f.name == name
}

// matchesConnection says whether conn uses the app the filter names.
func (f *appFilter) matchesConnection(conn *finchv1.FinchConnection) bool {
	return f.matches(conn.AppKind(), conn.AppName())
}

// appFlagUsage is the --app help of the commands that filter connections.
const appFlagUsage = "NAME (a FinchApp) or ClusterFinchApp/NAME, as the APP column shows it"
