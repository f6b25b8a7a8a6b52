package kubectlfinch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// maxSecretInput bounds a code or token read from a file or stdin.
const maxSecretInput = 16 << 10

// readSecretInput reads a code or token from --WHAT-file (a path, "-" for
// stdin) or, where the command has one, the value flag --WHAT, trimmed. It
// never echoes the value, not even in errors.
func readSecretInput(what string, valueFlag bool, value, file string, stdin io.Reader) (string, error) {
	switch {
	case value != "" && file != "":
		return "", fmt.Errorf("give the %s once: --%s or --%s-file", what, what, what)
	case value == "" && file == "" && valueFlag:
		return "", fmt.Errorf("the %s is required: --%s-file PATH (- for stdin), or --%s", what, what, what)
	case value == "" && file == "":
		return "", fmt.Errorf("the %s is required: --%s-file PATH (- for stdin)", what, what)
	}
	raw := []byte(value)
	if file != "" {
		r := stdin
		if file != "-" {
			f, err := os.Open(file)
			if err != nil {
				return "", fmt.Errorf("read the %s: %w", what, err)
			}
			defer func() { _ = f.Close() }()
			r = f
		}
		var err error
		if raw, err = io.ReadAll(io.LimitReader(r, maxSecretInput+1)); err != nil {
			return "", fmt.Errorf("read the %s: %w", what, err)
		}
		if len(raw) > maxSecretInput {
			return "", fmt.Errorf("the %s file is larger than %d bytes; is it the right file?", what, maxSecretInput)
		}
	}
	s := string(bytes.TrimSpace(raw))
	if s == "" {
		return "", fmt.Errorf("the %s is empty", what)
	}
	if strings.IndexFunc(s, unicode.IsSpace) >= 0 {
		return "", fmt.Errorf("the %s contains whitespace; give the bare value, one per file", what)
	}
	return s, nil
}

// redact removes a secret value from a message before it is printed.
func redact(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "[redacted]")
}

// --- handoff ---------------------------------------------------------------

type handoffOptions struct {
	*Options
	waitFlags
	code, codeFile string
}

func newHandoffCommand(o *Options) *cobra.Command {
	h := &handoffOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "handoff NAME (--code-file PATH | --code CODE)",
		Short: "Embedded flow: hand the employer's code to the operator",
		Long: `Hand an authorization code from Finch Connect's onSuccess (embedded flow) to
the operator: create a Secret of type
` + finchv1.CodeSecretType + `
labelled ` + finchv1.ConnectionLabel + `=NAME with the code under key
"` + finchv1.CodeKey + `". The operator exchanges it (codes live 10 minutes, single
use), stores the access token and deletes the code Secret. The code is never
printed.

Prefer --code-file (or --code-file - for stdin) over --code: a value on the
command line shows in the shell history and the process list.

Needs only "create" on Secrets in the namespace (plus "get" on FinchConnections
and Secrets for --wait).`,
		Example:           `  printf %s "$CODE" | kubectl finch handoff globex --code-file - --wait`,
		Args:              exactArgs("FinchConnection NAME"),
		ValidArgsFunction: o.completeConnections,
		RunE: func(cmd *cobra.Command, args []string) error {
			return h.run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().StringVar(&h.code, "code", "", "the authorization code (visible in shell history; prefer --code-file)")
	cmd.Flags().StringVar(&h.codeFile, "code-file", "", `file holding the authorization code ("-": stdin)`)
	h.waitFlags.add(cmd, "exchanged the code")
	return cmd
}

func (h *handoffOptions) run(ctx context.Context, name string) error {
	code, err := readSecretInput("code", true, h.code, h.codeFile, h.In)
	if err != nil {
		return err
	}
	c, ns, err := h.clientIn()
	if err != nil {
		return err
	}
	// A code for a connection that does not exist would be wasted: it expires
	// in 10 minutes. A backend allowed only to create Secrets may not look.
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &finchv1.FinchConnection{}); err != nil && !apierrors.IsForbidden(err) {
		return connectionError(err, ns, name)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: name + "-code-", Namespace: ns,
			Labels: map[string]string{finchv1.ConnectionLabel: name},
		},
		Type: finchv1.CodeSecretType,
		Data: map[string][]byte{finchv1.CodeKey: []byte(code)},
	}
	if err := c.Create(ctx, sec); err != nil {
		return fmt.Errorf("create the code Secret for %s: %s", name, redact(err.Error(), code))
	}
	fmt.Fprintf(h.Out, "code handed over to %s in Secret %s (the code is not shown); the operator exchanges it and deletes the Secret\n", name, sec.Name)
	if !h.wait {
		return nil
	}
	var rejected string
	conn, err := h.waitConnection(ctx, name, h.timeout, func(conn *finchv1.FinchConnection) (bool, error) {
		if msg := conn.Status.CodeExchangeError; strings.Contains(msg, sec.Name) {
			rejected = msg
			return true, nil
		}
		if stalled := condition(conn, finchv1.ConditionStalled); stalled != nil && stalled.Status == metav1.ConditionTrue &&
			stalled.Reason == finchv1.ReasonTokenSecretNotOwned {
			rejected = stalled.Message
			return true, nil
		}
		tok := &metav1.PartialObjectMetadata{}
		tok.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: conn.TokenSecretName()}, tok)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read the token Secret's metadata: %w", err)
		}
		// Done once the token from this code is stored and introspected.
		return tok.Annotations[finchv1.TokenCodeSecretUIDAnnotation] == string(sec.UID) &&
			conn.Status.TokenVersion == tok.ResourceVersion, nil
	})
	if err != nil {
		return errors.New(redact(err.Error(), code))
	}
	if rejected != "" {
		return fmt.Errorf("the operator could not use the code: %s", redact(rejected, code))
	}
	h.result(conn)
	return nil
}

