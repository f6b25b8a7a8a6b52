package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// newConn is the FinchConnection the bench creates: one employer.
func newConn(ns, name, customer string) *finchv1.FinchConnection {
	return &finchv1.FinchConnection{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: finchv1.FinchConnectionSpec{
			CustomerID:    customer,
			CustomerName:  "Employer " + customer,
			CustomerEmail: customer + "@employer.example",
			Products:      []finchv1.Product{"company", "directory", "individual", "employment", "payment"},
		},
	}
}

func connName(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

func keysFor(ns, prefix string, n int) []types.NamespacedName {
	out := make([]types.NamespacedName, n)
	for i := range out {
		out[i] = types.NamespacedName{Namespace: ns, Name: connName(prefix, i)}
	}
	return out
}

// createConns creates n FinchConnections with `workers` goroutines, calling
// done (if set) after each create. perSecond > 0 spreads them over time.
func createConns(ctx context.Context, c client.Client, ns, prefix string, n, workers int, perSecond float64, done func(*finchv1.FinchConnection)) error {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	start := time.Now()
	return parallel(ctx, workers, idx, func(i int) error {
		if perSecond > 0 {
			sleepUntil(ctx, start.Add(time.Duration(float64(i)/perSecond*float64(time.Second))))
		}
		conn := newConn(ns, connName(prefix, i), fmt.Sprintf("%s-cust-%05d", prefix, i))
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if err = c.Create(ctx, conn); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("create %s: %w", conn.Name, err)
		}
		if done != nil {
			done(conn)
		}
		return nil
	})
}

// spread picks k of keys, evenly spaced.
func spread(keys []types.NamespacedName, k int) []types.NamespacedName {
	if k < 1 {
		return nil
	}
	sel := make([]types.NamespacedName, 0, k)
	for i := 0; i < k; i++ {
		sel = append(sel, keys[i*(len(keys)/k)])
	}
	return sel
}

// handOver connects keys through the embedded flow: the employer completes
// each Connect session at the simulator and a code Secret hands the code over.
func (h *harness) handOver(ctx context.Context, sim *simServer, workers int, keys []types.NamespacedName) error {
	return parallel(ctx, workers, keys, func(key types.NamespacedName) error {
		s, ok := h.tr.get(key)
		if !ok || s.sessID == "" {
			return fmt.Errorf("%s has no session", key.Name)
		}
		code, err := sim.CompleteSession(s.sessID, finchsim.Completion{})
		if err != nil {
			return fmt.Errorf("complete %s: %w", key.Name, err)
		}
		return h.c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{GenerateName: key.Name + "-code-", Namespace: key.Namespace,
				Labels: map[string]string{finchv1.ConnectionLabel: key.Name}},
			Type:       finchv1.CodeSecretType,
			StringData: map[string]string{finchv1.CodeKey: code},
		})
	})
}

// connIDs are the Finch connection IDs of connected keys.
func (h *harness) connIDs(keys []types.NamespacedName) ([]string, error) {
	ids := make([]string, 0, len(keys))
	for _, key := range keys {
		s, _ := h.tr.get(key)
		if s.connID == "" {
			return nil, fmt.Errorf("%s has no connection ID", key.Name)
		}
		ids = append(ids, s.connID)
	}
	return ids, nil
}

// flipToReauth flips every connection to reauth at the same moment (one
// goroutine each, released together): Finch sends one account.updated
// webhook each. It returns when every flip is done.
func flipToReauth(sim *simServer, ids []string) (released time.Time, err error) {
	var gate, wg sync.WaitGroup
	var mu sync.Mutex
	gate.Add(1)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gate.Wait()
			if e := sim.SetConnectionStatus(id, "reauth"); e != nil {
				mu.Lock()
				err = fmt.Errorf("flip %s: %w", id, e)
				mu.Unlock()
			}
		}()
	}
	released = time.Now()
	gate.Done()
	wg.Wait()
	return released, err
}

// parallel runs f over items with n goroutines and returns the first error.
func parallel[T any](ctx context.Context, n int, items []T, f func(T) error) error {
	ch := make(chan T)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				if err := f(it); err != nil {
					mu.Lock()
					first = cmpOr(first, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, it := range items {
		select {
		case ch <- it:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
	return cmpOr(first, ctx.Err())
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

// errTimeout is what poll returns when its time is up.
var errTimeout = errors.New("timed out")

// poll calls done every `every` until it reports true or an error, ctx ends,
// or timeout has passed (errTimeout).
func poll(ctx context.Context, every, timeout time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok, err := done(); ok || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// timedOut is err, or the error described by format if err is errTimeout.
func timedOut(err error, format string, args ...any) error {
	if errors.Is(err, errTimeout) {
		return fmt.Errorf(format, args...)
	}
	return err
}
