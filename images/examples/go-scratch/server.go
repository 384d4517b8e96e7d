// A static Go HTTP service for an image FROM scratch with the preload bundle.
//
//	GET /                   a greeting
//	GET /write?path=P       writes P
//	GET /connect?port=N     connects to 127.0.0.1:N
//
// It listens on port 8080 and keeps Go's default for SIGTERM: it dies of it.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	http.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		if err := os.WriteFile(r.URL.Query().Get("path"), []byte("written\n"), 0644); err != nil {
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "written")
	})
	http.HandleFunc("/connect", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+r.URL.Query().Get("port"), 2*time.Second)
		if err != nil {
			fmt.Fprintln(w, err)
			return
		}
		c.Close()
		fmt.Fprintln(w, "connected")
	})
	fmt.Println("listening on 8080")
	if err := http.ListenAndServe(":8080", nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
