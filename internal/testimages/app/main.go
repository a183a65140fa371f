// Command app is the program inside Shoal's test images. Its first argument
// picks what it does:
//
//	exit N          print "exiting N" and exit with code N
//	sleep           run until SIGTERM, then exit 0
//	ignore-term     run and ignore SIGTERM (to be killed after the grace period)
//	lines N         print "line 1" ... "line N", then run until SIGTERM
//	talk N D        print "out 1" ... "out N" on stdout and "err 1" ...
//	                "err N" on stderr, then "tick 1", "tick 2" ... on
//	                stdout every duration D until SIGTERM
//	http ADDR       print "serving HTTP on ADDR", then serve HTTP on ADDR:
//	                hostname and the TASK_ID variable, then WEB_VERSION when set (after the duration in the
//	                delay query parameter)
//	greet ADDR FILE serve HTTP on ADDR: "task=TASK_ID container=HOSTNAME
//	                says: " and the content of FILE (a secret), read at
//	                each request
//	env             print the environment, uid, cwd, hostname and whether
//	                the root filesystem is writable; exit 0
//	sha256 PATH     print the SHA-256 of a file and run until SIGTERM
//	check PATH      exit 0 if PATH exists, 1 if not (a health check)
//	healthy-for D   create /tmp/healthy, remove it after duration D, run on
//	write PATH TEXT write TEXT to PATH and exit 0 (1, with the error, if
//	                it cannot)
//	stat PATH       print the file's permission bits (octal), uid and gid
//	                and the type of the filesystem it is on; exit 0
//	long N          print one line of N bytes ("x"), then exit 0
//	get URL         GET the URL (5 s timeout), print the body; exit 1 with
//	                the error if it fails
//	resolve NAME    print the name's addresses, sorted, one per line;
//	                exit 1 if it does not resolve
//	read PATH       print a file's content and exit 0 (1 if unreadable)
//	signals         print "waiting for a signal", then, on SIGTERM, SIGINT,
//	                SIGHUP, SIGQUIT, SIGUSR1 or SIGUSR2, print "got NAME"
//	                (SIGUSR1, ...) and exit 0
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: app exit N | sleep | ignore-term | lines N | http ADDR | env")
		os.Exit(2)
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	switch os.Args[1] {
	case "exit":
		code, _ := strconv.Atoi(arg(2))
		fmt.Println("exiting", code)
		os.Exit(code)
	case "sleep":
		fmt.Println("sleeping")
		<-term
		fmt.Println("terminated")
	case "ignore-term":
		fmt.Println("ignoring SIGTERM")
		signal.Ignore(syscall.SIGTERM)
		select {}
	case "lines":
		n, _ := strconv.Atoi(arg(2))
		for i := 1; i <= n; i++ {
			fmt.Println("line", i)
		}
		<-term
	case "talk":
		n, _ := strconv.Atoi(arg(2))
		every, err := time.ParseDuration(arg(3))
		if err != nil || every <= 0 {
			every = time.Second
		}
		for i := 1; i <= n; i++ {
			fmt.Println("out", i)
			fmt.Fprintln(os.Stderr, "err", i)
		}
		tick := time.NewTicker(every)
		for i := 1; ; i++ {
			select {
			case <-tick.C:
				fmt.Println("tick", i)
				continue
			case <-term:
			}
			break
		}
	case "http":
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
				time.Sleep(d) // a slow request, in flight when a stop comes
			}
			if v := os.Getenv("WEB_VERSION"); v != "" {
				fmt.Fprintf(w, "%s %s %s\n", host, os.Getenv("TASK_ID"), v)
				return
			}
			fmt.Fprintf(w, "%s %s\n", host, os.Getenv("TASK_ID"))
		})
		go func() { <-term; os.Exit(0) }()
		fmt.Println("serving HTTP on", arg(2)) // a line for service logs
		if err := http.ListenAndServe(arg(2), nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "greet":
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			greeting, err := os.ReadFile(arg(3))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "task=%s container=%s says: %s\n", os.Getenv("TASK_ID"), host, strings.TrimSpace(string(greeting)))
		})
		go func() { <-term; os.Exit(0) }()
		if err := http.ListenAndServe(arg(2), nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "sha256":
		b, err := os.ReadFile(arg(2))
		if err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Printf("sha256 %x\n", sha256.Sum256(b))
		}
		<-term
	case "check":
		if _, err := os.Stat(arg(2)); err != nil {
			fmt.Println("unhealthy:", err)
			os.Exit(1)
		}
		fmt.Println("healthy")
	case "healthy-for":
		d, _ := time.ParseDuration(arg(2))
		os.WriteFile("/tmp/healthy", []byte("ok"), 0o644)
		fmt.Println("healthy for", d)
		time.AfterFunc(d, func() { os.Remove("/tmp/healthy"); fmt.Println("now unhealthy") })
		<-term
	case "write":
		if err := os.WriteFile(arg(2), []byte(arg(3)), 0o644); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
	case "stat":
		var st syscall.Stat_t
		if err := syscall.Stat(arg(2), &st); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		var fs syscall.Statfs_t
		if err := syscall.Statfs(arg(2), &fs); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fsType := fmt.Sprintf("%#x", fs.Type)
		if fs.Type == 0x01021994 { // TMPFS_MAGIC
			fsType = "tmpfs"
		}
		fmt.Printf("mode=%o uid=%d gid=%d fs=%s\n", st.Mode&0o7777, st.Uid, st.Gid, fsType)
	case "long":
		n, _ := strconv.Atoi(arg(2))
		fmt.Println(strings.Repeat("x", n))
	case "signals":
		names := map[os.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT", syscall.SIGHUP: "SIGHUP",
			syscall.SIGQUIT: "SIGQUIT", syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2"}
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
		fmt.Println("waiting for a signal")
		fmt.Println("got", names[<-sigs])
	case "get":
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(arg(2))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Print(string(b))
	case "resolve":
		addrs, err := net.LookupHost(arg(2))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		sort.Strings(addrs)
		for _, a := range addrs {
			fmt.Println(a)
		}
	case "read":
		b, err := os.ReadFile(arg(2))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Print(string(b))
	case "env":
		for _, e := range os.Environ() {
			fmt.Println(e)
		}
		host, _ := os.Hostname()
		cwd, _ := os.Getwd()
		fmt.Printf("uid=%d cwd=%s hostname=%s\n", os.Getuid(), cwd, host)
		if err := os.WriteFile("/probe", []byte("x"), 0o644); err != nil {
			fmt.Println("rootfs read-only")
		} else {
			fmt.Println("rootfs writable")
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}

func arg(i int) string {
	if len(os.Args) > i {
		return os.Args[i]
	}
	return ""
}
