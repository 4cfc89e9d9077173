// Run an ONNX classifier in onnxruntime-web (the browser runtime; its WebAssembly backend under Node).
// Usage: node run_onnxruntime_web.cjs <node_modules parent> <model.onnx> <pixel_values.f32> <b> <c> <h> <w>
// Prints one JSON line: {"dims": [...], "logits": [...]} (the float32 input file is raw, little-endian, NCHW).
const { createRequire } = require("node:module");
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const [packagesDir, modelPath, inputPath, ...shape] = process.argv.slice(2);
  const load = createRequire(path.join(path.resolve(packagesDir), "package.json"));
  const ort = load("onnxruntime-web");
  ort.env.wasm.numThreads = 1; // no worker threads: the same result everywhere, no hanging workers under Node
  const session = await ort.InferenceSession.create(fs.readFileSync(modelPath), { executionProviders: ["wasm"] });
  const bytes = fs.readFileSync(inputPath);
  const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const feeds = { pixel_values: new ort.Tensor("float32", data, shape.map(Number)) };
  const { logits } = await session.run(feeds);
  process.stdout.write(JSON.stringify({ dims: logits.dims, logits: Array.from(logits.data) }) + "\n");
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
