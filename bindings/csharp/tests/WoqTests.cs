// Tests of the C# bindings against this build's libwoq.so; prints
// "N passed, N failed" and exits non-zero on any failure.
using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using Woq;
using Woq.Native;

static class WoqTests {
  static int passed, failed;

  static void Test(string name, Action body) {
    try {
      body();
      ++passed;
      Console.WriteLine("ok   " + name);
    } catch (Exception e) {
      ++failed;
      Console.WriteLine("FAIL " + name + ": " + e);
    }
  }

  static void Expect(bool condition, string what) {
    if (!condition) throw new Exception("expected " + what);
  }

  static void ExpectThrows<E>(Action body, Func<E, bool> check, string what) where E : Exception {
    try {
      body();
    } catch (E e) {
      Expect(check(e), what + " (got: " + e.Message + ")");
      return;
    }
    throw new Exception("expected " + typeof(E).Name + ": " + what);
  }

  static float[] Random(Random rng, long n, float scale) {
    var v = new float[n];
    for (long i = 0; i < n; ++i) v[i] = scale * (float)(2 * rng.NextDouble() - 1);
    return v;
  }

  static string tempDir;

  // Quantizes random weights to a .woq file: path, weights, bias.
  static (string, float[], float[]) WriteModel(string file, int rows, int cols) {
    var rng = new Random(7);
    float[] w = Random(rng, (long)rows * cols, 0.05f), bias = Random(rng, rows, 0.1f);
    string path = Path.Combine(tempDir, file);
    using (var q = QMatrix.Quantize(w, rows, cols))
    using (var writer = Writer.Create(path)) {
      Expect(q.Shape.Rows == rows && q.Shape.Cols == cols, "qmatrix shape");
      Expect(q.Stats.RelFrobeniusError > 0 && q.Stats.RelFrobeniusError < 0.15, "4-bit weight error in (0, 0.15)");
      writer.Add("proj.weight", q, bias);
      writer.SetMetadata("model.name", "csharp-test");
      writer.SetMetadata("model.layers", 1L);
      writer.Finish();
    }
    return (path, w, bias);
  }

  static void RoundTrip() {
    const int rows = 96, cols = 256, m = 3;
    var model = WriteModel("rt.woq", rows, cols);
    string path = model.Item1;
    float[] bias = model.Item3;
    using (var file = WoqFile.Open(path))
    using (var ctx = Context.Create(Backend.Cpu, 2)) {
      file.Verify();
      TensorInfo[] infos = file.Tensors;
      Expect(infos.Length == 1 && infos[0].Name == "proj.weight" && infos[0].Rows == rows && infos[0].Cols == cols &&
             infos[0].Bits == 4 && infos[0].GroupSize == 128 && infos[0].HasBias, "tensor info");
      Expect(file.MetadataString("model.name") == "csharp-test", "metadata string");
      using (var t = Tensor.Load(ctx, file, "proj.weight")) {
        float[] what = t.Dequantize();
        float[] x = Random(new Random(9), m * cols, 1);
        float[] y = t.MatMul(x, m);
        for (int r = 0; r < m; ++r)
          for (int n = 0; n < rows; ++n) {
            double reference = bias[n], magnitude = Math.Abs(bias[n]);
            for (int k = 0; k < cols; ++k) {
              double p = (double)x[r * cols + k] * what[n * cols + k];
              reference += p;
              magnitude += Math.Abs(p);
            }
            Expect(Math.Abs(y[r * rows + n] - reference) <= 1e-5 * magnitude,
                   $"y[{r}][{n}] = {y[r * rows + n]} within 1e-5 of the float64 reference {reference}");
          }
      }
    }
  }

