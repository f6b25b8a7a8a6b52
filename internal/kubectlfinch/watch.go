package kubectlfinch

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// runWatch is get --watch: the list (unless --watch-only), then each change
// as one row (or object, with -o), until ctx ends. It resumes from the last
// seen resourceVersion when the API server closes the watch, as informers do.
func (g *getOptions) runWatch(ctx context.Context, args []string, sel labels.Selector) error {
	opts, err := g.listOptions(g.allNamespaces, sel)
	if err != nil {
		return err
	}
	if len(args) == 1 {
		opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", args[0])
	}
	c, err := g.Client()
	if err != nil {
		return err
	}
	conns, rv, err := listWith(ctx, c, opts, &g.app)
	if err != nil {
		return err
	}
	table, _ := g.out.table()
	rows := g.newTable()
	print := func(conns ...finchv1.FinchConnection) error {
		if table {
			return rows.print(conns)
		}
		for i := range conns {
			if err := g.out.printObject(g.Out, &conns[i]); err != nil {
				return err
			}
		}
		return nil
	}
	if !g.watchOnly {
		if len(conns) == 0 && len(args) == 1 {
			ns, _ := g.Namespace()
			return connectionError(apierrors.NewNotFound(finchv1.GroupVersion.WithResource("finchconnections").GroupResource(), args[0]), ns, args[0])
		}
		if len(conns) == 0 {
			if err := g.noneFound(); err != nil {
				return err
			}
		} else if err := print(conns...); err != nil {
			return err
		}
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, rv, &connectionWatcher{c: c, opts: opts})
	if err != nil {
		return fmt.Errorf("watch FinchConnections: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("the watch of FinchConnections ended; run the command again")
			}
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				conn, ok := ev.Object.(*finchv1.FinchConnection)
				if !ok || !g.app.matchesConnection(conn) {
					continue
				}
				if ev.Type == watch.Deleted {
					// Its last row shows once more, as kubectl get --watch does.
					delete(rows.printed, conn.UID)
				}
				if err := print(*conn); err != nil {
					return err
				}
			case watch.Error:
				return fmt.Errorf("watch FinchConnections: %w", apierrors.FromObject(ev.Object))
			}
		}
	}
}

// connectionWatcher opens watches of FinchConnections for the RetryWatcher.
type connectionWatcher struct {
	c    client.WithWatch
	opts *client.ListOptions
}

func (w *connectionWatcher) WatchWithContext(ctx context.Context, raw metav1.ListOptions) (watch.Interface, error) {
	opts := *w.opts
	opts.Raw = &raw
	return w.c.Watch(ctx, &finchv1.FinchConnectionList{}, &opts)
}
