package woq

import (
	"errors"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func randomMatrix(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = scale * (2*rng.Float32() - 1)
	}
	return v
}

// writeModel quantizes random weights to a .woq file and returns the path,
// the source weights and the bias.
func writeModel(t *testing.T, rows, cols int) (string, []float32, []float32) {
	t.Helper()
	rng := rand.New(rand.NewSource(7))
	w := randomMatrix(rng, rows*cols, 0.05)
	bias := randomMatrix(rng, rows, 0.1)
	q, err := Quantize(w, rows, cols, DefaultQuantOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	path := filepath.Join(t.TempDir(), "m.woq")
	wr, err := CreateWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer wr.Close()
	if err := wr.Add("proj.weight", q, bias); err != nil {
		t.Fatal(err)
	}
	if err := wr.SetMetadata("model.name", "go-test"); err != nil {
		t.Fatal(err)
	}
	if err := wr.Finish(); err != nil {
		t.Fatal(err)
	}
	return path, w, bias
}

// openModel opens path and loads its tensor into a new context; the caller
// closes all three.
func openModel(t *testing.T, path string, threads int) (*File, *Context, *Tensor) {
	t.Helper()
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := NewContext(BackendCPU, threads)
	if err != nil {
		t.Fatal(err)
	}
	tensor, err := LoadTensor(ctx, f, "proj.weight")
	if err != nil {
		t.Fatal(err)
	}
	return f, ctx, tensor
}

func TestRoundTripMatchesFloat64(t *testing.T) {
	const rows, cols, m = 96, 256, 3
	path, w, bias := writeModel(t, rows, cols)
	f, ctx, tensor := openModel(t, path, 2)
	defer f.Close()
	defer ctx.Close()
	defer tensor.Close()
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	infos, err := f.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Name != "proj.weight" || infos[0].Rows != rows || infos[0].Cols != cols ||
		infos[0].Bits != 4 || infos[0].GroupSize != 128 || !infos[0].HasBias {
		t.Fatalf("tensor info %+v", infos)
	}
	if name, err := f.MetadataString("model.name"); err != nil || name != "go-test" {
		t.Fatalf("metadata %q, %v", name, err)
	}
	what, err := tensor.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	// The dequantized weights are close to the source (4-bit grid, g128).
	var e2, w2 float64
	for i := range w {
		d := float64(what[i] - w[i])
		e2 += d * d
		w2 += float64(w[i]) * float64(w[i])
	}
	if rel := math.Sqrt(e2 / w2); rel > 0.15 || rel == 0 {
		t.Fatalf("relative weight error %g", rel)
	}
	x := randomMatrix(rand.New(rand.NewSource(9)), m*cols, 1)
	y, err := tensor.MatMul(x, m)
	if err != nil {
		t.Fatal(err)
	}
	for r := 0; r < m; r++ {
		for n := 0; n < rows; n++ {
			ref := float64(bias[n])
			var mag float64
			for k := 0; k < cols; k++ {
				p := float64(x[r*cols+k]) * float64(what[n*cols+k])
				ref += p
				mag += math.Abs(p)
			}
			if got := float64(y[r*rows+n]); math.Abs(got-ref) > 1e-5*(mag+math.Abs(float64(bias[n]))) {
				t.Fatalf("y[%d][%d] = %g, float64 reference %g", r, n, got, ref)
			}
		}
	}
}

func statusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return -1
}

