// go-redis's FailoverClient, default options otherwise (see ../README.md).
// With DNS_SERVER set it is instead a plain client of ADDR (a Consul DNS name)
// resolved through that server: the "discovery by DNS" variant of the benchmark.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

func now() string { return strconv.FormatFloat(float64(time.Now().UnixNano())/1e6, 'f', 1, 64) }

func main() {
	var stop atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() { <-sig; stop.Store(true) }()

	var rdb *redis.Client
	if dns := os.Getenv("DNS_SERVER"); dns != "" {
		resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", dns)
		}}
		dialer := &net.Dialer{Resolver: resolver, Timeout: 5 * time.Second}
		rdb = redis.NewClient(&redis.Options{Addr: os.Getenv("ADDR"), Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		}})
	} else {
		rdb = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       os.Getenv("MASTER"),
			SentinelAddrs:    strings.Split(os.Getenv("SENTINELS"), ","),
			SentinelPassword: os.Getenv("SENTINEL_PASSWORD"),
		})
	}
	prefix := os.Getenv("PREFIX")
	interval := 5 * time.Millisecond
	if v := os.Getenv("INTERVAL_MS"); v != "" {
		ms, _ := strconv.Atoi(v)
		interval = time.Duration(ms) * time.Millisecond
	}
	ctx := context.Background()
	n := 0
	for !stop.Load() {
		n++
		if err := rdb.Set(ctx, fmt.Sprintf("%s:%d", prefix, n), n, 0).Err(); err != nil {
			fmt.Printf("fail %d %s %s\n", n, now(), strings.Join(strings.Fields(err.Error()), " "))
		} else {
			fmt.Printf("ack %d %s\n", n, now())
		}
		time.Sleep(interval)
	}
	fmt.Printf("done %d\n", n)
	_ = rdb.Close()
}