  static void Bf16Activations() {
    const int rows = 32, cols = 128;
    string path = WriteModel("bf16.woq", rows, cols).Item1;
    using (var file = WoqFile.Open(path))
    using (var ctx = Context.Create())
    using (var t = Tensor.Load(ctx, file, "proj.weight")) {
      float[] x = Random(new Random(5), cols, 1);
      var xb = new ushort[cols];
      for (int k = 0; k < cols; ++k) {
        x[k] = BitConverter.ToSingle(BitConverter.GetBytes(BitConverter.ToInt32(BitConverter.GetBytes(x[k]), 0) & ~0xffff), 0);
        xb[k] = (ushort)(BitConverter.ToInt32(BitConverter.GetBytes(x[k]), 0) >> 16);
      }
      float[] y32 = t.MatMul(x, 1), y16 = new float[rows];
      t.MatMul(xb, DType.BF16, 1, y16);
      for (int n = 0; n < rows; ++n)
        Expect(Math.Abs(y16[n] - y32[n]) <= 1e-5 * (1 + Math.Abs(y32[n])), "bf16 activations equal their fp32 values");
    }
  }

  static void Errors() {
    ExpectThrows<WoqException>(() => WoqFile.Open("/nonexistent/dir/model.woq"),
        e => e.Status == woq_status.WOQ_ERR_IO && e.Message.Contains("/nonexistent/dir/model.woq"), "IO error naming the path");
    ExpectThrows<WoqException>(() => QMatrix.Quantize(new float[10], 2, 4),
        e => e.Status == woq_status.WOQ_ERR_SHAPE, "shape error for a wrong weight count");
    ExpectThrows<WoqException>(() => QMatrix.Quantize(new float[200], 2, 100),
        e => e.Status == woq_status.WOQ_ERR_SHAPE && e.Message.Contains("group"), "cols not a multiple of the group");
    string bad = Path.Combine(tempDir, "bad.woq");
    File.WriteAllText(bad, "not a woq file at all, just some text");
    ExpectThrows<WoqException>(() => WoqFile.Open(bad), e => e.Status == woq_status.WOQ_ERR_FORMAT, "format error");
    ExpectThrows<WoqException>(() => WoqFile.Open("a\0b"), e => e.Status == woq_status.WOQ_ERR_INVALID_ARGUMENT, "NUL in a path");
    var options = new QuantOptions { Bits = 9 };
    ExpectThrows<WoqException>(() => QMatrix.Quantize(new float[256], 1, 256, options),
        e => e.Status == woq_status.WOQ_ERR_INVALID_ARGUMENT && e.Message.Contains("bits"), "9 bits refused");
  }

  static void Misuse() {
    string path = WriteModel("misuse.woq", 32, 128).Item1;
    var file = WoqFile.Open(path);
    var ctx = Context.Create(Backend.Cpu, 1);
    var t = Tensor.Load(ctx, file, "proj.weight");
    ExpectThrows<WoqException>(() => Tensor.Load(ctx, file, "missing"),
        e => e.Status == woq_status.WOQ_ERR_NOT_FOUND && e.Message.Contains("missing"), "unknown tensor named");
    ExpectThrows<WoqException>(() => t.MatMul(new float[127], 1), e => e.Status == woq_status.WOQ_ERR_SHAPE, "short x");
    ExpectThrows<WoqException>(() => t.MatMul(new float[256], 2, new float[63]), e => e.Status == woq_status.WOQ_ERR_SHAPE, "short y");
    ExpectThrows<WoqException>(() => t.MatMul(new ushort[128], DType.F32, 1, new float[32]),
        e => e.Status == woq_status.WOQ_ERR_INVALID_ARGUMENT, "ushort activations as F32");
    ExpectThrows<ArgumentNullException>(() => t.MatMul(null, 1, new float[32]), e => true, "null x");
    file.Dispose();
    file.Dispose();  // twice is fine
    ExpectThrows<ObjectDisposedException>(() => file.Verify(), e => e.Message.Contains("disposed"), "use after dispose");
    t.MatMul(new float[128], 1);  // a tensor outlives its file
    ctx.Dispose();                // deferred until the tensor goes
    ExpectThrows<ObjectDisposedException>(() => t.MatMul(new float[128], 1), e => e.Message.Contains("Context"), "closed context");
    t.Dispose();
  }