func TestErrorsCarryStatusAndMessage(t *testing.T) {
	_, err := OpenFile("/nonexistent/dir/model.woq")
	if statusOf(err) != ErrIO || !strings.Contains(err.Error(), "/nonexistent/dir/model.woq") {
		t.Fatalf("open of a missing file: %v", err)
	}
	_, err = Quantize(make([]float32, 10), 2, 4, DefaultQuantOptions())
	if statusOf(err) != ErrShape {
		t.Fatalf("wrong weight count: %v", err)
	}
	_, err = Quantize(make([]float32, 2*100), 2, 100, DefaultQuantOptions())
	if statusOf(err) != ErrShape || !strings.Contains(err.Error(), "group") {
		t.Fatalf("cols not a multiple of the group: %v", err)
	}
	path := filepath.Join(t.TempDir(), "bad.woq")
	if err := os.WriteFile(path, []byte("not a woq file at all, just some text"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(path); statusOf(err) != ErrFormat {
		t.Fatalf("garbage file: %v", err)
	}
	if _, err := OpenFile("a\x00b"); statusOf(err) != ErrInvalidArgument {
		t.Fatalf("NUL in path: %v", err)
	}
}

func TestMisuseIsAnErrorNotACrash(t *testing.T) {
	path, _, _ := writeModel(t, 32, 128)
	f, ctx, tensor := openModel(t, path, 1)
	if _, err := LoadTensor(ctx, f, "missing"); statusOf(err) != ErrNotFound || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("unknown tensor: %v", err)
	}
	if _, err := tensor.MatMul(make([]float32, 127), 1); statusOf(err) != ErrShape {
		t.Fatalf("short x: %v", err)
	}
	if err := tensor.MatMulInto(make([]float32, 256), 2, make([]float32, 63)); statusOf(err) != ErrShape {
		t.Fatalf("short y: %v", err)
	}
	if err := tensor.MatMul16(make([]uint16, 128), F32, 1, make([]float32, 32)); statusOf(err) != ErrInvalidArgument {
		t.Fatalf("MatMul16 with F32: %v", err)
	}
	f.Close()
	f.Close() // twice is fine
	if err := f.Verify(); statusOf(err) != ErrInvalidArgument || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("use after close: %v", err)
	}
	// The tensor outlives its file; closing the context first is deferred
	// until the tensor goes, and the tensor then reports a closed context.
	if _, err := tensor.MatMul(make([]float32, 128), 1); err != nil {
		t.Fatal(err)
	}
	ctx.Close()
	if _, err := tensor.MatMul(make([]float32, 128), 1); statusOf(err) != ErrInvalidArgument || !strings.Contains(err.Error(), "context is closed") {
		t.Fatalf("matmul on a closed context: %v", err)
	}
	tensor.Close()

	// Nil objects give errors, not panics.
	var nilCtx *Context
	var nilFile *File
	var nilTensor *Tensor
	if _, err := LoadTensor(nilCtx, nilFile, "w"); statusOf(err) != ErrInvalidArgument {
		t.Fatalf("nil context: %v", err)
	}
	if _, err := nilTensor.MatMul(make([]float32, 4), 1); statusOf(err) != ErrInvalidArgument {
		t.Fatalf("nil tensor: %v", err)
	}
	if err := nilFile.Verify(); statusOf(err) != ErrInvalidArgument {
		t.Fatalf("nil file: %v", err)
	}
	nilCtx.Close()
	nilTensor.Close()
}

