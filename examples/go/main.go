// Loads a .woq file, runs woq_matmul on fp32 activations read from a raw
// little-endian file and prints Y as fp32 bit patterns, like
// examples/c/matmul_vectors.c on the same shared vectors (examples/data).
//
//	go run . VECTORS.woq X.f32 [TENSOR]
package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"woq"
)

func run(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: example VECTORS.woq X.f32 [TENSOR]")
	}
	name := "proj.weight"
	if len(args) > 2 {
		name = args[2]
	}
	file, err := woq.OpenFile(args[0])
	if err != nil {
		return err
	}
	defer file.Close()
	ctx, err := woq.NewContext(woq.BackendCPU, 0)
	if err != nil {
		return err
	}
	defer ctx.Close()
	tensor, err := woq.LoadTensor(ctx, file, name)
	if err != nil {
		return err
	}
	defer tensor.Close()
	rows, cols := tensor.Shape()
	raw, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	if len(raw) == 0 || len(raw)%(4*cols) != 0 {
		return fmt.Errorf("%s: %d bytes are not rows of %d fp32 values", args[1], len(raw), cols)
	}
	x := make([]float32, len(raw)/4)
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	m := len(x) / cols
	y, err := tensor.MatMul(x, m)
	if err != nil {
		return err
	}
	infos, err := file.Tensors()
	if err != nil {
		return err
	}
	for _, info := range infos {
		if info.Name == name {
			fmt.Printf("libwoq %s: %s [%d x %d], %d-bit, group %d; X [%d x %d]\n",
				woq.Version(), name, rows, cols, info.Bits, info.GroupSize, m, cols)
		}
	}
	for r := 0; r < m; r++ {
		fmt.Printf("y %d:", r)
		for n := 0; n < rows; n++ {
			fmt.Printf(" %08x", math.Float32bits(y[r*rows+n]))
		}
		fmt.Println()
	}
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