// --- adopt -----------------------------------------------------------------

type adoptOptions struct {
	*Options
	waitFlags
	tokenFile, secretName string
	overwrite             bool
}

func newAdoptCommand(o *Options) *cobra.Command {
	a := &adoptOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "adopt NAME --token-file PATH",
		Short: "Migration: store a token you hold, for the operator to adopt",
		Long: `Write an existing Finch access token into the connection's token Secret
(spec.tokenSecretRef, default NAME-finch-token) under key "` + finchv1.AccessTokenKey + `",
labelled ` + finchv1.ConnectionLabel + `=NAME: Finch's "migrate existing
connections". Works before the FinchConnection exists (create it afterwards; no
Connect session is issued) or after (it is adopted at once with one
GET /introspect). The token is never printed.

An existing Secret is changed only with --overwrite (which keeps its other
keys).
Before the FinchConnection exists, --secret-name must match its future
spec.tokenSecretRef.name if it will set one.`,
		Example: `  kubectl finch adopt legacy --token-file legacy.token --wait
  vault read -field=token secret/finch/legacy |
    kubectl finch adopt legacy --token-file -`,
		Args:              exactArgs("FinchConnection NAME"),
		ValidArgsFunction: o.completeConnections,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().StringVar(&a.tokenFile, "token-file", "", `file holding the access token ("-": stdin)`)
	cmd.Flags().StringVar(&a.secretName, "secret-name", "", "token Secret name (default: the connection's spec.tokenSecretRef, else NAME-finch-token)")
	cmd.Flags().BoolVar(&a.overwrite, "overwrite", false, "replace the token in an existing Secret")
	a.waitFlags.add(cmd, "introspected the token")
	return cmd
}

func (a *adoptOptions) run(ctx context.Context, name string) error {
	// No --token value flag: --token is kubectl's bearer token for the API server.
	token, err := readSecretInput("token", false, "", a.tokenFile, a.In)
	if err != nil {
		return err
	}
	c, ns, err := a.clientIn()
	if err != nil {
		return err
	}
	conn := &finchv1.FinchConnection{}
	switch err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, conn); {
	case apierrors.IsNotFound(err):
		conn = nil
	case err != nil:
		return connectionError(err, ns, name)
	}
	secretName := a.secretName
	if conn != nil {
		if secretName != "" && secretName != conn.TokenSecretName() {
			return fmt.Errorf("FinchConnection %s keeps its token in Secret %s, not %s", name, conn.TokenSecretName(), secretName)
		}
		secretName = conn.TokenSecretName()
	} else if secretName == "" {
		secretName = (&finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Name: name}}).TokenSecretName()
	}

	sec := &corev1.Secret{}
	key := client.ObjectKey{Namespace: ns, Name: secretName}
	switch err := c.Get(ctx, key, sec); {
	case apierrors.IsNotFound(err):
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: ns},
			Type:       finchv1.TokenSecretType,
		}
		fillToken(sec, name, conn, token)
		if err := c.Create(ctx, sec); err != nil {
			return fmt.Errorf("create token Secret %s: %s", secretName, redact(err.Error(), token))
		}
	case err != nil:
		return fmt.Errorf("read token Secret %s: %w", secretName, err)
	default:
		if !a.overwrite {
			return fmt.Errorf("token Secret %s already exists; pass --overwrite to replace its %q key", secretName, finchv1.AccessTokenKey)
		}
		fillToken(sec, name, conn, token)
		if err := c.Update(ctx, sec); err != nil {
			return fmt.Errorf("update token Secret %s: %s", secretName, redact(err.Error(), token))
		}
	}
	fmt.Fprintf(a.Out, "token stored in Secret %s/%s (key %s, label %s=%s; the token is not shown)\n",
		ns, secretName, finchv1.AccessTokenKey, finchv1.ConnectionLabel, name)
	if conn == nil {
		fmt.Fprintf(a.Out, "FinchConnection %s does not exist yet: create it (with its customerID) and the operator adopts the token without a Connect session\n", name)
		return nil
	}
	if !a.wait {
		return nil
	}
	version := sec.ResourceVersion
	// Every introspection outcome records the token's version, with the
	// conditions it led to in the same status write.
	conn, err = a.waitConnection(ctx, name, a.timeout, func(c *finchv1.FinchConnection) (bool, error) {
		return c.Status.TokenVersion == version, nil
	})
	if err != nil {
		return errors.New(redact(err.Error(), token))
	}
	a.result(conn)
	if conditionIs(conn, finchv1.ConditionStalled, metav1.ConditionTrue) {
		return fmt.Errorf("the operator could not adopt the token of %s: %s", name, condition(conn, finchv1.ConditionStalled).Reason)
	}
	return nil
}

// fillToken puts the token, the label and the known non-secret facts on sec.
func fillToken(sec *corev1.Secret, name string, conn *finchv1.FinchConnection, token string) {
	if sec.Labels == nil {
		sec.Labels = map[string]string{}
	}
	sec.Labels[finchv1.ConnectionLabel] = name
	if conn != nil {
		if sec.Annotations == nil {
			sec.Annotations = map[string]string{}
		}
		sec.Annotations[finchv1.TokenCustomerIDAnnotation] = conn.Spec.CustomerID
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[finchv1.AccessTokenKey] = []byte(token)
}
