//! The CPU's layout of q4_0 matrices: rows in groups of [`GROUP`], their blocks
//! interleaved (docs/design.md §10, "q4_0 interleaved for the CPU"), as llama.cpp's CPU
//! repacks q4_0 at load time. A decoding step then reads one group's block k as one
//! run of 144 bytes and dots it with x's block k for all eight rows at once: the eight
//! scales widen in one instruction and each row's sum lands in its own lane, so there is
//! no horizontal sum per block.
//!
//! Group g (rows 8g..8g+8) takes the same bytes as its eight rows in llama.cpp's layout
//! (8 · row bytes, at the same offset), so the matrix keeps its shape [rows, words] and a
//! run of whole groups is a run of rows. Within a group, block k of every row is stored
//! together, k = 0, 1, …, each as [`GROUP_BLOCK_BYTES`]:
//! - bytes 0..16: the eight rows' f16 scales, row 0 first;
//! - bytes 16..144: four chunks of 32 bytes; chunk c holds, for row r = 0..8 in turn, the
//!   4 quant bytes 4c..4c+4 of that row's block (each byte: value j in its low nibble,
//!   value j + 16 in its high nibble, as in llama.cpp's block).

use crate::blocks::{BlockFormat, BLOCK};

/// Rows per interleaved group.
pub const GROUP: usize = 8;
/// Quant bytes each row gives a chunk.
const CHUNK_ROW_BYTES: usize = 4;
/// Chunks per block group: a q4_0 block's 16 quant bytes, 4 per row per chunk.
pub const CHUNKS: usize = BLOCK / 2 / CHUNK_ROW_BYTES;
/// Bytes of one block of all eight rows: their scales, then their quants in chunks.
pub const GROUP_BLOCK_BYTES: usize = GROUP * BlockFormat::Q4_0.block_bytes();
/// Where the quants start in a block group (after the eight f16 scales).
pub const SCALES_BYTES: usize = 2 * GROUP;

/// Whether a q4_0 matrix of `rows` rows can be interleaved (whole groups).
pub fn fits(rows: usize) -> bool {
    rows > 0 && rows % GROUP == 0
}

/// `bytes` (rows of q4_0 blocks, llama.cpp's layout, `row_bytes` each; a whole number of
/// groups) in the interleaved layout: a permutation of the same bytes.
pub fn interleave(bytes: &[u8], row_bytes: usize) -> Vec<u8> {
    let bb = BlockFormat::Q4_0.block_bytes();
    assert!(row_bytes % bb == 0 && bytes.len() % (GROUP * row_bytes) == 0, "interleave: whole groups of whole blocks");
    let mut out = vec![0u8; bytes.len()];
    for (src, dst) in bytes.chunks_exact(GROUP * row_bytes).zip(out.chunks_exact_mut(GROUP * row_bytes)) {
        for (k, group_block) in dst.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
            for r in 0..GROUP {
                let block = &src[r * row_bytes + k * bb..][..bb];
                group_block[2 * r..2 * r + 2].copy_from_slice(&block[..2]);
                for c in 0..CHUNKS {
                    let at = SCALES_BYTES + c * GROUP * CHUNK_ROW_BYTES + r * CHUNK_ROW_BYTES;
                    group_block[at..at + CHUNK_ROW_BYTES].copy_from_slice(&block[2 + c * CHUNK_ROW_BYTES..][..CHUNK_ROW_BYTES]);
                }
            }
        }
    }
    out
}

/// Row `r`'s block as llama.cpp stores it (scale, then 16 quant bytes), read from one
/// block group of the interleaved layout.
pub fn row_block(group_block: &[u8], r: usize) -> [u8; 18] {
    let mut block = [0u8; 18];
    block[..2].copy_from_slice(&group_block[2 * r..2 * r + 2]);
    for c in 0..CHUNKS {
        let at = SCALES_BYTES + c * GROUP * CHUNK_ROW_BYTES + r * CHUNK_ROW_BYTES;
        block[2 + c * CHUNK_ROW_BYTES..][..CHUNK_ROW_BYTES].copy_from_slice(&group_block[at..at + CHUNK_ROW_BYTES]);
    }
    block
}

/// The values of whole groups in the interleaved layout (`bytes`: groups of rows of
/// `out.len() / rows` values) into `out`, row-major [rows, cols].
pub fn dequantize(bytes: &[u8], out: &mut [f32], rows: usize) {
    if rows == 0 {
        return;
    }
    let cols = out.len() / rows;
    let blocks = cols / BLOCK;
    let group_bytes = GROUP * blocks * BlockFormat::Q4_0.block_bytes();
    assert!(fits(rows) && cols % BLOCK == 0 && bytes.len() == rows / GROUP * group_bytes, "dequantize: whole interleaved groups");
    for (group, values) in bytes.chunks_exact(group_bytes).zip(out.chunks_exact_mut(GROUP * cols)) {
        for (k, group_block) in group.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
            for r in 0..GROUP {
                BlockFormat::Q4_0.dequantize(&row_block(group_block, r), &mut values[r * cols + k * BLOCK..][..BLOCK]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_permutes_the_bytes_and_every_row_block_reads_back() {
        let (rows, blocks) = (16, 3);
        let row_bytes = blocks * 18;
        let bytes: Vec<u8> = (0..rows * row_bytes).map(|i| (i * 7 + i / 251) as u8).collect();
        let mixed = interleave(&bytes, row_bytes);
        let (mut a, mut b) = (bytes.clone(), mixed.clone());
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "a permutation");
        for row in 0..rows {
            for k in 0..blocks {
                let group_block = &mixed[row / GROUP * GROUP * row_bytes + k * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
                assert_eq!(row_block(group_block, row % GROUP), bytes[row * row_bytes + k * 18..][..18], "row {row} block {k}");
            }
        }
        let (mut plain, mut from_groups) = (vec![0f32; rows * blocks * BLOCK], vec![0f32; rows * blocks * BLOCK]);
        BlockFormat::Q4_0.dequantize(&bytes, &mut plain);
        dequantize(&mixed, &mut from_groups, rows);
        assert_eq!(plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), from_groups.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
}