  // A .woq image in a byte[] opens as the file does, is read in place, and
  // tensors loaded from it outlive it.
  static void InMemory() {
    string path = WriteModel("memory.woq", 32, 128).Item1;
    byte[] image = File.ReadAllBytes(path);
    float[] fromPath;
    using (var file = WoqFile.Open(path))
    using (var ctx = Context.Create(Backend.Cpu, 1))
    using (var t = Tensor.Load(ctx, file, "proj.weight")) fromPath = t.Dequantize();
    using (var ctx = Context.Create(Backend.Cpu, 1)) {
      Tensor t;
      using (var file = WoqFile.FromBytes(image)) {
        file.Verify();
        Expect(file.Tensors.Length == 1 && file.Tensors[0].Name == "proj.weight", "tensor info from memory");
        Expect(file.MetadataString("model.name") == "csharp-test", "metadata from memory");
        t = Tensor.Load(ctx, file, "proj.weight");
        image[256] ^= 0x40;  // the first chunk: read in place, so it no longer matches its checksum
        ExpectThrows<WoqException>(() => file.Verify(), e => e.Status == woq_status.WOQ_ERR_CHECKSUM, "changed image");
        image[256] ^= 0x40;
      }
      Array.Clear(image, 0, image.Length);  // unpinned: the tensor does not need it
      using (t) {
        float[] fromMemory = t.Dequantize();
        Expect(fromMemory.Length == fromPath.Length, "same size");
        for (int i = 0; i < fromPath.Length; ++i) Expect(fromMemory[i] == fromPath[i], "same weights as from the path");
      }
    }
    // A .woq file in the middle of a larger buffer, as in an engine's pack file.
    byte[] pack = new byte[image.Length + 100];
    byte[] fresh = File.ReadAllBytes(path);
    Array.Copy(fresh, 0, pack, 37, fresh.Length);
    using (var file = WoqFile.FromBytes(pack, 37, fresh.Length)) {
      file.Verify();
      Expect(file.MetadataString("model.name") == "csharp-test", "metadata from a slice of a pack");
    }
    ExpectThrows<WoqException>(() => WoqFile.FromBytes(pack, 101, fresh.Length),
        e => e.Status == woq_status.WOQ_ERR_SHAPE && e.Message.Contains("do not lie in"), "slice past the end");
    ExpectThrows<WoqException>(() => WoqFile.FromBytes(pack, 36, fresh.Length),
        e => e.Status == woq_status.WOQ_ERR_FORMAT && e.Message.Contains("in-memory image"), "slice at the wrong place");
    ExpectThrows<ArgumentNullException>(() => WoqFile.FromBytes(null), e => true, "null image");
    ExpectThrows<WoqException>(() => WoqFile.FromBytes(new byte[10]),
        e => e.Status == woq_status.WOQ_ERR_FORMAT && e.Message.Contains("in-memory image"), "short image");
    byte[] valid = File.ReadAllBytes(path);
    for (int i = 0; i < 20; ++i) WoqFile.FromBytes(valid);  // never disposed: finalizers close and unpin
    GC.Collect();
    GC.WaitForPendingFinalizers();
  }

  // Handles dropped without Dispose are freed by finalizers in any order.
  static void Finalizers() {
    string path = WriteModel("gc.woq", 32, 128).Item1;
    for (int i = 0; i < 50; ++i) {
      var ctx = Context.Create(Backend.Cpu, 1);
      var file = WoqFile.Open(path);
      var t = Tensor.Load(ctx, file, "proj.weight");
      t.MatMul(new float[128], 1);
    }
    GC.Collect();
    GC.WaitForPendingFinalizers();
    GC.Collect();
    GC.WaitForPendingFinalizers();
  }

  static void Threads() {
    const int rows = 64, cols = 256;
    string path = WriteModel("threads.woq", rows, cols).Item1;
    using (var file = WoqFile.Open(path))
    using (var ctx = Context.Create(Backend.Cpu, 2))
    using (var t = Tensor.Load(ctx, file, "proj.weight")) {
      float[] x = Random(new Random(3), cols, 1), want = t.MatMul(x, 1);
      var errors = new List<string>();
      var threads = new Thread[8];
      for (int i = 0; i < threads.Length; ++i) {
        threads[i] = new Thread(() => {
          var y = new float[rows];
          for (int iter = 0; iter < 200; ++iter) {
            t.MatMul(x, 1, y);
            for (int n = 0; n < rows; ++n)
              if (y[n] != want[n]) { lock (errors) errors.Add("results differ between threads"); return; }
          }
        });
        threads[i].Start();
      }
      foreach (var th in threads) th.Join();
      Expect(errors.Count == 0, "identical results on 8 threads");
    }
  }

