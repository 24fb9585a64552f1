//! The CPU's layout of block matrices: rows in groups of [`GROUP`], their blocks
//! interleaved (docs/design.md §10, "blocks interleaved for the CPU"), as llama.cpp's CPU
//! repacks q4_0 at load time. A decoding step then reads one group's block k as one run
//! of bytes and dots it with x's block k for all eight rows at once: the eight scales
//! widen in one instruction and each row's sum lands in its own lane, so there is no
//! horizontal sum per block.
//!
//! Group g (rows 8g..8g+8) takes the same bytes as its eight rows in llama.cpp's layout
//! (8 · row bytes, at the same offset), so the matrix keeps its shape [rows, words] and a
//! run of whole groups is a run of rows. Within a group, block k of every row is stored
//! together, k = 0, 1, …, each as [`group_block_bytes`]:
//! - bytes 0..16: the eight rows' f16 scales, row 0 first;
//! - then chunks of 32 bytes (4 for q4_0, 8 for q8_0); chunk c holds, for row r = 0..8 in
//!   turn, the 4 quant bytes 4c..4c+4 of that row's block, as llama.cpp stores them
//!   (q4_0: value j in a byte's low nibble, j + 16 in its high one; q8_0: one signed
//!   value per byte).

use crate::blocks::BlockFormat;

/// Rows per interleaved group.
pub const GROUP: usize = 8;
/// Quant bytes each row gives a chunk.
const CHUNK_ROW_BYTES: usize = 4;
/// Bytes of a chunk: four quant bytes of each of the eight rows.
pub const CHUNK_BYTES: usize = GROUP * CHUNK_ROW_BYTES;
/// Where the quants start in a block group (after the eight f16 scales).
pub const SCALES_BYTES: usize = 2 * GROUP;
/// The largest block (q8_0's).
const MAX_BLOCK_BYTES: usize = BlockFormat::Q8_0.block_bytes();

/// Bytes of one block of all eight rows: their scales, then their quants in chunks.
pub const fn group_block_bytes(format: BlockFormat) -> usize {
    GROUP * format.block_bytes()
}

/// Chunks per block group.
pub const fn chunks(format: BlockFormat) -> usize {
    (format.block_bytes() - 2) / CHUNK_ROW_BYTES
}

/// Whether a matrix of `rows` rows can be interleaved (whole groups).
pub fn fits(rows: usize) -> bool {
    rows > 0 && rows % GROUP == 0
}

/// `bytes` (rows of `format` blocks, llama.cpp's layout, `row_bytes` each; a whole number
/// of groups) in the interleaved layout: a permutation of the same bytes.
pub fn interleave(bytes: &[u8], row_bytes: usize, format: BlockFormat) -> Vec<u8> {
    let bb = format.block_bytes();
    assert!(row_bytes % bb == 0 && bytes.len() % (GROUP * row_bytes) == 0, "interleave: whole groups of whole blocks");
    let mut out = vec![0u8; bytes.len()];
    for (src, dst) in bytes.chunks_exact(GROUP * row_bytes).zip(out.chunks_exact_mut(GROUP * row_bytes)) {
        for (k, group_block) in dst.chunks_exact_mut(group_block_bytes(format)).enumerate() {
            for r in 0..GROUP {
                let block = &src[r * row_bytes + k * bb..][..bb];
                group_block[2 * r..2 * r + 2].copy_from_slice(&block[..2]);
                for c in 0..chunks(format) {
                    let at = SCALES_BYTES + c * CHUNK_BYTES + r * CHUNK_ROW_BYTES;
                    group_block[at..at + CHUNK_ROW_BYTES].copy_from_slice(&block[2 + c * CHUNK_ROW_BYTES..][..CHUNK_ROW_BYTES]);
                }
            }
        }
    }
    out
}

/// Row `r`'s block as llama.cpp stores it (scale, then the quants) in the first
/// `format.block_bytes()` bytes, read from one block group of the interleaved layout.
pub fn row_block(group_block: &[u8], r: usize, format: BlockFormat) -> [u8; MAX_BLOCK_BYTES] {
    let mut block = [0u8; MAX_BLOCK_BYTES];
    block[..2].copy_from_slice(&group_block[2 * r..2 * r + 2]);
    for c in 0..chunks(format) {
        let at = SCALES_BYTES + c * CHUNK_BYTES + r * CHUNK_ROW_BYTES;
        block[2 + c * CHUNK_ROW_BYTES..][..CHUNK_ROW_BYTES].copy_from_slice(&group_block[at..at + CHUNK_ROW_BYTES]);
    }
    block
}

/// The values of whole groups in the interleaved layout (`bytes`: groups of rows of
/// `out.len() / rows` values) into `out`, row-major [rows, cols].
pub fn dequantize(bytes: &[u8], out: &mut [f32], rows: usize, format: BlockFormat) {
    if rows == 0 {
        return;
    }
    let (cols, bb) = (out.len() / rows, format.block_bytes());
    let group_bytes = format.row_bytes(cols).map(|row| GROUP * row);
    assert!(fits(rows) && group_bytes.is_some_and(|g| bytes.len() == rows / GROUP * g), "dequantize: whole interleaved groups");
    let block_values = crate::blocks::BLOCK;
    for (group, values) in bytes.chunks_exact(group_bytes.unwrap_or(1)).zip(out.chunks_exact_mut(GROUP * cols)) {
        for (k, group_block) in group.chunks_exact(group_block_bytes(format)).enumerate() {
            for r in 0..GROUP {
                format.dequantize(&row_block(group_block, r, format)[..bb], &mut values[r * cols + k * block_values..][..block_values]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_permutes_the_bytes_and_every_row_block_reads_back() {
        for format in BlockFormat::ALL {
            let (rows, blocks, bb) = (16, 3, format.block_bytes());
            let row_bytes = blocks * bb;
            let bytes: Vec<u8> = (0..rows * row_bytes).map(|i| (i * 7 + i / 251) as u8).collect();
            let mixed = interleave(&bytes, row_bytes, format);
            let (mut a, mut b) = (bytes.clone(), mixed.clone());
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "{}: a permutation", format.name());
            for row in 0..rows {
                for k in 0..blocks {
                    let group_block = &mixed[row / GROUP * GROUP * row_bytes + k * group_block_bytes(format)..][..group_block_bytes(format)];
                    assert_eq!(row_block(group_block, row % GROUP, format)[..bb], bytes[row * row_bytes + k * bb..][..bb], "{} row {row} block {k}", format.name());
                }
            }
            let values = rows * blocks * crate::blocks::BLOCK;
            let (mut plain, mut from_groups) = (vec![0f32; values], vec![0f32; values]);
            format.dequantize(&bytes, &mut plain);
            dequantize(&mixed, &mut from_groups, rows, format);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&plain), bits(&from_groups), "{}", format.name());
        }
    }
}
