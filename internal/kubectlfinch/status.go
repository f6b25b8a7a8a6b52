package kubectlfinch

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// maxEvents is how many recent Events status shows.
const maxEvents = 10

type statusOptions struct {
	*Options
	out *outputFlags
}

func newStatusCommand(o *Options) *cobra.Command {
	s := &statusOptions{Options: o, out: newOutputFlags()}
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Explain one FinchConnection: conditions, Events, next step",
		Long: `Show the whole story of one employer's connection: where it is, the
conditions and recent Events the operator recorded, the published Connect
session (link and expiry), whether the token Secret exists (its value is never
read or shown), and what a human must do next.

-o wide shows every Event still stored, not only the last ` + strconv.Itoa(maxEvents) + `. -o json,
yaml, name, jsonpath=... and custom-columns=... print the FinchConnection
itself, as kubectl finch get NAME -o FORMAT does.`,
		Example: `  kubectl finch status acme
  kubectl finch status acme -n payroll
  kubectl finch status acme -o jsonpath='{.status.phase}'`,
		Args:              exactArgs("FinchConnection NAME"),
		ValidArgsFunction: o.completeConnections,
		RunE: func(cmd *cobra.Command, args []string) error {
			return s.run(cmd.Context(), args[0])
		},
	}
	s.out.add(cmd, "the explanation")
	return cmd
}

func (s *statusOptions) run(ctx context.Context, name string) error {
	if err := s.out.validate(); err != nil {
		return err
	}
	conn, err := s.getConnection(ctx, name)
	if err != nil {
		return err
	}
	table, wide := s.out.table()
	if !table {
		return s.out.printObject(s.Out, conn)
	}
	c, err := s.Client()
	if err != nil {
		return err
	}
	now := s.Now()
	out := s.Out
	st := &conn.Status
	fmt.Fprintf(out, "FinchConnection %s/%s\n", conn.Namespace, conn.Name)
	w := printers.GetNewTabWriter(out)
	line := func(k, v string) { fmt.Fprintf(w, "  %s:\t%s\n", k, v) }
	customer := conn.Spec.CustomerID
	if conn.Spec.CustomerName != "" {
		customer += " (" + conn.Spec.CustomerName + ")"
	}
	line("Customer", customer)
	line("App", s.appLine(ctx, c, conn))
	phase := orDash(string(st.Phase))
	if conn.Spec.Suspend {
		phase += " (suspended: no Finch calls)"
	}
	line("Phase", phase)
	if st.ConnectionID != "" {
		v := st.ConnectionID
		if st.ProviderID != "" {
			v += ", provider " + st.ProviderID
		}
		if st.ConnectedAt != nil {
			v += ", connected " + ago(st.ConnectedAt.Time, now)
		}
		line("Connection", v)
	}
	if cs := st.ConnectionStatus; cs != nil {
		v := "Finch reports " + cs.Status
		if cs.Message != "" {
			v += ": " + cs.Message
		}
		line("Finch status", v)
	}
	if v := authMethodsLine(conn, now); v != "" {
		line("Auth methods", v)
	}
	if v := dataSyncLine(conn, now); v != "" {
		line("Data synced", v)
	}
	products := "requested " + strings.Join(conn.ProductNames(), ", ")
	if len(st.GrantedProducts) > 0 {
		products += "; granted " + strings.Join(st.GrantedProducts, ", ")
	}
	line("Products", products)
	s.sessionLines(line, conn, now)
	line("Token Secret", s.tokenLine(ctx, c, conn))
	if st.LastIntrospectionTime != nil {
		line("Last check", "Finch introspected "+ago(st.LastIntrospectionTime.Time, now))
	}
	if r := st.Retry; r != nil {
		line("Retrying", fmt.Sprintf("%d failed attempts (%s); next %s", r.Failures, r.Reason, ago(r.NextAttemptTime.Time, now)))
	}
	if err := w.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(out, "\nConditions:")
	if err := printConditions(out, st.Conditions, now); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nRecent events:")
	if err := s.printEvents(ctx, c, conn, now, wide); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nNext step:")
	fmt.Fprintf(out, "  %s\n", nextStep(conn, now))
	if ready := condition(conn, finchv1.ConditionReady); ready != nil && ready.Message != "" && st.Phase != finchv1.PhaseConnected {
		fmt.Fprintf(out, "  (operator: %s)\n", ready.Message)
	}
	return nil
}

