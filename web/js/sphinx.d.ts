// The package's API. Option and result types are generated from the Rust core (types.d.ts).
import type { AskOptions, AskResult, DownloadProgress, DrawCommand, ErrorKind, LoadOptions, ModelInfo, ParsedAnswer, TaskPreset } from "./types";

export * from "./types";

/** An error of the runtime: `kind` tells what went wrong ("webgpu-unavailable", "quota", "image", ...). */
export class SphinxError extends Error {
  readonly name: "SphinxError";
  readonly kind: ErrorKind;
}

/** Image bytes (JPEG, PNG, WebP, GIF, BMP), a Blob/File, or a URL to fetch. */
export type ImageInput = Uint8Array | ArrayBuffer | Blob | URL | string;

export type Request = AskOptions & { image?: ImageInput };

export type LoadSettings = LoadOptions & {
  /** Called after each shard: bytes done and total, file, whether it came from the cache. */
  onProgress?: (progress: DownloadProgress) => void;
  /** Run the model in a Web Worker (default true). */
  worker?: boolean;
  /** Where sphinx_web_bg.wasm is, if not next to the package's files. */
  wasmUrl?: string | URL;
};

export type TokenStream = AsyncIterableIterator<string> & { result: Promise<AskResult> };

export class Sphinx {
  private constructor();
  /** Loads a `sphinx convert --web` directory: its base URL or the URL of its manifest.json. */
  static load(url: string | URL, settings?: LoadSettings): Promise<Sphinx>;
  readonly info: ModelInfo;
  /** One question, optionally about an image. `onToken` receives each new piece of text. */
  generate(request: Request, onToken?: (text: string) => void): Promise<AskResult>;
  /** Continues the conversation; an `image` starts a new one about it. */
  chat(request: Request, onToken?: (text: string) => void): Promise<AskResult>;
  resetChat(): Promise<void>;
  /** The answer as an async iterator of text pieces; `.result` resolves to the AskResult. */
  stream(request: Request, options?: { chat?: boolean }): TokenStream;
  tasks(): Promise<TaskPreset[]>;
  parseAnswer(text: string, width?: number, height?: number): Promise<ParsedAnswer>;
  dispose(): Promise<void>;
}

/** Draws an AskResult's `drawing` on a canvas, `scale` canvas pixels per image pixel. */
export function renderDrawing(ctx: CanvasRenderingContext2D | OffscreenCanvasRenderingContext2D, drawing: DrawCommand[], scale?: number): void;
