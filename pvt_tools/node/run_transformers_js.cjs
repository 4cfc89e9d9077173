// Classify images with Transformers.js's image-classification pipeline, offline, from a local folder.
// Usage: node run_transformers_js.cjs <node_modules parent> <local model path> <model id> <dtype> <image>...
// Prints one JSON line: [[{label, score}, ...top 3], ...] per image, in order.
const { createRequire } = require("node:module");
const path = require("node:path");

async function main() {
  const [packagesDir, localModelPath, modelId, dtype, ...images] = process.argv.slice(2);
  const load = createRequire(path.join(path.resolve(packagesDir), "package.json"));
  const { env, pipeline } = load("@huggingface/transformers");
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = path.resolve(localModelPath);
  const classify = await pipeline("image-classification", modelId, { dtype, device: "cpu" });
  const results = [];
  for (const image of images) {
    results.push(await classify(path.resolve(image), { top_k: 3 }));
  }
  process.stdout.write(JSON.stringify(results) + "\n");
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
