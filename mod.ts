/**
 * nola-gpu: fine-tune pretrained transformers with NOLA adapters on WebGPU.
 *
 * NOLA writes LoRA's factors as `A = A0 + Σ αᵢ Aᵢ`, `B = Σ βⱼ Bⱼ` over pseudo-random bases
 * regenerated from a seed, and trains only α and β: an adapter is a seed and a few hundred
 * quantized numbers per layer. The layers of this library, from the bottom: the WebGPU runtime
 * ({@link Gpu}, {@link Tensor}), kernels ({@link Matmul}), files (safetensors), models (the
 * {@link Model} contract, resolved by `model_type` with {@link loadModel}; GPT-2 is {@link Gpt2},
 * the ViT image classifier {@link Vit}),
 * adapters ({@link AdapterSet}, adapter files, merge, PEFT export), data, the
 * training loop ({@link train}), evaluation, and declarative pipelines ({@link runPipeline}).
 *
 * @example Attach NOLA to a model, save the adapter
 * ```ts
 * import { AdapterSet, Gpu, loadModel, saveAdapter } from "./mod.ts";
 * using gpu = await Gpu.acquire();
 * using model = await loadModel(gpu, "fixtures/tiny-gpt2");
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
export {
  type AcquireOptions,
  type BindingKind,
  type BufferBinding,
  Gpu,
  GpuError,
  type Kernel,
  type KernelKey,
} from "./kernels/gpu.ts";
export {
  type BufferView,
  type DType,
  type HostArray,
  type MatrixView,
  Tensor,
} from "./kernels/tensor.ts";
export { Matmul, type MatmulOptions, type MatmulVariant } from "./kernels/matmul.ts";
export { PackedTensor } from "./kernels/packed_tensor.ts";
export {
  type DecodeAttentionOptions,
  DecodeKernels,
  type RopeFrequencies,
  type RowMove,
  type RowPair,
  type RowsView,
} from "./kernels/decode.ts";
export type {
  BaseFormat,
  BaseQuantOptions,
  PackedLayout,
  PackedWeight,
} from "./formats/base_quant.ts";

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
export type { TensorData } from "./formats/_safetensors_writer.ts";
export { writeFileAtomic, writeTextFileAtomic } from "./formats/atomic.ts";
export { inspectFile } from "./formats/inspect.ts";
export { type ChecksumCheck, verifyChecksum } from "./formats/checksum.ts";

// Models: the contract, the registry, the families
export {
  type Activations,
  type AttachedAdapter,
  type BaseWeightFormat,
  type BatchDecodingCache,
  type ClassifierHead,
  type DecodingCache,
  type HeadGradients,
  type LinearWeight,
  type LossTargets,
  type Model,
  ModelConfigError,
  type ModelFamily,
  type ModelMemory,
  type ModelOptions,
  type ModelShape,
  type ModelSummary,
  type ModelTask,
  ModelWeightsError,
  type PeftNaming,
  type WeightLayout,
} from "./models/model.ts";
export {
  familyOf,
  initModel,
  loadModel,
  MODEL_FAMILIES,
  type ModelConfig,
  modelShape,
  parseModelConfig,
  readModelConfig,
  type RegisteredFamily,
} from "./models/registry.ts";
export {
  type DecodeSlot,
  type EmbedCall,
  GpuModel,
  type HeadBackwardCall,
  type HeadCall,
  type LinearBackwardCall,
  type LinearCall,
  RowBatchCache,
  RowCache,
  type RowOfBatch,
  TokenArena,
} from "./models/_gpu_model.ts";
export type { PlannedWeight, WeightLoaded, WeightReader } from "./models/_base_weights.ts";
export { Gpt2, Gpt2Cache, type Gpt2LoadOptions } from "./models/gpt2.ts";
export { gpt2Family } from "./models/gpt2_family.ts";
export type { Gpt2Activations } from "./models/gpt2_activations.ts";
export {
  configHash,
  GPT2_ACTIVATIONS,
  GPT2_SMALL,
  type Gpt2Activation,
  type Gpt2Config,
  gpt2Sites,
  parseGpt2Config,
  readGpt2Config,
} from "./models/gpt2_config.ts";
export {
  type Gpt2Weights,
  type HostTensor,
  loadGpt2Weights,
  planGpt2Weights,
} from "./models/gpt2_weights.ts";
export { initGpt2Weights } from "./models/gpt2_init.ts";
export { saveGpt2Folder } from "./models/gpt2_save.ts";
export { Llama, LlamaCache, type LlamaLoadOptions } from "./models/llama.ts";
export { llamaFamily } from "./models/llama_family.ts";
export type { LlamaActivations } from "./models/llama_activations.ts";
export {
  LLAMA_MODEL_TYPES,
  LLAMA_PEFT,
  type LlamaConfig,
  LlamaConfigError,
  llamaConfigHash,
  type LlamaModelType,
  type LlamaRopeScaling,
  llamaSites,
  parseLlamaConfig,
  readLlamaConfig,
} from "./models/llama_config.ts";
export {
  initLlamaWeights,
  type LlamaWeights,
  LlamaWeightsError,
  loadLlamaWeights,
  planLlamaWeights,
} from "./models/llama_weights.ts";
export { hfLlamaConfigJson, saveLlamaFolder } from "./models/llama_save.ts";
export { Vit, type VitLoadOptions } from "./models/vit.ts";
export { initVitWeights, TIMM_VIT_ARCHITECTURE, vitFamily } from "./models/vit_family.ts";
export { VitActivations } from "./models/vit_activations.ts";
export {
  canonicalVitConfigJson,
  parseVitConfig,
  readVitConfig,
  VIT_MAX_LAYERS,
  type VitConfig,
  VitConfigError,
  vitConfigHash,
  type VitLayout,
  vitPatches,
  type VitPreprocessing,
  vitTokens,
} from "./models/vit_config.ts";
export { type VitBlockNames, type VitNames, vitNames, vitSites } from "./models/vit_names.ts";
export { saveVitFolder, vitConfigJson } from "./models/vit_save.ts";
export {
  expectedVitShapes,
  loadVitWeights,
  planVitWeights,
  VIT_PREFIX,
  vitWeightNames,
  type VitWeights,
  VitWeightsError,
} from "./models/vit_weights.ts";
export {
  type ChatMessage,
  type ChatTemplateOptions,
  Tokenizer,
  TokenizerError,
} from "./models/tokenizer.ts";
export { ChatTemplate } from "./models/chat_template.ts";
export {
  DEFAULT_DECODE_ROWS,
  generateBatch,
  type GenerateBatchOptions,
  type GenerateOptions,
  generateText,
  type GenerateTextOptions,
  generateTokens,
} from "./models/generate.ts";
export { Sampler, type SamplingOptions } from "./models/sampling.ts";

// Adapters
export {
  type AdapterMethod,
  type AdapterParameter,
  AdapterSet,
  ALL_LINEAR,
  type AttachConfig,
  type AttachedModule,
  type LinearSite,
  MLP_TARGETS,
  type ModuleOverride,
  type ModulePlan,
} from "./adapters/attach.ts";
export type { LinearAdapter } from "./models/model.ts";
export type { NolaInit } from "./adapters/nola_factors.ts";
export {
  AdapterFileError,
  type HeadValues,
  loadAdapter,
  type ModuleValues,
  saveAdapter,
} from "./adapters/adapter_file.ts";
export {
  type AdapterHead,
  freshHeadValues,
  HEAD_INIT_STD,
  HEAD_MODES,
  HEAD_STREAM,
  headAction,
  type HeadMode,
  headTensors,
  newHead,
  restoreHead,
  trainCheckpointHead,
} from "./adapters/head.ts";
export { type PtqStats, QatHooks, type QatModule, quantizeInPlace } from "./train/qat.ts";
export {
  dequantize,
  quantize,
  type Quantized,
  type QuantOptions,
  type QuantScheme,
} from "./formats/quantize.ts";
export {
  type DetachedAdapters,
  mergeAdapters,
  relabelConfig,
  unmergeAdapters,
  writeMergedFolder,
} from "./adapters/merge.ts";
export { exportPeft, type PeftExportOptions } from "./adapters/peft.ts";
export { type AccountingRow, adapterAccounting, formatAccounting } from "./adapters/accounting.ts";
export {
  BASIS_SPEC,
  type BasisDistribution,
  basisElement,
  type BasisElementOptions,
  BasisFactor,
  materializeBasis,
  type MaterializeOptions,
  moduleKey,
  type PhiloxKey,
} from "./kernels/basis_spec.ts";

// Data
export { type DataFormat, type DataRecord, type FieldValue, readRecords } from "./data/readers.ts";
export {
  buildRows,
  buildSegmentRows,
  encodeSegments,
  loadSplits,
  type PackingReport,
  type Row,
  type RowOptions,
  type Segment,
  type SplitRatios,
  type SplitReader,
  type Splits,
  type SplitSource,
  type TextEncoder,
  type TruncationReport,
} from "./data/examples.ts";
export {
  alpacaPrompt,
  type AlpacaRecord,
  alpacaSegments,
  type ChatRecord,
  type ChatRenderer,
  chatSegments,
  type ChatTurn,
  INSTRUCTION_FORMATS,
  type InstructionExample,
  instructionExample,
  type InstructionFormat,
  type InstructionRecord,
  instructionSegments,
  parseAlpaca,
  parseChat,
  readInstructions,
  type RecordSource,
} from "./data/instructions.ts";
export type { Templates } from "./data/templates.ts";
export {
  type ChoiceFormat,
  type ChoiceItem,
  choiceLetter,
  parseChoiceItems,
  readChoiceItems,
  subjectOfFile,
} from "./data/choices.ts";
export {
  type BatchOf,
  type BatchState,
  evalBatches,
  evalLabelledBatches,
  type LabelledBatch,
  labelledBatch,
  type LabelledExample,
  type LabelledInput,
  lossRows,
  type MicroBatch,
  type TokenBatch,
  type TokenInput,
  TrainBatches,
  type TrainBatchesOptions,
  type TransformAt,
} from "./data/batches.ts";

// Image data
export {
  type ImageData,
  type ImageDataOptions,
  imageEvalBatches,
  ImageExample,
  type ImageSplit,
  type ImageSplitName,
  imageTrainBatches,
  loadImageData,
  matchLabels,
  sampleShots,
  trainingExample,
} from "./data/images/dataset.ts";
export {
  decodeImage,
  type Image,
  type ImageFormat,
  readImage,
  sniffImage,
} from "./data/images/image.ts";
export {
  centreBox,
  normalise,
  preprocessImage,
  type PreprocessOverrides,
  type PreprocessSettings,
  preprocessSettings,
  resizedSize,
  vitDefaults,
} from "./data/images/preprocess.ts";
export { AUGMENT_DEFAULTS, augmentImage, type AugmentSettings } from "./data/images/augment.ts";
export {
  detectSource,
  type ImageEntry,
  type ImageListing,
  type ImageSourceKind,
  listImages,
  loadImage,
  sortClassNames,
} from "./data/images/sources.ts";
export { type IdxImages, type IdxPair, parseIdx, readIdxPair } from "./data/images/idx.ts";
export { type Box, type FloatImage, type Resample, resampleImage } from "./data/images/resample.ts";

// Training and evaluation
export {
  NonFiniteLossError,
  type StepHooks,
  type StepSource,
  train,
  type TrainOptions,
  type TrainResult,
} from "./train/trainer.ts";
export {
  Optimizer,
  type OptimizerOptions,
  type OptimizerParam,
  type OptimizerState,
  type ParamGroup,
} from "./train/optimizer.ts";
export { lrAt, type Schedule, type ScheduleKind } from "./train/schedule.ts";
export { type MetricRecord, RunLog, type Split, type Summary } from "./train/run_log.ts";
export {
  type CheckpointData,
  CheckpointError,
  findResumeCheckpoint,
  type ResumePoint,
} from "./train/checkpoint.ts";
export { Progress, type StepFigures } from "./train/progress.ts";
export {
  accuracy,
  type AccuracyResult,
  type BatchAccuracy,
  type ClassificationExample,
  evaluateAccuracy,
  evaluateGenerations,
  type EvaluateGenerationsOptions,
  evaluateLoss,
  type GenerationEvaluation,
  type GenerationExample,
  type LossResult,
} from "./eval/evaluate.ts";
export type { GenerationScores, ScoreOptions } from "./eval/metrics.ts";
export {
  type ClassifierScores,
  type ClassProbability,
  classRank,
  evaluateClassifier,
  topClasses,
} from "./eval/classify.ts";
export {
  type BleuOptions,
  type BleuResult,
  type BleuSmoothing,
  type BleuStats,
  corpusBleu,
} from "./eval/bleu.ts";
export { rougeL, type RougeOptions, type RougeResult } from "./eval/rouge.ts";
export {
  findMr,
  parseMr,
  type Slot,
  type SlotCheck,
  slotErrorRate,
  type SlotErrorResult,
  SlotLexicon,
} from "./eval/slot_error.ts";
export {
  type ChoiceAccuracy,
  choiceAccuracy,
  type ChoicePrediction,
  choicePrompt,
  type ChoiceScore,
  evaluateMultipleChoice,
  formatChoiceItem,
  MultipleChoiceError,
  type MultipleChoiceOptions,
  type MultipleChoiceReason,
  type MultipleChoiceResult,
  type SubjectAccuracy,
} from "./eval/multiple_choice.ts";

// Pipelines
export {
  loadPipeline,
  type ParseOptions,
  parsePipeline,
  PipelineError,
} from "./pipelines/parse.ts";
export type {
  AttachOverride,
  AttachStage,
  ChoiceSet,
  DataStage,
  EvaluateStage,
  ExportPeftStage,
  GenerateStage,
  ImageAugmentKeys,
  ImagePreprocessKeys,
  LoadStage,
  MergeStage,
  MetricName,
  Pipeline,
  QuantizeStage,
  SaveStage,
  ScheduleSpec,
  SplitName,
  SplitSpec,
  Stage,
  StageBase,
  StageKind,
  TrainStage,
} from "./pipelines/schema.ts";
export { type PipelineResult, runPipeline, type RunPipelineOptions } from "./pipelines/run.ts";
export {
  classifyCommand,
  type ClassifyCommandOptions,
  classifyImages,
  type ImageClassification,
} from "./pipelines/commands.ts";
export type { EvaluationRow } from "./pipelines/state.ts";
