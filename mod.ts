/**
 * nola-gpu: fine-tune pretrained transformers with NOLA adapters on WebGPU.
 *
 * NOLA writes LoRA's factors as `A = A0 + Σ αᵢ Aᵢ`, `B = Σ βⱼ Bⱼ` over pseudo-random bases
 * regenerated from a seed, and trains only α and β: an adapter is a seed and a few hundred
 * quantized numbers per layer. The layers of this library, from the bottom: the WebGPU runtime
 * ({@link Gpu}, {@link Tensor}), kernels ({@link Matmul}), files (safetensors), the model
 * ({@link Gpt2}), adapters ({@link AdapterSet}, adapter files, merge, PEFT export), data, the
 * training loop ({@link train}), evaluation, and declarative pipelines ({@link runPipeline}).
 *
 * @example Attach NOLA to a GPT-2, train a few steps, save the adapter
 * ```ts
 * import { AdapterSet, Gpt2, Gpu, saveAdapter } from "./mod.ts";
 * using gpu = await Gpu.acquire();
 * using model = await Gpt2.load(gpu, "fixtures/tiny-gpt2");
 * using set = await AdapterSet.attach(model, {
 *   method: "nola", targets: ["h.*.attn.c_attn.q", "h.*.attn.c_attn.v"],
 *   r: 8, k: 256, loraAlpha: 8, seed: 0,
 * }, { maxRows: 256 });
 * await saveAdapter(set, "out/adapter.safetensors", { baseModel: "tiny-gpt2" });
 * ```
 *
 * @module
 */

// Runtime and kernels
export { type AcquireOptions, Gpu, GpuError } from "./kernels/gpu.ts";
export { type DType, Tensor } from "./kernels/tensor.ts";
export { Matmul, type MatmulOptions, type MatmulVariant } from "./kernels/matmul.ts";

// Files
export {
  Checkpoint,
  type Dtype,
  SafetensorsError,
  SafetensorsFile,
  type TensorInfo,
  type TensorToWrite,
  writeSafetensors,
} from "./formats/safetensors.ts";
export { writeFileAtomic, writeTextFileAtomic } from "./formats/atomic.ts";
export { inspectFile } from "./formats/inspect.ts";

// The model
export { Gpt2, type Gpt2Batch, type Gpt2Options, type Gpt2Targets } from "./models/gpt2.ts";
export {
  configHash,
  type Gpt2Config,
  parseGpt2Config,
  readGpt2Config,
} from "./models/gpt2_config.ts";
export { loadGpt2Weights } from "./models/gpt2_weights.ts";
export { initGpt2Weights } from "./models/gpt2_init.ts";
export { saveGpt2Folder } from "./models/gpt2_save.ts";
export { Tokenizer } from "./models/tokenizer.ts";
export {
  type GenerateOptions,
  generateText,
  type GenerateTextOptions,
  generateTokens,
} from "./models/generate.ts";
export { Sampler, type SamplingOptions } from "./models/sampling.ts";

// Adapters
export { AdapterSet, type AttachConfig } from "./adapters/attach.ts";
export { AdapterFileError, loadAdapter, saveAdapter } from "./adapters/adapter_file.ts";
export { QatHooks, quantizeInPlace } from "./adapters/qat.ts";
export { dequantize, quantize, type QuantOptions } from "./adapters/quantize.ts";
export { mergeAdapters, unmergeAdapters, writeMergedFolder } from "./adapters/merge.ts";
export { exportPeft } from "./adapters/peft.ts";
export { adapterAccounting, formatAccounting } from "./adapters/accounting.ts";
export { BASIS_SPEC, basisElement, materializeBasis, moduleKey } from "./adapters/basis_spec.ts";

// Data
export { type DataRecord, readRecords } from "./data/readers.ts";
export { buildRows, loadSplits } from "./data/examples.ts";
export { evalBatches, type MicroBatch, TrainBatches } from "./data/batches.ts";

// Training and evaluation
export { NonFiniteLossError, train, type TrainOptions, type TrainResult } from "./train/trainer.ts";
export { Optimizer, type ParamGroup } from "./train/optimizer.ts";
export { lrAt, type Schedule } from "./train/schedule.ts";
export { RunLog } from "./train/run_log.ts";
export { Progress } from "./train/progress.ts";
export { evaluateGenerations, evaluateLoss } from "./eval/evaluate.ts";
export { corpusBleu } from "./eval/bleu.ts";
export { rougeL } from "./eval/rouge.ts";

// Pipelines
export { loadPipeline, parsePipeline, PipelineError } from "./pipelines/parse.ts";
export { runPipeline } from "./pipelines/run.ts";