  static double OutputError(QMatrix q, float[] w, float[] x, int rows, int cols, int s) {
    using (var ctx = Context.Create(Backend.Cpu, 1))
    using (var t = Tensor.FromQMatrix(ctx, q)) {
      float[] y = t.MatMul(x, s);
      double e2 = 0, r2 = 0;
      for (int r = 0; r < s; ++r)
        for (int n = 0; n < rows; ++n) {
          double reference = 0;
          for (int k = 0; k < cols; ++k) reference += (double)x[r * cols + k] * w[n * cols + k];
          e2 += (y[r * rows + n] - reference) * (y[r * rows + n] - reference);
          r2 += reference * reference;
        }
      return e2 / r2;
    }
  }

  static void Calibrated() {
    const int rows = 32, cols = 128, s = 256;
    var rng = new Random(11);
    float[] w = Random(rng, rows * cols, 0.05f), x = Random(rng, s * cols, 1);
    for (int c = 0; c < cols; c += 9)
      for (int r = 0; r < s; ++r) x[r * cols + c] *= 20;  // channels with large activations
    double baseline;
    using (var rtn = QMatrix.Quantize(w, rows, cols)) baseline = OutputError(rtn, w, x, rows, cols, s);
    foreach (var method in new[] { woq_method.WOQ_METHOD_AWQ, woq_method.WOQ_METHOD_GPTQ }) {
      var options = new QuantOptions { Method = method, Calibration = x };
      using (var q = QMatrix.Quantize(w, rows, cols, options)) {
        double e = OutputError(q, w, x, rows, cols, s);
        Expect(e < baseline, $"{method}: output error {e} below RTN's {baseline}");
        Expect((method == woq_method.WOQ_METHOD_AWQ) == (q.InputScales != null), $"{method}: input scales");
      }
    }
    // Act-order with static groups, and with groups in that order (stored
    // with an input permutation): better than RTN, and MatMul agrees with
    // float64 on the tensor's own dequantized weights.
    foreach (bool groups in new[] { false, true }) {
      var options = new QuantOptions { Method = woq_method.WOQ_METHOD_GPTQ, Calibration = x, ActOrder = true,
                                       ActOrderGroups = groups };
      string path = Path.Combine(tempDir, "act-order.woq");
      using (var q = QMatrix.Quantize(w, rows, cols, options)) {
        double e = OutputError(q, w, x, rows, cols, s);
        Expect(e < baseline, $"act-order (groups {groups}): output error {e} below RTN's {baseline}");
        using (var ctx = Context.Create(Backend.Cpu, 1))
        using (var t = Tensor.FromQMatrix(ctx, q)) {
          float[] wHat = t.Dequantize(), x0 = new float[cols];
          Array.Copy(x, x0, cols);
          float[] y = t.MatMul(x0, 1);
          for (int n = 0; n < rows; ++n) {
            double reference = 0, magnitude = 0;
            for (int k = 0; k < cols; ++k) {
              double p = (double)x0[k] * wHat[n * cols + k];
              reference += p;
              magnitude += Math.Abs(p);
            }
            Expect(Math.Abs(y[n] - reference) <= 1e-5 * magnitude, $"act-order (groups {groups}): y[{n}] = {y[n]}, float64 {reference}");
          }
        }
        using (var writer = Writer.Create(path)) {
          writer.Add("proj.weight", q, null);
          writer.Finish();
        }
      }
      using (var file = WoqFile.Open(path)) {
        TensorInfo info = file.Tensors[0];
        Expect(info.HasInputPermutation == groups && !info.HasInputScales, $"act-order (groups {groups}): stored permutation");
      }
    }
    ExpectThrows<WoqException>(() => QMatrix.Quantize(w, rows, cols, new QuantOptions { Method = woq_method.WOQ_METHOD_GPTQ, Calibration = x, ActOrderGroups = true }),
        e => e.Status == woq_status.WOQ_ERR_INVALID_ARGUMENT && e.Message.Contains("needs ActOrder"), "ActOrderGroups without ActOrder");
    ExpectThrows<WoqException>(() => QMatrix.Quantize(w, rows, cols, new QuantOptions { Method = woq_method.WOQ_METHOD_GPTQ }),
        e => e.Status == woq_status.WOQ_ERR_INVALID_ARGUMENT && e.Message.Contains("calibration"), "GPTQ without calibration");
  }

