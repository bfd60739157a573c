package provider

import (
	"context"
	"sync"
	"time"
)

// Batcher gathers the changes that swaps running at once make to one
// thing, so that a driver whose provider takes a list sends a wave's
// changes in one call: the members of a pool (DigitalOcean's add and
// remove droplets, ELBv2's register and deregister targets), the servers
// given a tag (DigitalOcean's tag resources). A change waits Window for
// others to join it; every caller gets the error of the call that carried
// its change.
type Batcher struct {
	// Window is how long the first change of a batch waits for others.
	// Zero: no batching, each change is sent alone at once.
	Window time.Duration
	// Send makes one call for the changes (server IDs) to key (a pool, a
	// tag). Its context is the first caller's, less its cancellation.
	Send func(ctx context.Context, key string, ids []string) error

	mu   sync.Mutex
	open map[string]*batch
}

type batch struct {
	ids  []string
	done chan struct{}
	err  error
}

// Do adds ids to the key's open batch, or opens one, and waits until the
// batch was sent.
func (b *Batcher) Do(ctx context.Context, key string, ids ...string) error {
	if b.Window <= 0 {
		return b.Send(ctx, key, ids)
	}
	b.mu.Lock()
	if b.open == nil {
		b.open = map[string]*batch{}
	}
	bt := b.open[key]
	if bt == nil {
		bt = &batch{done: make(chan struct{})}
		b.open[key] = bt
		// The call outlives a caller that gives up: the others wait on it.
		sctx := context.WithoutCancel(ctx)
		time.AfterFunc(b.Window, func() { b.flush(sctx, key, bt) })
	}
	bt.ids = append(bt.ids, ids...)
	b.mu.Unlock()
	select {
	case <-bt.done:
		return bt.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Batcher) flush(ctx context.Context, key string, bt *batch) {
	b.mu.Lock()
	delete(b.open, key)
	ids := bt.ids
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	bt.err = b.Send(ctx, key, ids)
	close(bt.done)
}
