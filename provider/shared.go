package provider

import (
	"context"
	"sync"
	"time"
)

// SharedReads lets callers that read the same thing at the same time (the
// swaps of a fleet's wave reading one load balancer, or listing the
// account's load balancers) share one API call. A caller joins only a read
// that starts after it asked, never one already under way, so it always
// sees what it changed itself before asking: N callers at once cost at most
// two calls, and each answer is as fresh as if the caller had read alone.
// Safe for concurrent use; the zero value is ready. Callers must not modify
// what a read returns: it is shared.
type SharedReads[T any] struct {
	// MaxAge, when set, lets a caller take a read that succeeded less than
	// MaxAge before it asked, as if it had read then: for reads whose
	// answer a little old does no harm (what else routes to a server, at
	// preflight). The caller that changes the thing calls Forget.
	MaxAge time.Duration

	mu      sync.Mutex
	running map[string]*sharedRead[T]
	next    map[string]*sharedRead[T]
	last    map[string]*sharedRead[T]
}

type sharedRead[T any] struct {
	read  func(context.Context) (T, error)
	ctx   context.Context
	done  chan struct{}
	start time.Time
	v     T
	err   error
}

// Forget drops what a MaxAge lets callers reuse for key: the next caller
// reads again.
func (s *SharedReads[T]) Forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.last, key)
}

// Do returns the result of read for key, made after the call to Do began,
// by this caller or another one waiting for the same key. The read runs
// under the context of the caller that started it, less its cancellation:
// the others wait on it; each caller still returns when its own ctx ends.
func (s *SharedReads[T]) Do(ctx context.Context, key string, read func(context.Context) (T, error)) (T, error) {
	return s.Recent(ctx, key, s.MaxAge, read)
}

// Recent is Do, except that a read that succeeded and began less than
// maxAge before the call is returned as it is (zero: never).
func (s *SharedReads[T]) Recent(ctx context.Context, key string, maxAge time.Duration, read func(context.Context) (T, error)) (T, error) {
	s.mu.Lock()
	if s.running == nil {
		s.running, s.next, s.last = map[string]*sharedRead[T]{}, map[string]*sharedRead[T]{}, map[string]*sharedRead[T]{}
	}
	if l := s.last[key]; l != nil && maxAge > 0 && time.Since(l.start) < maxAge {
		s.mu.Unlock()
		return l.v, nil
	}
	c := s.next[key]
	switch {
	case c != nil:
		// Queued behind a read under way: it starts after we asked.
	case s.running[key] != nil:
		c = &sharedRead[T]{read: read, ctx: context.WithoutCancel(ctx), done: make(chan struct{})}
		s.next[key] = c
	default:
		c = &sharedRead[T]{read: read, ctx: context.WithoutCancel(ctx), done: make(chan struct{})}
		s.running[key] = c
		go s.run(key, c)
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.v, c.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func (s *SharedReads[T]) run(key string, c *sharedRead[T]) {
	c.start = time.Now()
	c.v, c.err = c.read(c.ctx)
	close(c.done)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.err == nil {
		s.last[key] = c
	}
	delete(s.running, key)
	if n := s.next[key]; n != nil {
		delete(s.next, key)
		s.running[key] = n
		go s.run(key, n)
	}
}