  // A GPTQ checkpoint (made by tests/golden/make_checkpoints.py; ctest
  // names it in WOQ_TEST_CHECKPOINT) converts to a .woq file.
  static void ImportCheckpoint() {
    string checkpoint = Environment.GetEnvironmentVariable("WOQ_TEST_CHECKPOINT");
    if (string.IsNullOrEmpty(checkpoint)) {
      Console.WriteLine("     (skipped: WOQ_TEST_CHECKPOINT is not set; ctest sets it)");
      return;
    }
    string output = Path.Combine(tempDir, "imported.woq");
    string report = Library.Import(checkpoint, output);
    Expect(report.Contains("format gptq_v2") && report.Contains("2 layers converted"), "import report, got: " + report);
    using (var file = WoqFile.Open(output)) {
      TensorInfo[] infos = file.Tensors;
      Expect(infos.Length == 2 && infos[1].Name == "model.layers.0.self_attn.q_proj.weight" && infos[1].Rows == 64 &&
             infos[1].Cols == 128 && infos[1].HasBias, "imported tensors");
    }
    ExpectThrows<WoqException>(() => Library.Import("/nonexistent/model.safetensors", output),
        e => e.Status == woq_status.WOQ_ERR_IO && e.Message.Contains("/nonexistent/model.safetensors"), "missing checkpoint");
    ExpectThrows<WoqException>(() => Library.Import(checkpoint, output, "nonsense"),
        e => e.Status == woq_status.WOQ_ERR_INVALID_ARGUMENT && e.Message.Contains("nonsense"), "unknown format");
  }

  static void Abi() {
    Expect(Library.Version.StartsWith("1."), "version 1.x, got " + Library.Version);
    Expect(woq.WOQ_BINDINGS_VERSION_MAJOR == woq.woq_version() / 10000, "ABI major matches");
    using (var ctx = Context.Create(Backend.CpuReference, 1)) {
      Expect(ctx.Kernel == "reference", "reference kernel");
      ctx.Synchronize();  // nothing queued on CPU contexts: returns at once
      Expect(ctx.MemoryInUse == 0 && ctx.MemoryPeak == 0, "a new context holds nothing");
      var w = new float[8 * 64];
      for (int i = 0; i < w.Length; ++i) w[i] = (float)Math.Sin(i);
      using (var q = QMatrix.Quantize(w, 8, 64, new QuantOptions { GroupSize = 32 })) {
        // Canonical layout: per row 8 code words and 2 groups of fp16 scale + u8 zero-point.
        using (var t = Tensor.FromQMatrix(ctx, q)) Expect(ctx.MemoryInUse == 8 * (8 * 4 + 2 * 3), "tensor bytes counted");
      }
      Expect(ctx.MemoryInUse == 0 && ctx.MemoryPeak == 8 * (8 * 4 + 2 * 3), "released, peak kept");
    }
  }

  static int Main() {
    tempDir = Path.Combine(Path.GetTempPath(), "woq-cs-" + System.Diagnostics.Process.GetCurrentProcess().Id);
    Directory.CreateDirectory(tempDir);
    try {
      Test("round trip matches float64", RoundTrip);
      Test("bf16 activations", Bf16Activations);
      Test("errors carry status and message", Errors);
      Test("misuse is an exception, not a crash", Misuse);
      Test("finalizers free handles in any order", Finalizers);
      Test("images in memory", InMemory);
      Test("one tensor on 8 threads", Threads);
      Test("AWQ and GPTQ with calibration", Calibrated);
      Test("checkpoint import", ImportCheckpoint);
      Test("ABI version check", Abi);
    } finally {
      Directory.Delete(tempDir, true);
    }
    Console.WriteLine($"{passed} passed, {failed} failed");
    return failed == 0 ? 0 : 1;
  }
}
