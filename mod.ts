/**
 * nola-gpu: fine-tune pretrained transformers with NOLA adapters on WebGPU.
 *
 * The layers, from the bottom: the WebGPU runtime ({@link Gpu}, {@link Tensor}), kernels
 * ({@link Matmul}, ...), file formats (safetensors), models ({@link Gpt2}), adapters (NOLA and
 * LoRA) and generation.
 *
 * @example Load the tiny fixture GPT-2 and generate
 * ```ts
 * import { generateText, Gpt2, Gpu, Tokenizer } from "./mod.ts";
 * using gpu = await Gpu.acquire();
 * using model = await Gpt2.load(gpu, "fixtures/tiny-gpt2");
 * const tokenizer = await Tokenizer.load("fixtures/tiny-gpt2");
 * console.log(await generateText(model, tokenizer, "The ", { maxNewTokens: 8 }));
 * ```
 *
 * @module
 */

export { type AcquireOptions, Gpu, GpuError } from "./kernels/gpu.ts";
export { type DType, Tensor } from "./kernels/tensor.ts";
export { Matmul, type MatmulOptions, type MatmulVariant } from "./kernels/matmul.ts";
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
export { Gpt2, type Gpt2Batch, type Gpt2Options, type Gpt2Targets } from "./models/gpt2.ts";
export { configHash, type Gpt2Config, parseGpt2Config } from "./models/gpt2_config.ts";
export { loadGpt2Weights } from "./models/gpt2_weights.ts";
export { Tokenizer } from "./models/tokenizer.ts";
export {
  type GenerateOptions,
  generateText,
  type GenerateTextOptions,
  generateTokens,
} from "./models/generate.ts";
export { Sampler, type SamplingOptions } from "./models/sampling.ts";
export {
  BASIS_SPEC,
  basisElement,
  materializeBasis,
  moduleKey,
  philox4x32_10,
} from "./adapters/basis_spec.ts";
export { LowRankLinear } from "./adapters/linear_adapter.ts";
export { NolaFactors } from "./adapters/nola_factors.ts";
