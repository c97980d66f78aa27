// ssebench holds N concurrent Server-Sent-Events streams against one URL and records,
// for every stream, the time to the response headers, the time to the first SSE event
// (time to first token), the total time, the number of events, and whether the stream
// ended properly with `data: [DONE]`.
//
// Streams are opened at an even pace over -ramp (so the server is not hit by a SYN
// burst) and each runs to its end, so all N are open at once once the ramp is over
// (when a stream lasts longer than the ramp). One JSON line per stream goes to -out;
// a JSON summary goes to stdout. Loopback only: it refuses any other host.
//
//	ssebench -url http://127.0.0.1:4000/v1/chat/completions -H 'Authorization: Bearer ...' \
//	         -body body.json -streams 1000 -ramp 5s -out streams.jsonl
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// Stream is what one stream did; times are milliseconds from its own start.
type Stream struct {
	Index      int     `json:"index"`
	StartMs    float64 `json:"start_ms"` // from the run's start
	Status     int     `json:"status"`
	HeadersMs  float64 `json:"headers_ms"`
	FirstMs    float64 `json:"first_event_ms"`
	TotalMs    float64 `json:"total_ms"`
	Events     int     `json:"events"`
	Done       bool    `json:"done"`
	Error      string  `json:"error,omitempty"`
	Concurrent int64   `json:"concurrent_at_first_event"`
}

type Summary struct {
	Streams         int            `json:"streams"`
	OK              int            `json:"ok"`
	Errors          int            `json:"errors"`
	ErrorKinds      map[string]int `json:"error_kinds"`
	MaxConcurrent   int64          `json:"max_concurrent"`
	HeadersP50Ms    float64        `json:"headers_p50_ms"`
	HeadersP99Ms    float64        `json:"headers_p99_ms"`
	FirstP50Ms      float64        `json:"first_event_p50_ms"`
	FirstP90Ms      float64        `json:"first_event_p90_ms"`
	FirstP99Ms      float64        `json:"first_event_p99_ms"`
	FirstMaxMs      float64        `json:"first_event_max_ms"`
	TotalP50Ms      float64        `json:"total_p50_ms"`
	TotalMaxMs      float64        `json:"total_max_ms"`
	EventsPerStream float64        `json:"events_per_stream_median"`
	WallSeconds     float64        `json:"wall_seconds"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	rank := int(float64(len(sorted))*q/100 + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

func main() {
	target := flag.String("url", "", "URL to POST to")
	bodyFile := flag.String("body", "", "file with the JSON request body")
	streams := flag.Int("streams", 100, "streams to open")
	ramp := flag.Duration("ramp", 2*time.Second, "open the streams evenly over this long")
	timeout := flag.Duration("timeout", 120*time.Second, "give up on one stream after this long")
	out := flag.String("out", "", "write one JSON line per stream here")
	var headers headerFlags
	flag.Var(&headers, "H", "request header 'Name: value' (repeatable)")
	flag.Parse()

	u, err := url.Parse(*target)
	if err != nil || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost" && u.Hostname() != "::1") {
		fmt.Fprintln(os.Stderr, "ssebench: -url must be an http URL on loopback")
		os.Exit(2)
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ssebench: -body:", err)
		os.Exit(2)
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        *streams,
		MaxIdleConnsPerHost: *streams,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	client := &http.Client{Transport: transport, Timeout: *timeout}

	results := make([]Stream, *streams)
	var active, maxActive int64
	var wg sync.WaitGroup
	start := time.Now()
	var gap time.Duration
	if *streams > 1 {
		gap = *ramp / time.Duration(*streams-1)
	}
	for i := 0; i < *streams; i++ {
		due := start.Add(time.Duration(i) * gap)
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := &results[i]
			r.Index = i
			began := time.Now()
			r.StartMs = ms(began.Sub(start))
			defer func() { r.TotalMs = ms(time.Since(began)) }()
			req, _ := http.NewRequest("POST", *target, bytes.NewReader(body))
			for _, h := range headers {
				name, value, _ := strings.Cut(h, ":")
				req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
			}
			req.Header.Set("Accept", "text/event-stream")
			resp, err := client.Do(req)
			if err != nil {
				r.Error = "request: " + classify(err)
				return
			}
			defer resp.Body.Close()
			r.HeadersMs = ms(time.Since(began))
			r.Status = resp.StatusCode
			if resp.StatusCode != 200 {
				r.Error = fmt.Sprintf("status %d", resp.StatusCode)
				return
			}
			now := atomic.AddInt64(&active, 1)
			defer atomic.AddInt64(&active, -1)
			for {
				old := atomic.LoadInt64(&maxActive)
				if now <= old || atomic.CompareAndSwapInt64(&maxActive, old, now) {
					break
				}
			}
			reader := bufio.NewReaderSize(resp.Body, 64*1024)
			for {
				line, err := reader.ReadString('\n')
				if strings.HasPrefix(line, "data:") {
					if r.Events == 0 {
						r.FirstMs = ms(time.Since(began))
						r.Concurrent = atomic.LoadInt64(&active)
					}
					r.Events++
					payload := strings.TrimSpace(strings.TrimPrefix(line, "data:"))
					if payload == "[DONE]" {
						r.Done = true
					} else if strings.Contains(payload, `"error"`) && strings.HasPrefix(payload, `{"error"`) {
						r.Error = "error event"
					}
				}
				if err != nil {
					if !r.Done && r.Error == "" {
						r.Error = "stream cut: " + classify(err)
					}
					return
				}
			}
		}(i)
	}
	wg.Wait()
	wall := time.Since(start)

	if *out != "" {
		f, err := os.Create(*out)
		if err == nil {
			enc := json.NewEncoder(f)
			for _, r := range results {
				enc.Encode(r)
			}
			f.Close()
		}
	}
	s := Summary{Streams: *streams, ErrorKinds: map[string]int{}, MaxConcurrent: maxActive,
		WallSeconds: wall.Seconds()}
	var hdr, first, total, events []float64
	for _, r := range results {
		if r.Error != "" || !r.Done {
			s.Errors++
			kind := r.Error
			if kind == "" {
				kind = "no [DONE]"
			}
			s.ErrorKinds[kind]++
			continue
		}
		s.OK++
		hdr = append(hdr, r.HeadersMs)
		first = append(first, r.FirstMs)
		total = append(total, r.TotalMs)
		events = append(events, float64(r.Events))
	}
	for _, xs := range [][]float64{hdr, first, total, events} {
		sort.Float64s(xs)
	}
	s.HeadersP50Ms, s.HeadersP99Ms = percentile(hdr, 50), percentile(hdr, 99)
	s.FirstP50Ms, s.FirstP90Ms, s.FirstP99Ms = percentile(first, 50), percentile(first, 90), percentile(first, 99)
	s.FirstMaxMs = percentile(first, 100)
	s.TotalP50Ms, s.TotalMaxMs = percentile(total, 50), percentile(total, 100)
	s.EventsPerStream = percentile(events, 50)
	json.NewEncoder(os.Stdout).Encode(s)
}

// classify shortens transport errors to a stable kind for the summary.
func classify(err error) string {
	msg := err.Error()
	for _, kind := range []string{"connection reset", "connection refused", "timeout", "EOF", "broken pipe", "too many open files"} {
		if strings.Contains(msg, kind) {
			return kind
		}
	}
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return msg
}
