// Generated from sphinx-core's API types (core/src/api.rs) by tests/tests/ts_types.rs.
// Do not edit: run `SPHINX_UPDATE_TYPES=1 cargo test -p sphinx-tests --test ts_types`.

export type AskOptions = { 
/**
 * Free text, wrapped in SPHINX's conversation template. Either this or `task`.
 */
prompt?: string, 
/**
 * A task preset (`sphinx tasks`): "ground", "vqa", "detect", "caption", ...
 */
task?: string, 
/**
 * The task's text: the expression to ground, the category to detect, the VQA
 * question. Defaults to `prompt`.
 */
query?: string, 
/**
 * The task's region `[x1, y1, x2, y2]` in pixels of the image (keypoints, region caption).
 */
region?: [number, number, number, number], 
/**
 * Most new tokens (default 512).
 */
maxTokens?: number, 
/**
 * 0 = greedy (default 0.1).
 */
temperature?: number, 
/**
 * Nucleus sampling mass (default 0.75).
 */
topP?: number, 
/**
 * Seed of the sampler (default 0).
 */
seed?: number, };

export type AskResult = { 
/**
 * The answer, without the end-of-turn marker.
 */
text: string, 
/**
 * Boxes and points found in the answer, in pixels of the image when there is one.
 */
answer: Answer, 
/**
 * The answer drawn over the image, in its pixels (empty without an image).
 */
drawing: Array<DrawCommand>, stop: StopReason, promptTokens: number, generatedTokens: number, 
/**
 * Time to the first answer token (prompt prefill, image excluded).
 */
prefillMs: number, decodeMs: number, tokensPerSecond: number, };

export type ParsedAnswer = { answer: Answer, 
/**
 * In pixels of the image (empty without an image size).
 */
drawing: Array<DrawCommand>, };

export type Answer = { text: string, 
/**
 * Labelled lists first, then bare lists, each in text order.
 */
entities: Array<Entity>, };

export type Entity = { label: string | null, color: string, 
/**
 * The numbers of each `;`-separated group, as the demo reads them.
 */
groups: Array<Array<number>>, boxes: Array<BoxCoords>, points: Array<PointCoords>, };

export type BoxCoords = { 
/**
 * [x1, y1, x2, y2] in [0, 1] of the padded square.
 */
normalized: [number, number, number, number], 
/**
 * In pixels of the original image, clamped to it (when the image size is known).
 */
pixels: [number, number, number, number] | null, };

export type PointCoords = { normalized: [number, number], pixels: [number, number] | null, 
/**
 * The COCO keypoint this point's label names (`left eye` → `left_eye`).
 */
keypoint: string | null, };

export type DrawCommand = { "kind": "rect", x1: number, y1: number, x2: number, y2: number, color: [number, number, number], width: number, } | { "kind": "disc", x: number, y: number, radius: number, color: [number, number, number], } | { "kind": "line", x1: number, y1: number, x2: number, y2: number, color: [number, number, number], width: number, } | { "kind": "label", x: number, y: number, text: string, color: [number, number, number], background: [number, number, number], };

export type StopReason = "end_of_turn" | "max_tokens" | "cancelled";

export type LoadOptions = { 
/**
 * Keep the shards in the Cache API for the next load (default true). When the
 * browser's storage quota cannot hold them, loading fails with a `quota` error
 * before downloading; `cache: false` then loads without caching.
 */
cache?: boolean, 
/**
 * Load a mix of this model (trained on real data) and another (synthetic data).
 */
mix?: MixOptions, };

export type MixOptions = { 
/**
 * Base URL of the synthetic-data model (a `sphinx convert --web` directory).
 */
with: string, 
/**
 * β for every trained tensor.
 */
beta: number, 
/**
 * Overrides, first match wins: "PATTERN=β", "PATTERN=real" or "PATTERN=synthetic".
 */
rules?: Array<string>, };

export type DownloadProgress = { doneBytes: number, totalBytes: number, 
/**
 * The shard just read.
 */
file: string, 
/**
 * Whether it came from the Cache API instead of the network.
 */
cached: boolean, };

export type ModelInfo = { 
/**
 * `meta.json`'s `llama_type`.
 */
llamaType: string, 
/**
 * Whether the model takes images.
 */
multimodal: boolean, 
/**
 * Visual tokens per image (0 for text-only models).
 */
imageTokens: number, 
/**
 * Most positions of a conversation.
 */
contextLength: number, vocabSize: number, 
/**
 * Shards the load took from the Cache API rather than the network.
 */
shardsFromCache: number, shards: number, };

export type TaskPreset = { name: string, description: string, needsQuery: boolean, needsRegion: boolean, };

export type ErrorKind = "webgpu-unavailable" | "limits" | "quota" | "device-lost" | "download" | "weights" | "image" | "input" | "internal";

