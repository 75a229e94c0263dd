// A workload for tools/tests/clients_test.py: github.com/grafana/pyroscope-go profiles it and pushes
// to the pyro serve given as the first argument, for the seconds given as the second. Its CPU goes to
// hotGoFunction, tagged vehicle=car through pyroscope.TagWrapper.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/grafana/pyroscope-go"
)

var sink uint64

//go:noinline
func hotGoFunction(until time.Time) {
	for time.Now().Before(until) {
		for i := uint64(0); i < 100000; i++ {
			sink += i * i
		}
	}
}

func main() {
	seconds, _ := strconv.Atoi(os.Args[2])
	profiler, err := pyroscope.Start(pyroscope.Config{
		ApplicationName: "goclient",
		ServerAddress:   os.Args[1],
		Tags:            map[string]string{"region": "eu-north"},
		ProfileTypes:    []pyroscope.ProfileType{pyroscope.ProfileCPU, pyroscope.ProfileAllocSpace, pyroscope.ProfileInuseSpace},
		UploadRate:      5 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pyroscope.Start:", err)
		os.Exit(1)
	}
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	for time.Now().Before(end) {
		pyroscope.TagWrapper(context.Background(), pyroscope.Labels("vehicle", "car"), func(context.Context) {
			hotGoFunction(time.Now().Add(200 * time.Millisecond))
		})
	}
	if err := profiler.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "profiler.Stop:", err)
		os.Exit(1)
	}
}
