// Loads a .woq file, runs woq_matmul on fp32 activations read from a raw
// little-endian file and prints Y as fp32 bit patterns, like
// examples/c/matmul_vectors.c on the same shared vectors (examples/data).
//
//   mono woq_example.exe VECTORS.woq X.f32 [TENSOR]
//   (libwoq_csharp.so and libwoq.so on LD_LIBRARY_PATH or next to the .exe)
using System;
using System.IO;
using System.Linq;
using System.Text;
using Woq;

static class Example {
  static int Main(string[] args) {
    if (args.Length < 2) {
      Console.Error.WriteLine("usage: woq_example.exe VECTORS.woq X.f32 [TENSOR]");
      return 2;
    }
    string name = args.Length > 2 ? args[2] : "proj.weight";
    try {
      using (var file = WoqFile.Open(args[0]))
      using (var context = Context.Create(Backend.Cpu, 0))
      using (var tensor = Tensor.Load(context, file, name)) {
        byte[] raw = File.ReadAllBytes(args[1]);
        if (raw.Length == 0 || raw.Length % (4 * tensor.Cols) != 0)
          throw new InvalidDataException($"{args[1]}: {raw.Length} bytes are not rows of {tensor.Cols} fp32 values");
        var x = new float[raw.Length / 4];
        for (int i = 0; i < x.Length; ++i) x[i] = BitConverter.ToSingle(raw, 4 * i);  // little-endian host
        long m = x.Length / tensor.Cols;
        float[] y = tensor.MatMul(x, m);
        TensorInfo info = file.Tensors.First(t => t.Name == name);
        Console.WriteLine($"libwoq {Library.Version}: {name} [{tensor.Rows} x {tensor.Cols}], {info.Bits}-bit, " +
                          $"group {info.GroupSize}; X [{m} x {tensor.Cols}]");
        for (long r = 0; r < m; ++r) {
          var line = new StringBuilder("y " + r + ":");
          for (long n = 0; n < tensor.Rows; ++n)
            line.Append(' ').Append(BitConverter.ToUInt32(BitConverter.GetBytes(y[r * tensor.Rows + n]), 0).ToString("x8"));
          Console.WriteLine(line);
        }
      }
      return 0;
    } catch (Exception e) when (e is WoqException || e is IOException) {
      Console.Error.WriteLine(e.Message);
      return 1;
    }
  }
}
