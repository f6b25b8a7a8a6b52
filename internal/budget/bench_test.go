package budget

import (
	"context"
	"testing"
	"time"
)

func BenchmarkBudgetWait(b *testing.B) {
	bud := New(Config{Requests: 1 << 30, Window: time.Millisecond})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := bud.Wait(ctx, EndpointIntrospect); err != nil {
			b.Fatal(err)
		}
	}
}
