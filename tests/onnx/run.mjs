// Runs an ONNX graph in ONNX Runtime (npm onnxruntime-node, CPU) on raw float32 inputs, for
// biref's tests and measurements of `biref export-onnx`.
//
//   node run.mjs MODEL.onnx [--threads N] [--runs R] [--warmup W] [--save-optimized PATH]
//                IN.bin:B,C,H,W:OUT.bin ...
//
// Each IN.bin holds B·C·H·W little-endian float32 values; the graph's first output is written to
// OUT.bin the same way. One JSON line per job on stdout: the output's dims, the session's load
// time, and with --runs the wall time of each timed run (after --warmup untimed ones).
// --save-optimized writes the graph as ONNX Runtime's optimizer left it (which fusions it made).
import { readFileSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';

const args = process.argv.slice(2);
if (args.length < 2) {
  console.error('usage: node run.mjs MODEL.onnx [--threads N] [--runs R] [--warmup W] IN.bin:B,C,H,W:OUT.bin ...');
  process.exit(2);
}
const model = args.shift();
let threads = 0, runs = 1, warmup = 0, optimized = '';
const jobs = [];
while (args.length) {
  const a = args.shift();
  if (a === '--threads') threads = Number(args.shift());
  else if (a === '--runs') runs = Number(args.shift());
  else if (a === '--warmup') warmup = Number(args.shift());
  else if (a === '--save-optimized') optimized = args.shift();
  else {
    const [input, dims, output] = a.split(':');
    jobs.push({ input, dims: dims.split(',').map(Number), output });
  }
}

const t0 = performance.now();
const session = await ort.InferenceSession.create(model, {
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  logSeverityLevel: 3,  // errors only (saving an optimized model warns that it is machine-specific)
  ...(optimized ? { optimizedModelFilePath: optimized } : {}),
});
const loadMs = performance.now() - t0;
const inputName = session.inputNames[0], outputName = session.outputNames[0];

for (const job of jobs) {
  const bytes = readFileSync(job.input);
  const n = job.dims.reduce((a, b) => a * b, 1);
  if (bytes.length !== n * 4) {
    console.error(`${job.input}: ${bytes.length} bytes, expected ${n * 4} for [${job.dims}]`);
    process.exit(1);
  }
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  const feeds = { [inputName]: new ort.Tensor('float32', data, job.dims) };
  for (let i = 0; i < warmup; ++i) await session.run(feeds);
  const ms = [];
  let out;
  for (let i = 0; i < runs; ++i) {
    const s = performance.now();
    out = (await session.run(feeds))[outputName];
    ms.push(performance.now() - s);
  }
  writeFileSync(job.output, Buffer.from(out.data.buffer, out.data.byteOffset, out.data.byteLength));
  console.log(JSON.stringify({ input: job.input, dims: out.dims, load_ms: loadMs, ms }));
}
