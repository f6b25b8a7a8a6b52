package controllers

import (
	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// IndexConnectionSession indexes FinchConnections by app and the ID of the
// session published in status, so the callback finds the connection a signed
// state names without scanning the app's connections.
const IndexConnectionSession = "finch.connectops.dev/app-session"

func indexSession(c *finchv1.FinchConnection) []string {
	if c.Status.Session == nil || c.Status.Session.ID == "" {
		return nil
	}
	return []string{AppScoped(c.AppName(), c.Status.Session.ID)}
}