func TestConcurrentMatMulOnOneTensor(t *testing.T) {
	const rows, cols = 64, 256
	path, _, _ := writeModel(t, rows, cols)
	f, ctx, tensor := openModel(t, path, 2)
	defer f.Close()
	defer ctx.Close()
	defer tensor.Close()
	x := randomMatrix(rand.New(rand.NewSource(3)), cols, 1)
	want, err := tensor.MatMul(x, 1)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			y := make([]float32, rows)
			for i := 0; i < 200; i++ {
				if err := tensor.MatMulInto(x, 1, y); err != nil {
					errs <- err
					return
				}
				for n := range y {
					if y[n] != want[n] {
						errs <- errors.New("results differ between goroutines")
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCalibratedMethods(t *testing.T) {
	const rows, cols, s = 32, 128, 256
	rng := rand.New(rand.NewSource(11))
	w := randomMatrix(rng, rows*cols, 0.05)
	x := randomMatrix(rng, s*cols, 1)
	for c := 0; c < cols; c += 9 { // channels with large activations
		for r := 0; r < s; r++ {
			x[r*cols+c] *= 20
		}
	}
	outputError := func(q *QMatrix) float64 {
		ctx, err := NewContext(BackendCPU, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer ctx.Close()
		tensor, err := TensorFromQMatrix(ctx, q, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tensor.Close()
		y, err := tensor.MatMul(x, s)
		if err != nil {
			t.Fatal(err)
		}
		var e2, r2 float64
		for r := 0; r < s; r++ {
			for n := 0; n < rows; n++ {
				ref := 0.0
				for k := 0; k < cols; k++ {
					ref += float64(x[r*cols+k]) * float64(w[n*cols+k])
				}
				d := float64(y[r*rows+n]) - ref
				e2 += d * d
				r2 += ref * ref
			}
		}
		return e2 / r2
	}
	rtn, err := Quantize(w, rows, cols, DefaultQuantOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer rtn.Close()
	base := outputError(rtn)
	for _, method := range []int{3, 4} {
		o := DefaultQuantOptions()
		o.Method, o.Calibration = method, x
		q, err := Quantize(w, rows, cols, o)
		if err != nil {
			t.Fatal(err)
		}
		if e := outputError(q); e >= base {
			t.Fatalf("method %d: output error %g not below RTN's %g", method, e, base)
		}
		scales, err := q.InputScales()
		if err != nil || (method == 3) != (scales != nil) {
			t.Fatalf("method %d: input scales %v, %v", method, len(scales), err)
		}
		q.Close()
	}
	// GPTQ with act-order, static groups and groups in that order (stored
	// with an input permutation): better than RTN, and MatMul agrees with
	// float64 on the tensor's own dequantized weights.
	for _, groups := range []bool{false, true} {
		o := DefaultQuantOptions()
		o.Method, o.Calibration, o.ActOrder, o.ActOrderGroups = 4, x, true, groups
		q, err := Quantize(w, rows, cols, o)
		if err != nil {
			t.Fatal(err)
		}
		if e := outputError(q); e >= base {
			t.Fatalf("act-order (groups %v): output error %g not below RTN's %g", groups, e, base)
		}
		ctx, err := NewContext(BackendCPU, 1)
		if err != nil {
			t.Fatal(err)
		}
		tensor, err := TensorFromQMatrix(ctx, q, nil)
		if err != nil {
			t.Fatal(err)
		}
		wHat, err := tensor.Dequantize()
		if err != nil {
			t.Fatal(err)
		}
		y, err := tensor.MatMul(x[:cols], 1)
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < rows; n++ {
			ref, mag := 0.0, 0.0
			for k := 0; k < cols; k++ {
				p := float64(x[k]) * float64(wHat[n*cols+k])
				ref, mag = ref+p, mag+math.Abs(p)
			}
			if math.Abs(float64(y[n])-ref) > 1e-5*mag {
				t.Fatalf("act-order (groups %v): y[%d] = %g, float64 on the dequantized weights %g", groups, n, y[n], ref)
			}
		}
		path := filepath.Join(t.TempDir(), "act-order.woq")
		wr, err := CreateWriter(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := wr.Add("proj.weight", q, nil); err != nil {
			t.Fatal(err)
		}
		if err := wr.Finish(); err != nil {
			t.Fatal(err)
		}
		wr.Close()
		f, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if infos, err := f.Tensors(); err != nil || infos[0].HasInputPermutation != groups || infos[0].HasInputScales {
			t.Fatalf("act-order (groups %v): stored tensor %+v, %v", groups, infos, err)
		}
		f.Close()
		tensor.Close()
		ctx.Close()
		q.Close()
	}
	o := DefaultQuantOptions()
	o.Method, o.Calibration, o.ActOrderGroups = 4, x, true
	if _, err := Quantize(w, rows, cols, o); statusOf(err) != ErrInvalidArgument || !strings.Contains(err.Error(), "needs ActOrder") {
		t.Fatalf("ActOrderGroups without ActOrder: %v", err)
	}
	o = DefaultQuantOptions()
	o.Method = 4
	if _, err := Quantize(w, rows, cols, o); statusOf(err) != ErrInvalidArgument || !strings.Contains(err.Error(), "calibration") {
		t.Fatalf("GPTQ without calibration: %v", err)
	}
}

func TestABIMatches(t *testing.T) {
	if err := CheckABI(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(Version(), "1.") {
		t.Fatalf("version %q", Version())
	}
	ctx, err := NewContext(BackendCPUReference, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	if k, err := ctx.Kernel(); err != nil || k != "reference" {
		t.Fatalf("kernel %q, %v", k, err)
	}
	if err := ctx.Synchronize(); err != nil { // nothing queued on CPU contexts
		t.Fatal(err)
	}
	if inUse, peak, err := ctx.Memory(); err != nil || inUse != 0 || peak != 0 {
		t.Fatalf("new context holds %d (peak %d), %v", inUse, peak, err)
	}
	w := make([]float32, 8*64)
	for i := range w {
		w[i] = float32(math.Sin(float64(i)))
	}
	q, err := Quantize(w, 8, 64, QuantOptions{Bits: 4, GroupSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	tensor, err := TensorFromQMatrix(ctx, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	const want = 8 * (8*4 + 2*3) // canonical: per row 8 code words, 2 groups of fp16 scale + u8 zero-point
	if inUse, _, err := ctx.Memory(); err != nil || inUse != want {
		t.Fatalf("with a tensor: %d bytes, want %d, %v", inUse, want, err)
	}
	tensor.Close()
	if inUse, peak, err := ctx.Memory(); err != nil || inUse != 0 || peak != want {
		t.Fatalf("after Close: %d bytes (peak %d), want 0 (%d), %v", inUse, peak, want, err)
	}
}

// A .woq image in memory opens as the file does; libwoq copies it, so the
// slice may be overwritten at once, and tensors outlive the file.
func TestInMemoryImageOpensAsTheFileDoes(t *testing.T) {
	path, _, _ := writeModel(t, 32, 128)
	f, ctx, tensor := openModel(t, path, 1)
	want, err := tensor.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	tensor.Close()
	f.Close()
	defer ctx.Close()

	image, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mf, err := OpenFileBytes(image)
	if err != nil {
		t.Fatal(err)
	}
	for i := range image {
		image[i] = 0xA5
	}
	if err := mf.Verify(); err != nil {
		t.Fatalf("verify after the caller's bytes were overwritten: %v", err)
	}
	if name, err := mf.MetadataString("model.name"); err != nil || name != "go-test" {
		t.Fatalf("metadata from memory: %q, %v", name, err)
	}
	mt, err := LoadTensor(ctx, mf, "proj.weight")
	if err != nil {
		t.Fatal(err)
	}
	defer mt.Close()
	mf.Close()
	got, err := mt.Dequantize()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d weights from memory, %d from the path", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("weight %d: %v from memory, %v from the path", i, got[i], want[i])
		}
	}

	if _, err := OpenFileBytes(nil); statusOf(err) != ErrFormat || !strings.Contains(err.Error(), "in-memory image is 0 bytes") {
		t.Fatalf("empty image: %v", err)
	}
	if _, err := OpenFileBytes(image[:100]); statusOf(err) != ErrFormat {
		t.Fatalf("garbage image: %v", err)
	}
}

// A GPTQ checkpoint (made by tests/golden/make_checkpoints.py; ctest names it
// in WOQ_TEST_CHECKPOINT) converts to a .woq file.
func TestImportCheckpoint(t *testing.T) {
	checkpoint := os.Getenv("WOQ_TEST_CHECKPOINT")
	if checkpoint == "" {
		t.Skip("WOQ_TEST_CHECKPOINT is not set; ctest sets it")
	}
	output := filepath.Join(t.TempDir(), "imported.woq")
	report, err := Import(checkpoint, output, "", false)
	if err != nil || !strings.Contains(report, "format gptq_v2") || !strings.Contains(report, "2 layers converted") {
		t.Fatalf("import: %q, %v", report, err)
	}
	f, err := OpenFile(output)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	infos, err := f.Tensors()
	if err != nil || len(infos) != 2 || infos[1].Name != "model.layers.0.self_attn.q_proj.weight" || infos[1].Rows != 64 ||
		infos[1].Cols != 128 || !infos[1].HasBias {
		t.Fatalf("imported tensors %+v, %v", infos, err)
	}
	if _, err := Import("/nonexistent/model.safetensors", output, "auto", false); statusOf(err) != ErrIO ||
		!strings.Contains(err.Error(), "/nonexistent/model.safetensors") {
		t.Fatalf("missing checkpoint: %v", err)
	}
	if _, err := Import(checkpoint, output, "nonsense", false); statusOf(err) != ErrInvalidArgument {
		t.Fatalf("unknown format: %v", err)
	}
}
