// httpserver ADDR: the Go HTTP server of figure 8, standard library only. Built with
// CGO_ENABLED=0 (a static Go program: `preload run` traces it with ptrace, the hook cannot enter
// it). GET / answers "hello\n" (text/plain, Content-Length 6). On SIGTERM or SIGINT it closes its
// listener and connections, prints "served N" (requests answered) on stdout and exits 0.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: httpserver ADDR")
		os.Exit(2)
	}
	var served atomic.Int64
	body := []byte("hello\n")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "6")
		w.Write(body)
		served.Add(1)
	})
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: mux}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		<-stop
		srv.Shutdown(context.Background()) // idle keep-alive connections are closed at once
		close(done)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-done
	fmt.Printf("served %d\n", served.Load())
}
