package provider

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBatcherGathersConcurrentChanges(t *testing.T) {
	var mu sync.Mutex
	var calls [][]string
	b := &Batcher{Window: 100 * time.Millisecond, Send: func(_ context.Context, pool string, ids []string) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, slices.Sorted(slices.Values(ids)))
		if slices.Contains(ids, "bad") {
			return errors.New("refused")
		}
		return nil
	}}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i, id := range []string{"1", "2", "3", "4"} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = b.Do(context.Background(), "pool", id) }()
	}
	wg.Wait()
	if len(calls) != 1 || !slices.Equal(calls[0], []string{"1", "2", "3", "4"}) || errors.Join(errs...) != nil {
		t.Fatalf("calls %v, errors %v", calls, errs)
	}
	// A batch's error reaches every change it carried.
	calls = nil
	var e1, e2 error
	wg.Add(2)
	go func() { defer wg.Done(); e1 = b.Do(context.Background(), "pool", "5") }()
	go func() { defer wg.Done(); e2 = b.Do(context.Background(), "pool", "bad") }()
	wg.Wait()
	if len(calls) != 1 || e1 == nil || e2 == nil {
		t.Fatalf("calls %v, errors %v %v", calls, e1, e2)
	}
	// A caller that gives up does not stop the call the others wait on.
	calls = nil
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Do(ctx, "pool", "6"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	if err := b.Do(context.Background(), "pool", "7"); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || !slices.Equal(calls[0], []string{"6", "7"}) {
		t.Fatalf("calls %v", calls)
	}
	// No window: each change alone, at once.
	calls = nil
	nb := &Batcher{Send: b.Send}
	nb.Do(context.Background(), "pool", "8")
	nb.Do(context.Background(), "pool", "9")
	if len(calls) != 2 {
		t.Fatalf("calls %v", calls)
	}
}
