/**
 * Uniform structs declared once: the fields of a WGSL struct, in order, and a packer that lays an
 * object out as the shader reads it, so no wrapper keeps byte offsets by hand.
 *
 * @module
 */

/** A field type of a uniform struct (`vec2u` for the two words of a Philox key). */
export type FieldType = "u32" | "i32" | "f32" | "vec2u";

/** What a field of each type is packed from: u32 also takes a boolean (1 or 0). */
export type FieldValue<T extends FieldType> = T extends "vec2u" ? readonly [number, number]
  : T extends "u32" ? number | boolean
  : number;

/** The object {@link UniformStruct.pack} takes: one value per field. */
export type StructValues<F extends Record<string, FieldType>> = {
  readonly [K in keyof F]: FieldValue<F[K]>;
};

/** Options of the {@link UniformStruct} constructor. */
export interface UniformStructOptions {
  /** WGSL source declaring the struct: the fields are checked against it (names, order, types). */
  wgsl?: string;
}

const ALIGN: Record<FieldType, number> = { u32: 4, i32: 4, f32: 4, vec2u: 8 };
const WGSL_TYPES: Record<string, FieldType> = {
  u32: "u32",
  i32: "i32",
  f32: "f32",
  vec2u: "vec2u",
  "vec2<u32>": "vec2u",
};

/**
 * A WGSL uniform struct of 4-byte scalars (and `vec2u`): its fields in declaration order, packed
 * with WGSL's layout (each field at its alignment) into a block rounded up to 16 bytes.
 *
 * @example The sizes of an elementwise kernel
 * ```ts
 * import { UniformStruct } from "./kernels/uniform_struct.ts";
 * const wgsl = "struct Sizes { n: u32, shift: u32, factor: f32 }";
 * const SIZES = new UniformStruct("Sizes", { n: "u32", shift: "u32", factor: "f32" }, { wgsl });
 * const block = SIZES.pack({ n: 10, shift: 3, factor: 0.5 });
 * console.log(block.byteLength, new Float32Array(block)[2]); // 16 0.5
 * ```
 */
export class UniformStruct<F extends Record<string, FieldType>> {
  /** Bytes of a packed block: the struct's size rounded up to 16. */
  readonly byteLength: number;
  /** Each field's byte offset, in declaration order. */
  readonly offsets: Readonly<Record<keyof F, number>>;

  /**
   * Declares a struct.
   *
   * @param name The struct's WGSL name, for messages and the check against `options.wgsl`.
   * @param fields Field name to type, in the order the WGSL declares them.
   * @param options The WGSL source to check the declaration against.
   * @throws {TypeError} When the WGSL declares the struct differently, or not at all.
   */
  constructor(
    readonly name: string,
    readonly fields: F,
    options: UniformStructOptions = {},
  ) {
    const offsets: Record<string, number> = {};
    let end = 0;
    for (const [field, type] of Object.entries(fields)) {
      offsets[field] = alignUp(end, ALIGN[type]);
      end = offsets[field] + ALIGN[type];
    }
    this.offsets = offsets as Record<keyof F, number>;
    this.byteLength = Math.max(16, alignUp(end, 16));
    if (options.wgsl !== undefined) this.#check(options.wgsl);
  }

  /**
   * Lays `values` out as the shader reads the struct.
   *
   * @param values One value per field.
   * @returns A new block of {@link byteLength} bytes.
   * @throws {RangeError} On a value its type cannot hold (a negative or fractional u32, ...).
   */
  pack(values: StructValues<F>): ArrayBuffer {
    const block = new ArrayBuffer(this.byteLength);
    const view = new DataView(block);
    for (const [field, type] of Object.entries(this.fields)) {
      const at = this.offsets[field];
      const value = values[field];
      if (type === "vec2u") {
        const [x, y] = value as readonly [number, number];
        view.setUint32(at, this.#u32(field, x), true);
        view.setUint32(at + 4, this.#u32(field, y), true);
      } else if (type === "u32") {
        const v = typeof value === "boolean" ? Number(value) : value as number;
        view.setUint32(at, this.#u32(field, v), true);
      } else if (type === "i32") {
        const v = value as number;
        if (!Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) this.#bad(field, type, v);
        view.setInt32(at, v, true);
      } else {
        const v = value as number;
        if (typeof v !== "number") this.#bad(field, type, v);
        view.setFloat32(at, v, true);
      }
    }
    return block;
  }

  #u32(field: string, v: number): number {
    if (!Number.isInteger(v) || v < 0 || v >= 2 ** 32) this.#bad(field, "u32", v);
    return v;
  }

  #bad(field: string, type: FieldType, value: unknown): never {
    throw new RangeError(`Uniform ${this.name}.${field} must be a ${type}, got ${value}`);
  }

  #check(wgsl: string): void {
    const code = wgsl.replace(/\/\/[^\n]*/g, "");
    const match = code.match(new RegExp(`\\bstruct\\s+${this.name}\\s*\\{([^}]*)\\}`));
    if (!match) throw new TypeError(`WGSL declares no struct ${this.name}`);
    const declared = match[1].split(",").map((f) => f.trim()).filter(Boolean).map((f) => {
      const [field, type] = f.split(":").map((s) => s.trim());
      return `${field}: ${WGSL_TYPES[type.replace(/\s+/g, "")] ?? type}`;
    });
    const mine = Object.entries(this.fields).map(([field, type]) => `${field}: ${type}`);
    if (declared.join(", ") !== mine.join(", ")) {
      throw new TypeError(
        `Uniform struct ${this.name} is declared { ${mine.join(", ")} } but the WGSL has ` +
          `{ ${declared.join(", ")} }`,
      );
    }
  }
}

function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
