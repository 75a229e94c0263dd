// goprog writes a CPU profile and a heap profile with Go's runtime/pprof, for the format tests:
//
//	goprog CPU.pb.gz HEAP.pb.gz
//
// The work is a few distinct call paths that take measurable CPU time, and allocations that stay live
// so the heap profile has in-use values too.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

var sink []byte
var kept [][]byte

//go:noinline
func hashLoop(n int) uint64 {
	var h uint64 = 1469598103934665603
	for i := 0; i < n; i++ {
		h ^= uint64(i)
		h *= 1099511628211
	}
	return h
}

//go:noinline
func parseRecords() uint64 { return hashLoop(3000000) }

//go:noinline
func renderPage() uint64 { return hashLoop(2000000) + parseRecords() }

//go:noinline
func allocate(size int, keep bool) {
	b := make([]byte, size)
	sink = b
	if keep {
		kept = append(kept, b)
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: goprog CPU.pb.gz HEAP.pb.gz")
		os.Exit(2)
	}
	runtime.MemProfileRate = 4096
	cpu, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		panic(err)
	}
	var total uint64
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		total += renderPage()
		total += parseRecords()
		allocate(64<<10, false)
		allocate(8<<10, len(kept) < 200)
	}
	pprof.StopCPUProfile()
	cpu.Close()
	runtime.GC()
	heap, err := os.Create(os.Args[2])
	if err != nil {
		panic(err)
	}
	if err := pprof.WriteHeapProfile(heap); err != nil {
		panic(err)
	}
	heap.Close()
	fmt.Println(total%7, len(kept))
}
