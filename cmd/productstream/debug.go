package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// serveDebug serves the net/http/pprof handlers under /debug/pprof/ on addr
// (debug.listen), on a listener of its own, until ctx ends or stop is called.
// It returns once addr is bound, after logging "debug listening" with the
// bound address; an error means nothing is served and names debug.listen.
//
// stop closes the listener and every open connection, cutting short a
// profile being taken, and returns once the port is released. It is safe to
// call more than once, and after ctx has ended.
//
// The handlers are registered on a mux of their own. Importing net/http/pprof
// also registers them on http.DefaultServeMux, so no productstream server
// may serve that mux: the ingest listener must never answer /debug/pprof/.
func serveDebug(ctx context.Context, addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug.listen %s: %w", addr, err)
	}
	hs := &http.Server{
		Handler:           debugMux(),
		ReadHeaderTimeout: 10 * time.Second,
		// No WriteTimeout: /debug/pprof/profile and /trace answer after the
		// ?seconds= asked for, and pprof refuses longer ones than it.
		IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("debug server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	unhook := context.AfterFunc(ctx, func() { _ = hs.Close() })
	log.Info("debug listening", "addr", ln.Addr().String())
	return func() {
		unhook()
		_ = hs.Close()
		<-served
	}, nil
}

// debugMux routes /debug/pprof/ to net/http/pprof: the index and the named
// profiles (heap, goroutine, allocs, block, mutex, threadcreate) through
// pprof.Index, and the handlers that are not profiles registered explicitly.
func debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