// authMethodsLine is each authentication method's status and last successful
// sync (a time, or Finch's value verbatim when it is not one).
func authMethodsLine(conn *finchv1.FinchConnection, now time.Time) string {
	var parts []string
	for _, m := range conn.Status.AuthenticationMethods {
		p := m.Type + " " + orDash(m.Status)
		switch {
		case m.LastSuccessfulSync != nil:
			p += ", last sync " + ago(m.LastSuccessfulSync.Time, now)
		case m.LastSuccessfulSyncRaw != "":
			p += fmt.Sprintf(", last sync %q", m.LastSuccessfulSyncRaw)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

// dataSyncLine says which initial data syncs Finch reported and whether the
// data can be read (condition DataSynced).
func dataSyncLine(conn *finchv1.FinchConnection, now time.Time) string {
	st := &conn.Status
	if st.ConnectionID == "" && st.InitialSync == nil {
		return ""
	}
	var parts []string
	if is := st.InitialSync; is != nil {
		if is.Organization != nil {
			parts = append(parts, "organization "+ago(is.Organization.Time, now))
		}
		if is.Payroll != nil {
			parts = append(parts, "payroll "+ago(is.Payroll.Time, now))
		}
	}
	v := "no initial sync reported yet"
	if len(parts) > 0 {
		v = "initial sync: " + strings.Join(parts, ", ")
	}
	if c := condition(conn, finchv1.ConditionDataSynced); c != nil {
		v += " (DataSynced=" + string(c.Status)
		if c.Status != metav1.ConditionTrue {
			v += ": " + c.Message
		}
		v += ")"
	}
	return v
}

// appLine says whether the connection's FinchApp or ClusterFinchApp exists
// and is Ready.
func (s *statusOptions) appLine(ctx context.Context, c client.Client, conn *finchv1.FinchConnection) string {
	what := conn.AppDescription()
	app, err := getApp(ctx, c, conn)
	switch {
	case apierrors.IsNotFound(err):
		return what + " (not found)"
	case err != nil:
		return what + " (" + cannotRead(conn, err) + ")"
	}
	return what + " (" + appReadiness(app.AppStatus().Conditions) + ")"
}

// appReadiness is an app's Ready condition and any Finch per-IP penalty.
func appReadiness(conds []metav1.Condition) string {
	ready := "Ready unknown"
	for _, cond := range conds {
		if cond.Type == finchv1.ConditionReady {
			ready = "Ready=" + string(cond.Status)
			if cond.Status != metav1.ConditionTrue {
				ready += " " + cond.Reason + ": " + cond.Message
			}
		}
		if cond.Type == finchv1.ConditionRateLimited && cond.Status == metav1.ConditionTrue {
			ready += "; Finch per-IP penalty: " + cond.Message
		}
	}
	return ready
}

func (s *statusOptions) sessionLines(line func(k, v string), conn *finchv1.FinchConnection, now time.Time) {
	sess := conn.Status.Session
	if sess == nil {
		line("Session", "none published")
		return
	}
	flow := "redirect flow"
	if embedded(conn) {
		flow = "embedded flow: open Finch Connect with this session ID"
	}
	line("Session", fmt.Sprintf("%s %s (%s), issued %s, %s (%s)", sess.Kind, sess.ID, flow,
		ago(sess.IssuedAt.Time, now), until(sess.ExpiresAt.Time, now), sess.ExpiresAt.UTC().Format(time.RFC3339)))
	if sess.ConnectURL != "" {
		line("Connect URL", sess.ConnectURL)
	}
}

// tokenLine reports the token Secret from its metadata alone: the plugin
// never fetches a token.
func (s *statusOptions) tokenLine(ctx context.Context, c client.Client, conn *finchv1.FinchConnection) string {
	name := conn.TokenSecretName()
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	err := c.Get(ctx, client.ObjectKey{Namespace: conn.Namespace, Name: name}, meta)
	switch {
	case apierrors.IsNotFound(err):
		return name + " does not exist (no token yet)"
	case err != nil:
		return name + " (cannot read: " + string(apierrors.ReasonForError(err)) + ")"
	}
	var who string
	switch {
	case metav1.IsControlledBy(meta, conn):
		who = "owned by this connection"
	case meta.Labels[finchv1.ConnectionLabel] == conn.Name:
		who = "labelled for this connection"
	default:
		who = "NOT owned by or labelled for this connection"
	}
	return fmt.Sprintf("%s exists (%s; the token is never shown)", name, who)
}

func printConditions(out io.Writer, conds []metav1.Condition, now time.Time) error {
	if len(conds) == 0 {
		_, err := fmt.Fprintln(out, "  none yet")
		return err
	}
	w := printers.GetNewTabWriter(out)
	fmt.Fprintln(w, "  TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
	for _, c := range conds {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, ago(c.LastTransitionTime.Time, now), c.Message)
	}
	return w.Flush()
}

// printEvents prints the connection's last maxEvents Events; all, every one.
func (s *statusOptions) printEvents(ctx context.Context, c client.Client, conn *finchv1.FinchConnection, now time.Time, all bool) error {
	list := &corev1.EventList{}
	err := c.List(ctx, list, client.InNamespace(conn.Namespace),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("involvedObject.uid", string(conn.UID))})
	if err != nil {
		if apierrors.IsForbidden(err) {
			_, err = fmt.Fprintln(s.Out, "  (not allowed to list Events)")
			return err
		}
		return fmt.Errorf("list Events: %w", err)
	}
	events := list.Items
	sort.SliceStable(events, func(i, j int) bool { return eventTime(&events[i]).Before(eventTime(&events[j])) })
	if len(events) > maxEvents && !all {
		events = events[len(events)-maxEvents:]
	}
	if len(events) == 0 {
		_, err := fmt.Fprintln(s.Out, "  none (Events expire after an hour by default)")
		return err
	}
	w := printers.GetNewTabWriter(s.Out)
	fmt.Fprintln(w, "  AGE\tTYPE\tREASON\tMESSAGE")
	for i := range events {
		e := &events[i]
		age := ago(eventTime(e), now)
		if n := eventCount(e); n > 1 {
			age += fmt.Sprintf(" (x%d)", n)
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", age, e.Type, e.Reason, e.Message)
	}
	return w.Flush()
}

// eventTime is when an Event last happened, whichever API wrote it.
func eventTime(e *corev1.Event) time.Time {
	t := e.CreationTimestamp.Time
	for _, c := range []time.Time{e.EventTime.Time, e.LastTimestamp.Time} {
		if c.After(t) {
			t = c
		}
	}
	if e.Series != nil && e.Series.LastObservedTime.After(t) {
		t = e.Series.LastObservedTime.Time
	}
	return t
}

func eventCount(e *corev1.Event) int32 {
	if e.Series != nil && e.Series.Count > e.Count {
		return e.Series.Count
	}
	return e.Count
}
